"""Builds inside a real memory cgroup: the kernel's OOM killer, not a sampler, is the judge.

Each build runs in a fresh child of this process's memory cgroup (tests/memcg.py) limited to
1 GiB, with fake compiles (tests/fixtures/alloc.c, built with gcc) that touch a known number
of MiB and hold them. Skipped, with the reason, where no memory cgroup can be made (not root,
memory controller not delegated).
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import memcg
from memcg import ledger_steps as steps_of, ninja_under, oom_score_adj, pid_lines, summary_line as summary
from conftest import SHIM
from shim.driver.build import DRIVER_OOM_SCORE

NINJA = Path(sys.executable).parent / "ninja"
MIB = 1 << 20
LIMIT = 1 << 30
# Two of these at once already need 1040 MiB > 1 GiB: so shim build on 2 cores (2 CPU slots)
# would be OOM-killed too without memory admission, as plain ninja -j4 is.
STEPS = [("s%d" % i, 520, 800) for i in range(4)]
PRIOR = "520MiB"

REASON = memcg.available() or (None if shutil.which("gcc") else "gcc is not installed (builds the fake tool)")
pytestmark = pytest.mark.skipif(REASON is not None, reason="no real memory cgroup: %s" % REASON)


@pytest.fixture(scope="module")
def alloc(tmp_path_factory):
    return memcg.compile_alloc(str(tmp_path_factory.mktemp("alloc")))


@pytest.fixture
def cgroup():
    with memcg.MemCg(LIMIT) as cg:
        yield cg


@pytest.fixture
def env(env, tmp_path):
    env["SHIM_CACHE_DIR"] = str(tmp_path / "cache")
    return env


def run(cg, argv, cwd, env):
    return subprocess.run(cg.wrap(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=60)


def test_steps_overlapping_past_the_limit_are_oom_killed_under_ninja_j4_and_all_finish_under_shim_build(
        tmp_path, env, alloc):
    plain = tmp_path / "plain"
    memcg.write_fake_project(str(plain), alloc, STEPS, wrapped=False)
    with memcg.MemCg(LIMIT) as cg:
        result = run(cg, [NINJA, "-j4"], plain, env)
        plain_kills = cg.oom_kills()
    assert result.returncode != 0, result.stdout        # the build broke...
    assert plain_kills > 0, result.stdout               # ...because the kernel killed steps

    wrapped = tmp_path / "wrapped"
    outs = memcg.write_fake_project(str(wrapped), alloc, STEPS, wrapped=True, prior=PRIOR)
    with memcg.MemCg(LIMIT) as cg:
        doctor = run(cg, [SHIM, "doctor"], wrapped, env)
        result = run(cg, [SHIM, "build"], wrapped, env)        # no --budget, no -j
        kills = cg.oom_kills()
    assert result.returncode == 0, result.stdout
    assert kills == 0, result.stdout
    assert all((wrapped / o).exists() for o in outs)
    # The budget is the cgroup's 1 GiB minus a reserve of 1/16 (this machine has far more RAM).
    assert "budget 960.0MiB" in summary(result.stdout), result.stdout
    limit_lines = [line for line in doctor.stdout.splitlines() if cg.name in line]
    assert limit_lines and "1.0GiB" in limit_lines[0], doctor.stdout
    assert "960.0MiB = 1.0GiB (cgroup " in doctor.stdout, doctor.stdout
    steps = steps_of(wrapped)
    assert len(steps) == 4 and all(s["exit"] == 0 and not s.get("retry") for s in steps)   # none retried


def test_plain_ninja_whose_rules_call_shim_under_shim_memory_budget_finishes_without_oom_kills(
        tmp_path, env, alloc, cgroup):
    outs = memcg.write_fake_project(str(tmp_path), alloc, STEPS, wrapped=True, prior=PRIOR)
    env["SHIM_MEMORY_BUDGET"] = "704MiB"                 # below the cgroup's 1 GiB: room for ninja and the shims
    result = run(cgroup, [NINJA, "-j4"], tmp_path, env)
    assert result.returncode == 0, result.stdout
    assert cgroup.oom_kills() == 0, result.stdout
    assert all((tmp_path / o).exists() for o in outs)
    steps = steps_of(tmp_path)
    assert len(steps) == 4 and all(s["exit"] == 0 and not s.get("retry") for s in steps)
    assert sum(1 for s in steps if s["wait"] > 0.5) >= 3     # one at a time: the others waited for memory


def test_a_step_overshooting_its_estimate_is_the_kernels_victim_and_is_retried_alone(tmp_path, env, alloc, cgroup):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores: shim build must run the two steps at once")
    # Both are expected to need 300 MiB, so shim build admits them together. `big` really
    # touches 750 MiB (after 0.3 s, when `long` holds its 300): 1050 MiB > the 1 GiB limit.
    # Every step's tool runs with oom_score_adj >= 500, ninja and shim build keep theirs, so
    # the kernel kills big's tool; shim retries it alone (after long), where 750 MiB fit.
    memcg.write_fake_project(str(tmp_path), alloc, [("long", 300, 2500), ("big", 750, 500, 300)],
                             wrapped=True, prior="300MiB")
    env["SHIM_PAUSE_AT"] = "off"      # else big is paused before the kill (tests/pauses_test.py): the retry is tested
    own_adj = oom_score_adj(os.getpid())
    build = subprocess.Popen(cgroup.wrap([SHIM, "build"]), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while not pid_lines(tmp_path / "long.o.pid") and time.monotonic() < deadline:
            time.sleep(0.02)
        (long_pid, _), = pid_lines(tmp_path / "long.o.pid")
        ninja = ninja_under(build.pid)
        assert ninja is not None
        adj = {"long's tool": oom_score_adj(long_pid), "ninja": oom_score_adj(ninja),
               "shim build": oom_score_adj(build.pid)}          # read while long holds its memory
        output, _ = build.communicate(timeout=60)
    finally:
        if build.poll() is None:
            build.kill()
            build.communicate()
    assert adj["long's tool"] >= 500, adj
    # shim build keeps the OOM killer off itself and ninja (-900 where it may lower its score).
    assert adj["ninja"] == adj["shim build"] in (own_adj, DRIVER_OOM_SCORE), adj

    assert build.returncode == 0, output                       # shim build and ninja survived
    assert cgroup.oom_kills() >= 1, output
    assert (tmp_path / "big.o").exists() and (tmp_path / "long.o").exists()
    (first_pid, first_adj), (retry_pid, retry_adj) = pid_lines(tmp_path / "big.o.pid")
    assert 500 <= first_adj <= retry_adj <= 1000                # later steps: a little higher
    victims = cgroup.victims()
    if victims is not None:                                     # the kernel log names the victim
        assert victims and all(v == (first_pid, "alloc") for v in victims), (victims, first_pid)

    memcg.assert_retried_alone(tmp_path, output)


# Protected by default (issue 17): shim dropped into a build file, run by the build tool as
# usual, with no `shim build`, no SHIM_MEMORY_BUDGET and no toolchain.toml. The fake compiler
# is named gcc, as the compiler a user puts shim in front of would be, so shim knows it
# (gcc's preset: a compile is expected at 192 MiB until measured). The steps are as big as
# that prior says a compile is: with no configuration shim knows no better, and eight of
# them at once (1.4 GiB) do not fit the 1 GiB cgroup.
EIGHT = [("p%d" % i, 180, 800) for i in range(8)]


def fake_gcc(directory: Path, alloc: str) -> Path:
    """*alloc* installed as DIRECTORY/gcc."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(alloc, directory / "gcc")
    return directory / "gcc"


