"""cargo through shim: `RUSTC_WRAPPER=shim cargo build` and `shim cargo build` (shim/cli/cargo.py, shim/driver/cargo.py).

The end-to-end tests build tests/fixtures/cargo, a workspace of a library on regex and serde and a
program on it and serde_json, with the real cargo and rustc, offline: its .cargo/config.toml takes
the crates from Debian's librust-*-dev packages (.ci/run installs them). One workspace per module:
the first build (spawn mode, --timings, JSON messages) is checked for records, learned peaks and
pipelining; the second (`shim cargo build` under a budget smaller than the two largest crates)
is admitted by what the first learned. The driver's decisions are unit-tested without cargo.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, REPO, one_error_line, run_shim, write_toml
from shim import admission, estimates, size, step
from shim.reports import records

CARGO = shutil.which("cargo")
REGISTRY = Path("/usr/share/cargo/registry")
CRATES = ("regex-1.*", "aho-corasick-0.*", "serde_json-1.*", "serde_derive-1.*")
MISSING = ("cargo is not installed (.ci/run installs it)" if not CARGO else
           "Debian's crates are missing from %s (.ci/run installs librust-regex+default-dev "
           "librust-serde-json-dev librust-serde-derive-dev)" % REGISTRY
           if not all(any(REGISTRY.glob(c)) for c in CRATES) else None)
needs_cargo = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
MIB = 1 << 20


def e2e(test):
    return pytest.mark.e2e(needs_cargo(test))


def cargo_env(tmp: Path) -> dict:
    """The environment of a build: no SHIM_*/CARGO_*/RUSTC_* of ours, a private HOME, runtime dir
    and CARGO_HOME; rustup's toolchains where they are."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SHIM_", "XDG_", "CARGO", "RUSTC", "RUSTFLAGS", "MAKEFLAGS"))}
    for name in ("home", "run", "cargo-home"):
        (tmp / name).mkdir(mode=0o700, exist_ok=True)
    env.update(HOME=str(tmp / "home"), XDG_RUNTIME_DIR=str(tmp / "run"), CARGO_HOME=str(tmp / "cargo-home"),
               RUSTUP_HOME=os.environ.get("RUSTUP_HOME") or str(Path.home() / ".rustup"),
               CARGO_TERM_COLOR="never", PATH="%s%s%s" % (BIN, os.pathsep, os.environ.get("PATH", "")))
    return env


def workspace_copy(tmp: Path) -> Path:
    ws = tmp / "ws"
    shutil.copytree(REPO / "tests" / "fixtures" / "cargo", ws)
    return ws


