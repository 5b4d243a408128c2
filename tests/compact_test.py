"""The ledger kept small (issue 22 item 15): compaction to the last N builds / M bytes
without losing a concurrent append, `shim build` starting without reading the history,
`shim report` reading only the end of the file."""

import multiprocessing
import os

from shim import ledger
from shim.exit_status import Finished
from shim.reports import compact, records

ARGS = ["-O2", "-g", "-Iinclude", "-Isrc", "-Wall", "-c"]


def step(build_id: str, t0: float, i: int) -> dict:
    return {"rec": "step", "id": "%x-%d" % (int(t0 * 1e6), i), "b": build_id, "t0": t0, "t1": t0 + 0.5,
            "tool": "cc", "kind": "compile", "mode": "spawn", "cwd": ".", "in": "src/f%d.c" % i,
            "out": ["obj/f%d.o" % i], "argv": "%016x" % i, "exit": 0, "rss": 50 << 20 | i, "args": ARGS}


def generate(ledger_dir, builds: int, steps: int, t0: float = 1.7e9) -> list:
    """*builds* builds of *steps* steps, 100 s apart, written with the ledger's encoder in
    one write per build (as fast as a test can); returns the build ids, oldest first."""
    os.makedirs(ledger_dir, exist_ok=True)
    ids = []
    with open(os.path.join(ledger_dir, ledger.FILENAME), "ab") as f:
        if not f.tell():
            f.write(ledger.HEADER.encode())
        for b in range(builds):
            start = t0 + 100 * b
            build_id = "%x-%d" % (int(start * 1e6), b)
            lines = [ledger.encode(step(build_id, start + i * 0.001, i)) for i in range(steps)]
            lines.append(ledger.encode({"rec": "build", "id": build_id, "b": build_id, "runner": "ninja",
                                        "t0": start - 0.1, "t1": start + steps * 0.001 + 1, "exit": 0,
                                        "sig": None, "argv": ["-C", "."], "budget": 1 << 30}))
            f.write(("\n".join(lines) + "\n").encode())
            ids.append(build_id)
    return ids


def build_ids(ledger_dir) -> list:
    return [r["id"] for r in records.read(ledger_dir) if r["rec"] == "build"]


def test_compaction_keeps_the_last_builds_intact(tmp_path):
    d = str(tmp_path / ".shim")
    ids = generate(d, 30, 2000)
    path = os.path.join(d, ledger.FILENAME)
    before = open(path, "rb").read()
    dropped = compact.compact(d, keep=20)
    after = open(path, "rb").read()
    assert dropped > 0 and len(after) == len(before) - dropped
    assert build_ids(d) == ids[-20:]
    assert after.startswith(ledger.HEADER.encode())
    assert before.endswith(after[len(ledger.HEADER):])     # the kept records, byte for byte
    assert after.count(b'{"rec": "step", ') == 20 * 2000
    assert compact.compact(d, keep=20) == 0                # within the bound: left alone


def test_compaction_holds_the_size_bound_at_a_build_boundary(tmp_path):
    d = str(tmp_path / ".shim")
    ids = generate(d, 10, 2000)
    per_build = os.path.getsize(os.path.join(d, ledger.FILENAME)) // 10
    compact.compact(d, keep=100, max_size=int(per_build * 3.5))
    assert os.path.getsize(os.path.join(d, ledger.FILENAME)) <= per_build * 3.5
    assert build_ids(d) == ids[-3:]
    assert [len(s) for _, s in records.load_builds(d)[0]] == [2000] * 3


def test_an_append_between_the_last_copy_and_the_rename_is_not_lost(tmp_path, monkeypatch):
    d = str(tmp_path / ".shim")
    generate(d, 5, 100)
    late = step("late", 2e9, 1)
    monkeypatch.setattr(compact, "_before_rename", lambda: ledger.append(d, late, {}))
    assert compact.compact(d, keep=2) > 0
    recs = records.read(d)
    assert [r for r in recs if r.get("b") == "late"] == [late]
    assert not os.path.exists(os.path.join(d, ledger.FILENAME + ".tmp"))


class _WriteAfterCompaction:
    """posix, except that the first write of a ledger record waits for a compaction: the step
    opened the old file before the rename and writes after the seal."""

    def __init__(self, ledger_dir):
        self.ledger_dir, self.done = ledger_dir, False

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if not self.done:
            self.done = True
            compact.compact(self.ledger_dir, keep=2)
        return os.write(fd, data)