def unconfigured_project(directory: Path, compiler: str, wrapped: bool) -> list:
    """EIGHT as a hand-written build.ninja: `shim COMPILER ...` (*wrapped*) or `COMPILER ...`."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["rule cc", "  command = %s%s $flags -c $in -o $out" % ("shim " if wrapped else "", compiler), ""]
    for name, mb, ms in EIGHT:
        (directory / (name + ".c")).write_text("")
        lines += ["build %s.o: cc %s.c" % (name, name), "  flags = -DMB=%d -DMS=%d" % (mb, ms)]
    (directory / "build.ninja").write_text("\n".join(lines) + "\n")
    return [name + ".o" for name, _, _ in EIGHT]


def test_plain_ninja_j8_through_shim_with_no_configuration_is_not_oom_killed_where_bare_ninja_is(
        tmp_path, env, alloc):
    gcc = fake_gcc(tmp_path / "bin", alloc)
    bare = tmp_path / "bare"
    bare_outs = unconfigured_project(bare, str(gcc), wrapped=False)
    with memcg.MemCg(LIMIT) as cg:
        result = run(cg, [NINJA, "-j8"], bare, env)
        bare_kills = cg.oom_kills()
    assert bare_kills > 0 and result.returncode != 0, result.stdout
    assert not all((bare / o).exists() for o in bare_outs)

    wrapped = tmp_path / "wrapped"
    outs = unconfigured_project(wrapped, str(gcc), wrapped=True)
    assert "SHIM_MEMORY_BUDGET" not in env and not (wrapped / "toolchain.toml").exists()
    with memcg.MemCg(LIMIT) as cg:
        result = run(cg, [NINJA, "-j8"], wrapped, env)
        kills = cg.oom_kills()
    assert result.returncode == 0, result.stdout
    assert kills == 0, result.stdout
    assert all((wrapped / o).exists() for o in outs)
    steps = steps_of(wrapped)
    assert len(steps) == 8 and all(s["exit"] == 0 for s in steps)
    # Admitted into the auto budget of the cgroup: 1 GiB minus the reserve, in whole slots.
    assert {s["src"] for s in steps} <= {"prior", "history"} and all(s["res"] for s in steps)
    assert sum(1 for s in steps if s["wait"] > 0.3) >= 3          # they could not all run at once


CMAKE = shutil.which("cmake")


@pytest.mark.skipif(CMAKE is None, reason="cmake is not installed")
def test_cmake_compiler_launcher_shim_under_plain_cmake_build_is_not_oom_killed_where_bare_is(
        tmp_path, env, alloc):
    # A C compiler CMake accepts (the real gcc) whose compiles of the project's sources first
    # hold MB MiB (alloc), as heavy C++ translation units would.
    tools = tmp_path / "bin"
    tools.mkdir()
    gcc = tools / "gcc"
    gcc.write_text('#!/bin/sh\ncase " $* " in *" -DMB="*) "%s" "$@" || exit $?;; esac\nexec %s "$@"\n'
                   % (alloc, shutil.which("gcc")))
    gcc.chmod(0o755)
    source = tmp_path / "src"
    source.mkdir()
    names = [name for name, _, _ in EIGHT]
    for name in names:
        (source / (name + ".c")).write_text("int %s(void) { return 1; }\n" % name)
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(heavy C)\nadd_library(heavy STATIC %s)\n"
        % " ".join(n + ".c" for n in names)
        + "".join('set_source_files_properties(%s.c PROPERTIES COMPILE_DEFINITIONS "MB=%d;MS=%d")\n' % (n, mb, ms)
                  for n, mb, ms in EIGHT))

    def configure_and_build(build, launcher):
        flags = ["-DCMAKE_C_COMPILER_LAUNCHER=%s" % SHIM] if launcher else []
        done = subprocess.run([CMAKE, "-G", "Ninja", "-S", str(source), "-B", str(build),
                               "-DCMAKE_C_COMPILER=%s" % gcc] + flags, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=120)
        assert done.returncode == 0, done.stdout
        with memcg.MemCg(LIMIT) as cg:
            result = run(cg, [CMAKE, "--build", str(build), "-j", "8"], build, env)
            return result, cg.oom_kills()

    result, kills = configure_and_build(tmp_path / "bare", launcher=False)
    assert kills > 0 and result.returncode != 0, result.stdout

    build = tmp_path / "wrapped"
    result, kills = configure_and_build(build, launcher=True)
    assert result.returncode == 0, result.stdout
    assert kills == 0, result.stdout
    assert (build / "libheavy.a").exists()
    compiles = [s for s in steps_of(build) if s["kind"] == "compile"]
    assert len(compiles) == 8 and all(s["exit"] == 0 and s["res"] for s in compiles)


# An OOM kill is never fatal (issue 23): a peak learned on a bigger runner, or one the kernel
# cut short, starts the step alone with its low-memory rewrites on a small one.
SMALL = 600 << 20


def huge_project(directory: Path, alloc: str, prior: str) -> Path:
    """One step that touches 700 MiB, or 250 MiB with its low-memory rewrite."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "huge.c").write_text("")
    (directory / "build.ninja").write_text(
        "rule cc\n  command = shim cc $flags -c $in -o $out\n\n"
        "build huge.o: cc huge.c\n  flags = -DMB=700 -DMS=300\n")
    (directory / "toolchain.toml").write_text(
        '[tool.cc]\nprogram = "%s"\nfamily = "gcc"\nlow_memory.args.replace = { "-DMB=700" = "-DMB=250" }\n'
        '\n[step.compile]\nmemory = "%s"\n' % (alloc, prior))
    os.chmod(directory / "toolchain.toml", 0o644)
    return directory / "huge.o"