def cargo(args, cwd, env, timeout=600):
    return subprocess.run([CARGO] + args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def unit_data(html: str) -> list:
    """The units of cargo's --timings page: `const UNIT_DATA = [...]` in its script (cargo 1.95:
    start, duration, unblocked_rmeta_units; older cargos the same keys)."""
    found = re.search(r"\bconst\s+UNIT_DATA\s*=\s*", html)
    assert found, "no UNIT_DATA in cargo's timing report"
    return json.JSONDecoder().raw_decode(html, found.end())[0]


class Build:
    """A finished build: the workspace, cargo's result, its artifacts, shim's steps."""

    def __init__(self, ws: Path, env: dict, result):
        self.ws, self.env, self.result = ws, env, result
        assert result.returncode == 0, result.stderr[-4000:]
        self.ledger = ws / ".shim"
        self.steps = records.load(str(self.ledger), str(ws), "all")[1]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The workspace built once with RUSTC_WRAPPER=shim, every rustc spawned (measured) under a
    roomy budget, -j4 on 2 cores so that crates can start on their dependencies' metadata."""
    tmp = tmp_path_factory.mktemp("cargo")
    ws = workspace_copy(tmp)
    env = dict(cargo_env(tmp), RUSTC_WRAPPER="shim", SHIM_MODE="spawn", SHIM_MEMORY_BUDGET="16GiB")
    build = Build(ws, env, cargo(["build", "-j4", "--timings", "--message-format=json"], ws, env))
    messages = [json.loads(line) for line in build.result.stdout.splitlines() if line.startswith("{")]
    build.artifacts = [m for m in messages if m["reason"] == "compiler-artifact"]
    build.units = unit_data((ws / "target" / "cargo-timings" / "cargo-timing.html").read_text())
    return build


@e2e
def test_every_rustc_of_the_build_has_a_record_with_its_crate_kind_and_artifacts(first):
    assert len(first.steps) == len(first.artifacts) == 23        # 15 crates, 8 build scripts; no probes
    unmatched = list(first.steps)
    for artifact in first.artifacts:
        target = artifact["target"]
        crate = target["name"].replace("-", "_")             # build-script-build -> build_script_build
        kind = "link" if set(target["kind"]) & {"bin", "proc-macro", "custom-build"} else "compile"
        # cargo names the files it hard-links into place (target/debug/app); rustc wrote them
        step = next((s for s in unmatched if s["crate"] == crate and all(
            any(os.path.samefile(name, first.ws / out) for out in s["out"] if (first.ws / out).exists())
            for name in artifact["filenames"])), None)
        assert step is not None, artifact
        unmatched.remove(step)
        assert (step["tool"], step["kind"], step["exit"]) == ("rustc", kind, 0), step
        assert step["crate_type"] == ",".join(target["crate_types"])
        package = artifact["package_id"].rpartition("#")[2]
        assert package.replace("@", " ").split()[-1] in step["unit"].split(), (package, step["unit"])
        if crate == "build_script_build":
            assert step["unit"].endswith(" build-script debug")
        assert all(not out.startswith("/") and out.startswith("target/debug/") for out in step["out"])
    assert not unmatched


@e2e
def test_the_program_runs(first):
    done = subprocess.run([str(first.ws / "target" / "debug" / "app"), "héllo wörld 42 foo"],
                          stdout=subprocess.PIPE, text=True, check=True)
    assert json.loads(done.stdout) == [{"text": "héllo", "start": 0}, {"text": "wörld", "start": 7},
                                       {"text": "foo", "start": 17}]


@e2e
def test_the_jobserver_reaches_rustc_through_a_spawning_shim(first):
    assert "jobserver" not in first.result.stderr + first.result.stdout     # rendered, or JSON messages
    assert all(s["mode"] == "spawn" for s in first.steps)


@e2e
def test_every_crates_peak_is_learned_under_a_key_that_survives_a_rebuild(first):
    for s in first.steps:
        # anonymous memory (what the cgroup is charged): rustc's own libraries are shared page
        # cache, so a small crate measures ~15 MiB, regex-syntax ~165 MiB
        assert s["rss"] and 5 * MIB < s["rss"] < 2048 * MIB, s
        entry = estimates.lookup(str(first.ledger), estimates.key_of(s))
        assert entry and entry[0][-1] == s["rss"], s["unit"]
    assert len({s["unit"] for s in first.steps}) == len(first.steps)


@e2e
def test_a_crate_starts_on_its_dependencys_metadata_before_that_rustc_exits(first):
    units = {u["i"]: u for u in first.units}
    early = [(u["name"], units[j]["name"], u["start"] + u["duration"] - units[j]["start"])
             for u in first.units for j in (u.get("unblocked_rmeta_units") or [])
             if units[j]["start"] < u["start"] + u["duration"] - 0.05]
    assert early, "no crate started before the rustc it depends on had exited: pipelining is broken"
    libs = [s for s in first.steps if s["crate_type"] == "lib"]
    assert libs and all(s["t0"] < s["meta"] < s["t1"] for s in libs)    # shim relayed the notice midway


@e2e
def test_the_trace_marks_each_crates_metadata_point(first, tmp_path):
    trace = tmp_path / "trace.json"
    result = run_shim(["report", "-C", first.ws, "--all", "--trace", trace], env=first.env)
    assert result.returncode == 0, result.stderr
    marks = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "i"]
    assert sorted(e["args"]["crate"] for e in marks) == sorted(s["crate"] for s in first.steps if s["meta"])
    report = run_shim(["report", "-C", first.ws, "--all"], env=first.env).stdout
    assert "regex-syntax 0.6.27 lib debug" in report and "serde 1.0.152 build-script debug" in report