def test_an_append_after_the_seal_is_written_again_to_the_new_file(tmp_path, monkeypatch):
    d = str(tmp_path / ".shim")
    ids = generate(d, 5, 100)
    late = step("late", 2e9, 1)
    monkeypatch.setattr(ledger, "osapi", _WriteAfterCompaction(d))
    assert ledger.append(d, late, {})
    assert [r for r in records.read(d) if r.get("b") == "late"] == [late]
    assert build_ids(d) == ids[-2:]


def _appender(d, n, tag):
    for i in range(n):
        rec = step(tag, 2e9 + i, i)
        if i % 5 == 0:
            rec["args"] = ARGS * 200            # some records span a page boundary
        ledger.append(d, rec, {})


def test_concurrent_appends_survive_repeated_compactions_exactly_once(tmp_path):
    d = str(tmp_path / ".shim")
    generate(d, 3, 100)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(d, 1500, "w%d" % k)) for k in range(3)]
    for p in procs:
        p.start()
    rounds = 0
    while any(p.is_alive() for p in procs) or rounds < 3:
        compact.compact(d, keep=100, force=True)
        rounds += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    recs = records.read(d)
    for k in range(3):
        mine = sorted(r["t0"] for r in recs if r.get("b") == "w%d" % k)
        assert mine == [2e9 + i for i in range(1500)], "w%d: %d of 1500 records" % (k, len(mine))
    assert rounds > 3


def test_shim_build_starts_without_reading_the_history_and_ends_within_the_bound(tmp_path, monkeypatch):
    from shim.driver import ninja as build
    d = tmp_path / ".shim"
    ids = generate(str(d), 12, 200)
    (d / "memory-v2").mkdir()                           # the steps' own estimates index
    (tmp_path / "build.ninja").write_text("")
    (tmp_path / "toolchain.toml").write_text("[ledger]\nkeep_builds = 4\n")
    (tmp_path / "run").mkdir(mode=0o700)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    reads = []
    real_read = records.read_counted
    monkeypatch.setattr(records, "read_counted", lambda *a: reads.append(a) or real_read(*a))
    seen = {}

    def ninja(path, argv, env, on_start=None, die_with_parent=False, **_):
        seen["reads"] = len(reads)
        ledger.append(str(d), step(env["SHIM_BUILD_ID"], ledger.now(), 7), env)
        return Finished(0, None, 0, 0.0, 0.0)

    assert build.run(str(tmp_path), "/no/ninja", ["-j", "2"], env, "2GiB", spawn=ninja) == 0
    assert seen["reads"] == 0                             # nothing of the ledger read before ninja
    assert len(reads) == 0                                # nor after: the summary reads from the mark
    kept = build_ids(str(d))
    assert kept == ids[-3:] + [env["SHIM_BUILD_ID"]]      # the last 4 builds, this one the newest
    assert [len(s) for _, s in records.load_builds(str(d))[0]] == [200, 200, 200, 1]


def test_the_report_of_the_last_build_reads_only_the_end_of_the_ledger(tmp_path):
    d = str(tmp_path / ".shim")
    ids = generate(d, 3, 100)
    with open(os.path.join(d, ledger.FILENAME), "r+b") as f:      # damage the first build's lines
        f.seek(len(ledger.HEADER) + 10)
        f.write(b"\x00garbage\n" * 1000)
    generate(d, 30, 300, t0=1.8e9)
    build, steps, skipped = records.load_counted(d)
    assert skipped == 0                                   # the damaged start was never read
    assert build["id"] == build_ids(d)[-1] and len(steps) == 300
    assert records.load_counted(d, which="all")[2] > 0    # ... which --all does read
    last_two, _ = records.load_builds(d, last=2)
    assert [g[0]["id"] for g in last_two] == [g[0]["id"] for g in records.load_builds(d)[0][-2:]]
    assert ids[0] not in [g[0]["id"] for g in last_two]


def test_the_last_build_without_ids_is_found_from_the_end(tmp_path):
    d = str(tmp_path / ".shim")
    os.makedirs(d)
    with open(os.path.join(d, ledger.FILENAME), "wb") as f:
        f.write(ledger.HEADER.encode())
        for session in range(3):                        # plain ninja: no build id, 1000 s apart
            for i in range(3000):
                s = step(None, 1.7e9 + 1000 * session + i * 0.001, i)
                del s["b"]
                f.write((ledger.encode(s) + "\n").encode())
    _, steps, _ = records.load_counted(d)
    assert len(steps) == 3000 and steps[0]["t0"] == 1.7e9 + 2000
