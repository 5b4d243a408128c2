"""examples/ninja built through shim with the real gcc and the ninja of the PyPI package."""

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_shim, write_tool, write_toml

pytestmark = pytest.mark.e2e          # examples/ninja with the real gcc and ninja

NINJA = Path(sys.executable).parent / "ninja"
NUMBERS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3.5]
COMPILES = 6


def expected_summary(numbers) -> str:
    return "n=%d min=%g max=%g mean=%g median=%g stddev=%g" % (
        len(numbers), min(numbers), max(numbers), statistics.fmean(numbers),
        statistics.median(numbers), statistics.pstdev(numbers))


def logging_compiler(tmp_path: Path) -> Path:
    """A `cc` that records who started it (its parent's command line) and runs gcc."""
    log = tmp_path / "cc.log"
    write_tool(tmp_path / "tools", "logcc", """
        parent=$(tr '\\0' ' ' < /proc/$PPID/cmdline)
        printf '%%s\\n' "$parent" >> '%s'   # one write(): parallel compiles do not interleave
        exec gcc "$@"
        """ % log)
    write_toml(tmp_path / "layer.toml", """
        [tool.cc]
        program = "%s"
        """ % (tmp_path / "tools" / "logcc"))
    return log


@pytest.mark.parametrize("mode", ["exec", "spawn"])
def test_the_example_builds_through_shim_and_its_program_runs(example, env, tmp_path, mode):
    log = logging_compiler(tmp_path)
    env["SHIM_TOOLCHAIN"] = str(tmp_path / "layer.toml")
    result = run_shim(["build", "-C", example, "--mode", mode], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[8/8]" in result.stdout

    out = subprocess.run([str(example / "build" / "tally")] + [str(n) for n in NUMBERS],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    assert out.splitlines()[0] == expected_summary(NUMBERS)

    parents = log.read_text().splitlines()
    assert len(parents) == COMPILES
    via_spawning_shim = [p for p in parents if " -IS " in p and "shim cc " in p]
    # spawn: the compiler's parent is the waiting shim; exec: shim became the compiler,
    # so its parent is whatever started shim (ninja's shell).
    assert len(via_spawning_shim) == (COMPILES if mode == "spawn" else 0), parents


def test_a_noop_rebuild_does_nothing_and_a_header_change_rebuilds_through_depfiles(example, env):
    assert run_shim(["build", "-C", example], env=env).returncode == 0
    again = run_shim(["build", "-C", example], env=env)
    assert again.returncode == 0
    assert "no work to do" in again.stdout

    dry = subprocess.run([str(NINJA), "-C", str(example), "-n", "-d", "explain"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "no work to do" in dry.stdout and "explain" not in dry.stderr

    deps = subprocess.run([str(NINJA), "-C", str(example), "-t", "deps"], env=env,
                          stdout=subprocess.PIPE, text=True).stdout
    assert deps.count("include/tally.h") == COMPILES   # `deps = gcc` recorded every header

    os.utime(example / "include" / "tally.h")
    rebuilt = run_shim(["build", "-C", example], env=env)
    assert rebuilt.stdout.count(" CC ") == COMPILES
    assert "LINK build/tally" in rebuilt.stdout


def test_build_passes_ninja_arguments_through_and_returns_ninjas_status(example, env):
    result = run_shim(["build", "-C", example, "-j", "1", "build/obj/vec.o"], env=env)
    assert result.returncode == 0
    assert "CC build/obj/vec.o" in result.stdout and "LINK" not in result.stdout
    missing = run_shim(["build", "-C", example, "no-such-target"], env=env)
    assert missing.returncode == 1
    assert "unknown target 'no-such-target'" in missing.stderr


def test_a_failing_compile_fails_the_build_with_the_compilers_message(example, env):
    (example / "lib" / "fmt.c").write_text("this is not C;\n")
    result = run_shim(["build", "-C", example], env=env)
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1 and failed[0].rstrip().endswith("build/obj/fmt.o"), result.stdout
    assert "error:" in result.stdout     # gcc's own diagnostic, relayed by ninja


@pytest.mark.skipif(not shutil.which("cmake"), reason="cmake is not installed (.ci/run installs it)")
def test_the_walkthrough_cmake_build_of_the_example_wraps_builds_reports_and_unwraps(tmp_path, env):
    bld = tmp_path / "tally-cmake"
    subprocess.run(["cmake", "-G", "Ninja", "-S", str(REPO / "examples" / "ninja"), "-B", str(bld),
                    "-DCMAKE_MAKE_PROGRAM=%s" % NINJA], check=True, stdout=subprocess.DEVNULL, env=env)
    generated = {p: p.read_bytes() for p in bld.rglob("*.ninja")}
    assert run_shim(["wrap", bld], env=env).returncode == 0
    assert run_shim(["build", "-C", bld, "--wrap"], env=env).returncode == 0
    out = subprocess.run([str(bld / "tally")] + [str(n) for n in NUMBERS], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    assert out.splitlines()[0] == expected_summary(NUMBERS)
    report = run_shim(["report", "-C", bld, "--json"], env=env).stdout
    kinds = json.loads(report)["totals"]["by_kind"]
    assert kinds == {"compile": COMPILES, "archive": 1, "link": 1}
    assert run_shim(["wrap", "--undo", bld], env=env).returncode == 0
    assert {p: p.read_bytes() for p in bld.rglob("*.ninja")} == generated