@pytest.fixture(scope="module")
def warm(first):
    """The same workspace, clean, built again with `shim cargo build` under a budget smaller than
    its two largest crates together: the second build knows every peak from the first."""
    peaks = sorted((s["rss"] for s in first.steps), reverse=True)
    budget = peaks[0] + peaks[1] // 2
    shutil.rmtree(first.ws / "target")
    env = {k: v for k, v in first.env.items() if not k.startswith(("SHIM_", "RUSTC"))}
    result = run_shim(["cargo", "--budget", str(budget), "build"], cwd=first.ws, env=env, timeout=600)
    build = Build(first.ws, env, result)
    build.budget, build.peaks = budget, peaks
    build.record = [r for r in records.read(str(build.ledger)) if r["rec"] == "build"][-1]
    build.steps = [s for s in build.steps if s["build"] == build.record["id"]]
    return build


@e2e
def test_under_a_budget_smaller_than_two_of_its_largest_crates_the_warm_build_stays_within_it(warm):
    assert warm.budget < warm.peaks[0] + warm.peaks[1]
    assert len(warm.steps) == 23 and all(s["src"] == "history" for s in warm.steps)
    written = [json.loads(line) for line in (warm.ledger / "ledger-v1.jsonl").read_text().splitlines()[1:]]
    assert len([r for r in written if r.get("b") == warm.record["id"]
                and r["rec"] not in ("build", "usage", "pause")]) == 23  # no probes (usage, pause: the pause watcher's)
    assert 0 < warm.record["peak"] <= warm.budget, (size.format(warm.record["peak"]), size.format(warm.budget))
    assert any(s["wait"] >= 0.05 for s in warm.steps)          # admission held some crates back
    assert "OVER the budget" not in warm.result.stdout


@e2e
def test_shim_cargo_build_and_plain_rustc_wrapper_share_one_ledger_and_known_crates_exec(warm):
    assert (warm.record["runner"], warm.record["argv"]) == ("cargo", ["build"])
    # auto mode: known crates exec'd (timed by the files they wrote), except those expected to
    # need 3/4 of the budget or more, which run spawned (an OOM kill of them must be retried);
    # links spawned, as the presets spawn every link (bins, proc-macros, build scripts)
    pool = warm.record["steps_budget"] // admission.DEFAULT_UNIT * admission.DEFAULT_UNIT
    compiles = [s for s in warm.steps if s["kind"] == "compile"]
    assert all((s["mode"], s["timing"]) == (("spawn", "measured") if s["est"] >= step.NEAR * pool
                                            else ("exec", "outputs")) and s["dur"] > 0 for s in compiles)
    assert sum(1 for s in compiles if s["mode"] == "exec") > len(compiles) // 2
    assert all((s["mode"], s["timing"]) == ("spawn", "measured") for s in warm.steps if s["kind"] == "link")
    assert "jobserver" not in warm.result.stderr
    summary = [line for line in warm.result.stdout.splitlines() if line.startswith("shim: ")]
    assert summary[0].startswith("shim: 23 steps in ") and "regex-syntax 0.6.27 lib debug" in summary[-1]
    assert subprocess.run([str(warm.ws / "target" / "debug" / "app"), "x"], stdout=subprocess.PIPE,
                          text=True).stdout.strip() == '[{"text":"x","start":0}]'


@e2e
def test_rustc_that_runs_out_of_memory_is_retried_alone_with_the_low_memory_rewrites(tmp_path):
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) is not installed")
    ws = workspace_copy(tmp_path)
    # The first attempt runs with 550 MB of address space: regex-syntax needs ~280 MiB resident but
    # more address space, and rustc's allocator aborts ("memory allocation of N bytes failed").
    limit = tmp_path / "limit"
    limit.write_text('#!/bin/sh\n[ -n "$UNLIMITED" ] && exec "$@"\nexec prlimit --as=550000000 "$@"\n')
    limit.chmod(0o755)
    write_toml(ws / "toolchain.toml", """
        [tool.rustc]
        launcher = ["%s"]
        low_memory.env.set = { UNLIMITED = "1" }
        """ % limit)
    env = dict(cargo_env(tmp_path), RUSTC_WRAPPER="shim", SHIM_MEMORY_BUDGET="2GiB")
    result = cargo(["build", "-p", "regex-syntax"], ws, env)
    assert result.returncode == 0, result.stderr[-3000:]
    # rustc's own words of the retried attempt are held back; shim's line says what happened
    assert "memory allocation of" not in result.stderr
    assert "ran out of memory (signal 6): running it again alone, retry 1 of 1" in result.stderr
    first, retry = [s for s in records.load(str(ws / ".shim"), str(ws), "all")[1]]
    assert (first["crate"], first["sig"], first["oom"]) == ("regex_syntax", 6, True)
    assert (retry["exit"], retry["retry"], retry["low_memory"], retry["res"]) == (0, 1, True, 2 << 30)
    assert "link-arg=-Wl,--no-keep-memory" in retry["args"]


