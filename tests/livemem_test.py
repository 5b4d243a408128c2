"""Admission by the memory really in use (issue 18, item 1), inside a real memory cgroup.

A neighbour (a process that is no step: a test database, the runner's agent) holds 400 MiB of
a 1 GiB cgroup for the whole build; eight fake compiles of 330 MB each (tests/fixtures/alloc.c,
expected at the compile prior of 192 MiB: a guess too low, which the first steps prove wrong)
run beside it. Admission that counted only its own reservations admitted two or three at once
and the kernel killed steps; reading the usage of the cgroup at admission, and keeping the pause
mark's margin while a guess runs, shim admits what fits beside the neighbour. The kernel's OOM
counter is the judge. Skipped, with the reason, where no memory cgroup can be made.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import memcg
from conftest import SHIM

NINJA = Path(sys.executable).parent / "ninja"
MIB = 1 << 20
LIMIT = 1 << 30
NEIGHBOUR_MB = 400
EIGHT = [("n%d" % i, 330, 600) for i in range(8)]

REASON = memcg.available() or (None if shutil.which("gcc") else "gcc is not installed (builds the fake tool)")
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(REASON is not None, reason="no real memory cgroup: %s" % REASON)]


@pytest.fixture(scope="module")
def alloc(tmp_path_factory):
    return memcg.compile_alloc(str(tmp_path_factory.mktemp("alloc")))


@pytest.fixture
def env(env, tmp_path):
    env["SHIM_CACHE_DIR"] = str(tmp_path / "cache")
    return env


class Neighbour:
    """*alloc* holding NEIGHBOUR_MB MiB inside cgroup *cg* until stopped."""

    def __init__(self, cg, alloc: str, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.out = directory / "neighbour.o"
        self.proc = subprocess.Popen(cg.wrap([alloc, "-DMB=%d" % NEIGHBOUR_MB, "-DMS=600000", "-o", self.out]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        usage = os.path.join(cg.path, "memory.usage_in_bytes" if cg.version == "v1" else "memory.current")
        for _ in range(500):                   # until its memory is charged (not a timing assertion)
            with open(usage) as f:
                if int(f.read()) >= NEIGHBOUR_MB * MIB:
                    return
            assert self.proc.poll() is None, "the neighbour died before the build"
            time.sleep(0.01)
        raise AssertionError("the neighbour never held its %d MiB" % NEIGHBOUR_MB)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run(cg, argv, cwd, env):
    return subprocess.run(cg.wrap(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


def build_beside_a_neighbour(tmp_path, alloc, argv, env, project):
    """(result, OOM kills, neighbour alive after) of *argv* run in *project* beside the neighbour."""
    with memcg.MemCg(LIMIT) as cg:
        neighbour = Neighbour(cg, alloc, tmp_path / "neighbour")
        try:
            result = run(cg, argv, project, env)
            kills = cg.oom_kills()
            alive = neighbour.alive()
        finally:
            neighbour.stop()
    return result, kills, alive


def test_shim_build_with_no_flags_beside_a_400mib_neighbour_is_not_oom_killed(tmp_path, env, alloc):
    project = tmp_path / "project"
    outs = memcg.write_fake_project(str(project), alloc, EIGHT, wrapped=True)     # no prior: 192 MiB
    result, kills, alive = build_beside_a_neighbour(tmp_path, alloc, [SHIM, "build"], env, project)
    assert result.returncode == 0, result.stdout
    assert kills == 0, result.stdout
    assert alive, "the neighbour was killed"
    assert all((project / o).exists() for o in outs)
    steps = memcg.ledger_steps(project)
    assert not [s for s in steps if s.get("retry") or s.get("oom")], steps


def test_plain_ninja_j8_through_shim_beside_a_400mib_neighbour_is_not_oom_killed(tmp_path, env, alloc):
    tools = tmp_path / "bin"
    tools.mkdir()
    shutil.copy(alloc, tools / "gcc")           # shim in front of "gcc", no configuration at all
    project = tmp_path / "project"
    project.mkdir()
    lines = ["rule cc", "  command = shim %s $flags -c $in -o $out" % (tools / "gcc"), ""]
    for name, mb, ms in EIGHT:
        (project / (name + ".c")).write_text("")
        lines += ["build %s.o: cc %s.c" % (name, name), "  flags = -DMB=%d -DMS=%d" % (mb, ms)]
    (project / "build.ninja").write_text("\n".join(lines) + "\n")
    result, kills, alive = build_beside_a_neighbour(tmp_path, alloc, [NINJA, "-j8"], env, project)
    assert result.returncode == 0, result.stdout
    assert kills == 0, result.stdout
    assert alive, "the neighbour was killed"
    assert all((project / (name + ".o")).exists() for name, _, _ in EIGHT)


def test_bare_ninja_j2_beside_the_neighbour_is_oom_killed(tmp_path, env, alloc):
    # The scene is a real threat: two steps at once do not fit beside the neighbour.
    project = tmp_path / "project"
    memcg.write_fake_project(str(project), alloc, EIGHT, wrapped=False)
    result, kills, _ = build_beside_a_neighbour(tmp_path, alloc, [NINJA, "-j2"], env, project)
    assert kills > 0, result.stdout


def gcc_project(directory: Path) -> list:
    """Real `gcc -O2 -c` compiles of one large generated function each (bench/memory.py's
    generator: cc1 peaks of ~203 MiB at 8500 statements, ~387 MiB at 14500), through shim."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from memory import gen_function
    directory.mkdir(parents=True)
    names = ["g%d_%d" % (i, n) for i, n in enumerate((14500, 8500, 14500, 8500, 8500))]
    lines = ["rule cc", "  command = shim cc -O2 -c $in -o $out", ""]
    for name in names:
        (directory / (name + ".c")).write_text(gen_function("fn_" + name, int(name.split("_")[1])))
        lines.append("build %s.o: cc %s.c" % (name, name))
    (directory / "build.ninja").write_text("\n".join(lines) + "\n")
    return [name + ".o" for name in names]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_a_cold_build_of_real_gcc_O2_compiles_under_1gib_is_not_oom_killed_nor_is_the_warm_one(tmp_path, env):
    project = tmp_path / "project"
    outs = gcc_project(project)
    for build in ("cold", "warm"):
        if build == "warm":
            subprocess.run([NINJA, "-t", "clean"], cwd=project, check=True, stdout=subprocess.DEVNULL)
        with memcg.MemCg(LIMIT) as cg:
            result = run(cg, [SHIM, "build"], project, env)
            kills = cg.oom_kills()
        assert result.returncode == 0, (build, result.stdout)
        assert kills == 0, (build, result.stdout)
        assert all((project / o).exists() for o in outs), build
    steps = memcg.ledger_steps(project)
    assert len(steps) == 2 * len(outs) and not [s for s in steps if s.get("retry")]
