"""Small runners are not serial (issue 23): a cold build of real compiles in a 512 MiB cgroup.

Real g++ -O2 compiles of generated C++ (std containers and algorithms instantiated for a few
types: ~130 MiB of anonymous memory and about a second each here), `shim build` with no flags,
no history, inside a fresh child memory cgroup of 512 MiB (tests/memcg.py). Plain `ninja -j2`
fits there; so shim's first build must run two compiles at once, read from the ledger's start
and end times, and the kernel must kill nothing. Before the reserve shrank to 1/16 and steps were
measured by their anonymous memory, the 256 MiB compile prior admitted one at a time.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import memcg
from conftest import SHIM

NINJA = Path(sys.executable).parent / "ninja"
LIMIT = 512 << 20
TYPES = ("int", "long", "double")
SOURCES = 6

REASON = (memcg.available() or (None if shutil.which("g++") else "g++ is not installed")
          or (None if len(os.sched_getaffinity(0)) >= 2 else "needs 2 cores: two compiles must be able to run at once"))
pytestmark = pytest.mark.skipif(REASON is not None, reason="no small runner here: %s" % (REASON,))


def source(n: int) -> str:
    """A translation unit that makes cc1plus work: a map, an unordered_map of sets, a sort
    and a stringstream per type."""
    head = ["#include <%s>" % h for h in ("algorithm", "map", "set", "sstream", "string", "unordered_map", "vector")]
    body = []
    for i, t in enumerate(TYPES):
        body.append(
            "std::string f%d_%d(const std::vector<std::string> &v) {\n"
            "  std::map<std::string, std::vector<%s>> m; std::unordered_map<std::string, std::set<%s>> u;\n"
            "  for (size_t i = 0; i < v.size(); ++i) { m[v[i]].push_back(static_cast<%s>(i));"
            " u[v[i]].insert(static_cast<%s>(i * 3)); }\n"
            "  std::ostringstream o;\n"
            "  for (auto &kv : m) { auto w = kv.second; std::sort(w.begin(), w.end());"
            " o << kv.first << w.size() << u[kv.first].size(); }\n"
            "  return o.str();\n}\n" % (n, i, t, t, t, t))
    return "\n".join(head) + "\n\n" + "\n".join(body)


def project(directory: Path, wrapped: bool) -> list:
    directory.mkdir(parents=True)
    compiler = "shim c++" if wrapped else "c++"
    lines = ["rule cxx", "  command = %s -O2 -c $in -o $out" % compiler, ""]
    outs = []
    for n in range(SOURCES):
        (directory / ("u%d.cc" % n)).write_text(source(n))
        lines.append("build u%d.o: cxx u%d.cc" % (n, n))
        outs.append("u%d.o" % n)
    (directory / "build.ninja").write_text("\n".join(lines) + "\n")
    return outs


def most_at_once(steps) -> int:
    """The most steps whose [t0, t1] overlapped (t0: when the tool started, after any wait)."""
    events = sorted([(s["t1"], -1) for s in steps] + [(s["t0"], 1) for s in steps])
    now = best = 0
    for _, change in events:
        now += change
        best = max(best, now)
    return best


def build_in_cgroup(argv, cwd, env):
    with memcg.MemCg(LIMIT) as cg:
        result = subprocess.run(cg.wrap(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=600)
        return result, cg.oom_kills(), cg.max_usage()


def test_a_cold_build_of_real_compiles_in_512mib_runs_two_at_once_where_ninja_j2_fits(tmp_path, env):
    plain = tmp_path / "plain"
    outs = project(plain, wrapped=False)
    result, kills, _ = build_in_cgroup([str(NINJA), "-j2"], plain, env)
    assert result.returncode == 0 and kills == 0, result.stdout[-2000:]         # -j2 fits here

    wrapped = tmp_path / "wrapped"
    outs = project(wrapped, wrapped=True)
    assert not (wrapped / ".shim").exists()                                      # cold: nothing learned
    result, kills, _ = build_in_cgroup([SHIM, "build"], wrapped, env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert kills == 0, result.stdout[-3000:]
    assert all((wrapped / o).exists() for o in outs)
    steps = [s for s in memcg.ledger_steps(wrapped) if s["kind"] == "compile"]
    assert len(steps) == SOURCES and all(s["exit"] == 0 and not s.get("retry") for s in steps), steps
    # Measured by their anonymous memory (what the cgroup is charged), not by RSS with
    # cc1plus's shared text counted again for every process of the compile.
    assert all(0 < s["rss"] < 256 << 20 for s in steps), [s["rss"] for s in steps]
    assert most_at_once(steps) >= 2, [(s["out"], s["t0"], s["t1"], s["res"], s["wait"]) for s in steps]