@e2e
def test_cargo_check_through_a_workspace_wrapper_records_metadata_only_compiles(tmp_path):
    ws = workspace_copy(tmp_path)
    wrapper = tmp_path / "lint-driver"                 # what clippy-driver is to `cargo clippy`
    wrapper.write_text('#!/bin/sh\nexec "$@"\n')
    wrapper.chmod(0o755)
    env = dict(cargo_env(tmp_path), RUSTC_WRAPPER="shim", RUSTC_WORKSPACE_WRAPPER=str(wrapper))
    result = cargo(["check", "-j2"], ws, env)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = records.load(str(ws / ".shim"), str(ws), "all")[1]
    members = {s["crate"]: s for s in steps if s["prog"] == "lint-driver"}
    assert sorted(members) == ["app", "textkit"]         # cargo runs `shim lint-driver /path/rustc ...` for them
    assert all(s["tool"] == "rustc" and s["kind"] == "compile" and s["out"][0].endswith(".rmeta")
               for s in members.values())
    assert members["app"]["unit"] == "app 0.1.0 bin check debug"
    scripts = [s for s in steps if s["crate"] == "build_script_build"]
    assert scripts and all(s["kind"] == "link" for s in scripts)         # still built and run in a check
    assert all(s["kind"] == "compile" for s in steps if s["crate"] not in ("build_script_build", "serde_derive"))


@pytest.mark.e2e
def test_shim_cargo_says_in_one_line_when_the_directory_or_cargo_is_missing(env, tmp_path):
    one_error_line(run_shim(["cargo", "-C", tmp_path / "nowhere", "build"], env=env), 2, "-C ", "nowhere")
    env["PATH"] = str(BIN)                              # no cargo here
    one_error_line(run_shim(["cargo", "build"], cwd=tmp_path, env=env), 127, "cargo not found on PATH")


# --- the driver, without cargo: a stand-in process runner -----------------------------------------


def stand_in(seen: dict, code: int = 0):
    from shim.exit_status import Finished

    def spawn(path, argv, env, on_start=None, die_with_parent=False, **_):
        seen.update(path=path, argv=argv, env=dict(env), dies_with_us=die_with_parent)
        return Finished(code, None, 0, 0.0, 0.0)
    return spawn


def driver_env(tmp_path: Path) -> dict:
    (tmp_path / "run").mkdir(mode=0o700)
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}


def test_shim_cargo_hands_cargo_the_fast_launcher_as_rustc_wrapper_two_jobs_per_core_and_a_budget(tmp_path):
    from shim.driver import build, cargo as driver
    (tmp_path / "Cargo.toml").write_text("[workspace]\n")
    seen = {}
    env = dict(driver_env(tmp_path), RUSTC_WRAPPER="sccache")
    status = driver.run("/no/cargo", ["build", "--release"], env, "2GiB", spawn=stand_in(seen, 3),
                        where=str(tmp_path / "target"))
    assert status == 3 and seen["dies_with_us"] and seen["argv"] == ["/no/cargo", "build", "--release"]
    launcher = tmp_path / ".shim" / "bin" / "shim"                  # in the workspace: the build dir
    assert seen["env"]["RUSTC_WRAPPER"] == str(launcher) and os.access(launcher, os.X_OK)
    cores = build.cores()
    assert (seen["env"]["CARGO_BUILD_JOBS"], seen["env"]["SHIM_CPU_SLOTS"]) == (str(2 * cores), str(cores))
    steps_budget = int(seen["env"]["SHIM_MEMORY_BUDGET"])
    assert steps_budget == build.for_steps(2 << 30, 2 * cores, driver.CARGO_FOOTPRINT) < 2 << 30
    record = [r for r in records.read(str(tmp_path / ".shim")) if r["rec"] == "build"][-1]
    assert (record["runner"], record["argv"], record["exit"], record["jobs"]) == (
        "cargo", ["build", "--release"], 3, 2 * cores)