def rebuild_in(limit, directory, env, output):
    if output.exists():
        output.unlink()
    with memcg.MemCg(limit) as cg:
        result = run(cg, [NINJA], directory, env)
        return result, cg.oom_kills()


def test_a_peak_learned_on_a_bigger_runner_starts_with_its_low_memory_rewrites_on_a_small_one(tmp_path, env, alloc):
    out = huge_project(tmp_path, alloc, prior="64MiB")
    result, kills = rebuild_in(4 << 30, tmp_path, env, out)               # the big runner: 700 MiB learned
    assert result.returncode == 0 and kills == 0, result.stdout
    for _ in range(2):                                                    # the small one, twice
        result, kills = rebuild_in(SMALL, tmp_path, env, out)
        assert result.returncode == 0, result.stdout
        assert kills == 0, result.stdout
        assert out.exists()
    steps = steps_of(tmp_path)
    assert [(s.get("low_memory"), s.get("retry"), s["exit"]) for s in steps] == [
        (None, None, 0), (True, None, 0), (True, None, 0)]
    assert steps[1]["mode"] == "spawn" and steps[1]["rss"] < 400 * MIB


def test_a_step_the_oom_killer_cut_short_is_retried_and_the_next_build_does_not_pay_the_kill_again(
        tmp_path, env, alloc):
    out = huge_project(tmp_path, alloc, prior="64MiB")                    # a prior far too low
    result, kills = rebuild_in(SMALL, tmp_path, env, out)
    assert result.returncode == 0, result.stdout
    assert kills >= 1 and out.exists()
    first, retry = steps_of(tmp_path)
    assert (first["oom"], first["need"] > SMALL - (75 << 20)) == (True, True)
    assert (retry["retry"], retry["low_memory"], retry["exit"]) == (1, True, 0)

    result, kills = rebuild_in(SMALL, tmp_path, env, out)
    assert result.returncode == 0, result.stdout
    assert kills == 0, result.stdout                                      # no second kill
    third = steps_of(tmp_path)[-1]
    assert (third.get("low_memory"), third.get("retry"), third["exit"]) == (True, None, 0)


