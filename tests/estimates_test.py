"""The memory estimates index (shim/estimates.py): learned peaks a CI cache carries from
build to build. Whatever a partial restore leaves there, a step runs as it would have."""

import marshal

import pytest

from conftest import run_shim, write_tool
from shim import digest, estimates
from shim.reports import records


@pytest.fixture
def measured(tmp_path, env):
    """A build dir where one spawned step under a budget has written its peak."""
    gcc = write_tool(tmp_path / "tools", "gcc", ': > "$4"\nexit "${EXIT:-0}"\n')   # gcc -c a.c -o OUT
    (tmp_path / "build.ninja").touch()
    env.update(SHIM_MODE="spawn", SHIM_MEMORY_BUDGET="1GiB")
    result = run_shim([gcc, "-c", "a.c", "-o", "a.o"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    shards = sorted((tmp_path / ".shim" / estimates.DIRNAME).glob("*.marshal"))
    assert shards
    return tmp_path, gcc, shards


@pytest.mark.parametrize("content", [
    digest.pack(None), digest.pack(7), digest.pack(("a", "b")), digest.pack([1, 2]),
    digest.pack({"cc\0a.o": None}), digest.pack({"cc\0a.o": ([], None, 0)}),
    digest.pack({"cc\0a.o": (["x"], "f", 1.0)}), digest.pack({"cc\0a.o": ([5], 7, 1.0)}),
    b"", b"\xff" * 40, digest.pack({"cc\0a.o": ([1 << 20], "f", 1.0)})[:-3],
    marshal.dumps({"cc\0a.o": ([1 << 20], "f", 1.0)}), b"[null]\n",
], ids=["None", "int", "tuple", "list", "entry-None", "no-peaks", "str-peak", "int-argv", "empty", "garbage",
        "truncated", "unsealed", "bomb"])
def test_a_damaged_estimates_file_is_ignored_with_a_warning_and_rewritten(measured, env, content):
    build, gcc, shards = measured
    for shard in shards:
        shard.write_bytes(content)
    env["EXIT"] = "3"
    result = run_shim([gcc, "-c", "a.c", "-o", "a.o"], cwd=build, env=env)
    assert result.returncode == 3                                # the tool's status, not shim's 70
    assert "internal error" not in result.stderr
    warnings = result.stderr.splitlines()
    if content == digest.pack({"cc\0a.o": None}):
        assert warnings == []                                    # no entry is not damage
    else:
        assert len(warnings) == 1 and "ignoring the damaged memory estimates file" in warnings[0], warnings
    env["EXIT"] = "0"
    assert run_shim([gcc, "-c", "a.c", "-o", "a.o"], cwd=build, env=env).returncode == 0
    key = estimates.key_of([r for r in records.read(str(build / ".shim")) if r["rec"] in ("start", "step")][-1])
    entry = estimates.lookup(str(build / ".shim"), key)
    assert entry is not None and len(entry[0]) >= 1              # learned again after the damage


def test_the_estimates_index_leaves_no_temporary_file_on_a_full_disk(tmp_path, env, full_disk):
    gcc = write_tool(tmp_path / "tools", "gcc", "exit 0\n")
    ledger = full_disk / "ledger"
    ledger.mkdir()
    (ledger / estimates.DIRNAME).mkdir()
    env.update(SHIM_MODE="spawn", SHIM_MEMORY_BUDGET="1GiB", SHIM_LEDGER=str(ledger))
    for i in range(20):
        assert run_shim([gcc, "-c", "a.c", "-o", "a%d.o" % i], cwd=tmp_path, env=env).returncode == 0
    assert [p.name for p in full_disk.rglob("*.tmp")] == []


def _spawned(tool, out, rss, kind="compile", need=None):
    rec = {"tool": tool, "out": [out], "kind": kind, "rss": rss, "argv": "f", "t0": 1.0}
    if need:
        rec["need"] = need
    return rec


def test_a_cold_step_is_admitted_at_what_its_siblings_measured_earlier_in_this_build(tmp_path):
    ledger_dir = str(tmp_path)
    mib = 1 << 20
    for i, peak in enumerate((40, 60, 50)):
        assert estimates.siblings(estimates.measured(ledger_dir, "cc", "compile", "build-1")) is None     # fewer than three
        estimates.observe(ledger_dir, _spawned("cc", "s%d.o" % i, peak * mib), "build-1")
    peers = estimates.siblings(estimates.measured(ledger_dir, "cc", "compile", "build-1"))
    assert sorted(peers) == [40 * mib, 50 * mib, 60 * mib]
    # Their median only ever raises a cold step above its prior, never lowers it below.
    assert estimates.estimate(None, "compile", {"steps": {}}, None, peers) == (estimates.PRIORS["compile"], "default")
    small = {"steps": {"compile": {"memory": 32 * mib}}}
    assert estimates.estimate(None, "compile", small, None, peers) == (50 * mib, "build")
    # One big sibling among small ones is an outlier, not what the next step will need.
    mixed = [20 * mib, 30 * mib, 500 * mib]
    assert estimates.estimate(None, "compile", small, None, mixed) == (32 * mib, "prior")
    # Another build, another tool or kind, learns nothing from them; its own history still wins.
    assert estimates.measured(ledger_dir, "cc", "compile", "build-2") is None
    assert estimates.measured(ledger_dir, "cc", "link", "build-1") is None
    assert estimates.measured(ledger_dir, "cxx", "compile", "build-1") is None
    own = estimates.lookup(ledger_dir, estimates.key("cc", "s0.o"))
    assert estimates.estimate(own, "compile", small, None, peers) == (40 * mib, "history")
    # A new build starts its class over instead of mixing in the old one's peaks.
    estimates.observe(ledger_dir, _spawned("cc", "t.o", 300 * mib), "build-2")
    assert estimates.measured(ledger_dir, "cc", "compile", "build-2") == [300 * mib]


def test_an_attempt_the_oom_killer_cut_short_is_learned_as_its_need_and_teaches_no_sibling(tmp_path):
    ledger_dir = str(tmp_path)
    estimates.observe(ledger_dir, _spawned("cc", "big.o", 200 << 20, need=900 << 20), "build-1")
    assert estimates.lookup(ledger_dir, estimates.key("cc", "big.o"))[0] == [900 << 20]
    assert estimates.lookup(ledger_dir, estimates.class_key("cc", "compile")) is None


def _observe_many(ledger_dir, worker, n):
    from shim import estimates
    for i in range(n):
        estimates.observe(ledger_dir, {"tool": "cc", "out": ["w%d-%d.o" % (worker, i)], "rss": 1 << 20,
                                       "argv": "%016x" % i, "t0": 1.0})


def test_steps_finishing_together_lose_no_learned_peak(tmp_path):
    """The index is the only memory of what steps needed (the ledger keeps recent builds): a
    read-update-rename race between steps of one shard must not drop an update."""
    import multiprocessing
    from shim import estimates
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_observe_many, args=(str(tmp_path), w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    missing = [(w, i) for w in range(4) for i in range(150)
               if estimates.lookup(str(tmp_path), estimates.key("cc", "w%d-%d.o" % (w, i))) is None]
    assert not missing, "%d of 600 updates lost" % len(missing)


def test_a_guess_is_borne_out_once_the_typical_step_measured_in_this_build_came_in_under_it():
    mib = 1 << 20
    assert not estimates.borne_out(None, 192 * mib)                          # nothing measured yet
    assert estimates.borne_out([126 * mib], 192 * mib)                       # one compile, under the prior
    assert estimates.borne_out([15 * mib, 40 * mib, 165 * mib], 128 * mib)   # one big crate among small ones
    assert not estimates.borne_out([330 * mib], 192 * mib)                   # bigger than the prior
    assert not estimates.borne_out([100 * mib, 330 * mib, 330 * mib], 192 * mib)