def test_on_a_small_budget_shim_cargo_gives_cargo_one_job_per_core_and_ninja_one_token(tmp_path, monkeypatch):
    # 384 MiB less the 1/16 reserve, cargo's and the shims' share: 280 MiB for the steps, two
    # crates at rustc's 128 MiB prior. More jobs than cores could only wait for memory there,
    # and cargo's own order (its critical path first) would be lost to the order of the waits.
    from shim.driver import build, cargo as driver, ninja
    from shim.exit_status import Finished
    monkeypatch.setattr(build, "cores", lambda: 2)
    (tmp_path / "Cargo.toml").write_text("[workspace]\n")
    seen = {}
    driver.run("/no/cargo", ["build"], driver_env(tmp_path), "352MiB", spawn=stand_in(seen, 0),
               where=str(tmp_path / "target"))
    assert (seen["env"]["CARGO_BUILD_JOBS"], seen["env"]["SHIM_CPU_SLOTS"]) == ("2", "2")
    seen.clear()
    (tmp_path / "big").mkdir()
    driver.run("/no/cargo", ["build"], driver_env(tmp_path / "big"), "2GiB", spawn=stand_in(seen, 0),
               where=str(tmp_path / "target"))
    assert seen["env"]["CARGO_BUILD_JOBS"] == "4"
    # shim build in 512 MiB: 440 MiB for the steps, two compiles at the gcc preset's 192 MiB.
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "build.ninja").write_text("")
    (tmp_path / "n" / "toolchain.toml").write_text('preset = "gcc"\n')
    ninja.run(str(tmp_path / "n"), "/no/ninja", [], driver_env(tmp_path / "n"), "480MiB",
              spawn=lambda path, argv, env, **_: seen.update(ninja=dict(env)) or Finished(0, None, 0, 0.0, 0.0))
    assert "-j2 --jobserver-auth=fifo:" in seen["ninja"]["MAKEFLAGS"]


@pytest.mark.parametrize("args, given", [
    (["build", "-j", "3"], {}), (["build", "-j3"], {}), (["test", "--jobs=3"], {}),
    (["build"], {"CARGO_BUILD_JOBS": "3"}),
])
def test_jobs_the_user_chose_are_left_alone(tmp_path, args, given):
    from shim.driver import cargo as driver
    seen = {}
    driver.run("/no/cargo", args, dict(driver_env(tmp_path), **given), "off", spawn=stand_in(seen),
               where=str(tmp_path / "target"))
    assert seen["env"].get("CARGO_BUILD_JOBS") == given.get("CARGO_BUILD_JOBS")
    assert "SHIM_CPU_SLOTS" not in seen["env"] and seen["env"]["SHIM_MEMORY_BUDGET"] == "off"


def test_the_summary_names_cargo_as_the_tool_whose_tree_was_sampled(tmp_path, capsys):
    from shim.driver import cargo as driver
    (tmp_path / "Cargo.toml").write_text("[workspace]\n")
    driver.run("/no/cargo", ["build"], driver_env(tmp_path), "off", spawn=stand_in({}),
               where=str(tmp_path / "target"))
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("shim: 0 steps in ") and "(cargo and all under it)" in first


def test_jobs_after_a_double_dash_belong_to_the_program_not_to_cargo():
    from shim.driver import cargo as driver
    assert driver.given_jobs(["run", "--", "-j", "8"], {}) is None


def test_a_target_dir_outside_the_workspace_is_its_own_build_dir(tmp_path):
    from shim.driver import cargo as driver
    seen = {}
    driver.run("/no/cargo", ["build"], driver_env(tmp_path), "off", spawn=stand_in(seen),
               where=str(tmp_path / "elsewhere" / "target"))
    assert seen["env"]["RUSTC_WRAPPER"] == str(tmp_path / "elsewhere" / "target" / ".shim" / "bin" / "shim")