# cargo with RUSTC_WRAPPER=shim and nothing else: Debian's crates of tests/fixtures/cargo
# (regex, serde, serde_json): plain `cargo build -j2` fails in 272 MiB. How it fails depends on
# the kernel: Linux 6.1 here OOM-killed a rustc; Linux 6.18 kept both rustcs alive, reclaiming and
# re-reading librustc_driver's pages, and had not finished after 120 s (wrapped: 22 s).
CARGO_LIMIT = 272 << 20     # bare -j2 failed at 256 and 288 MiB here, finished at 320
BARE_PATIENCE = 4           # bare cargo "did not finish": not in 4x the time shim took (at least 60 s)


@pytest.mark.e2e
def test_rustc_wrapper_shim_under_plain_cargo_build_j2_is_not_oom_killed_where_bare_cargo_is(tmp_path):
    import cargo_test
    if cargo_test.MISSING:
        pytest.skip(cargo_test.MISSING)

    def cargo_build(name, extra, timeout):
        ws = cargo_test.workspace_copy(tmp_path / name)
        env = dict(cargo_test.cargo_env(tmp_path / name), **extra)
        with memcg.MemCg(CARGO_LIMIT) as cg:
            t0 = time.monotonic()
            try:
                result = subprocess.run(cg.wrap([cargo_test.CARGO, "build", "-j2"]), cwd=ws, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                result = None                   # still running: MemCg's close kills what is inside
            return result, cg.oom_kills(), ws, time.monotonic() - t0

    result, kills, ws, took = cargo_build("wrapped", {"RUSTC_WRAPPER": "shim"}, 600)
    assert result is not None, "RUSTC_WRAPPER=shim cargo build -j2 did not finish in 600 s"
    assert result.returncode == 0, result.stdout[-3000:]
    assert kills == 0, result.stdout[-2000:]
    assert (ws / "target" / "debug" / "app").exists()
    steps = steps_of(ws)
    assert len(steps) >= 20 and all(s["exit"] == 0 and s["res"] for s in steps if s["kind"] != "other")

    # The limit is one plain cargo cannot build in: OOM-killed, or still at it long after shim finished.
    bare, kills, _, _ = cargo_build("bare", {}, max(60.0, BARE_PATIENCE * took))
    assert bare is None or (kills > 0 and bare.returncode != 0), bare.stdout[-2000:]


def test_shim_build_j200_in_512mib_caps_its_jobs_and_builds_everything(tmp_path, env, alloc):
    # -j200 would start 200 shims at once, each holding memory while it waits (the issue saw
    # shim build itself OOM-killed and 0 of 200 built). The driver brings -j down to what the
    # budget can admit and says so.
    outs = memcg.write_fake_project(str(tmp_path), alloc, [("t%d" % i, 2, 10) for i in range(200)],
                                    wrapped=True, prior="16MiB")
    with memcg.MemCg(512 << 20) as cg:
        result = subprocess.run(cg.wrap([SHIM, "build", "-j200"]), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=600)
        kills = cg.oom_kills()
    assert result.returncode == 0, result.stdout[-3000:]
    assert kills == 0, result.stdout[-3000:]
    assert all((tmp_path / o).exists() for o in outs)
    assert "-j200 is more than the memory budget can admit at once: running ninja -j" in result.stdout
