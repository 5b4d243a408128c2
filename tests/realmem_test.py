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
    # The budget is the cgroup's 1 GiB minus the 256 MiB reserve (this machine has far more RAM).
    assert "budget 768.0MiB" in summary(result.stdout), result.stdout
    limit_lines = [line for line in doctor.stdout.splitlines() if cg.name in line]
    assert limit_lines and "1.0GiB" in limit_lines[0], doctor.stdout
    assert "768.0MiB = 1.0GiB (cgroup " in doctor.stdout, doctor.stdout
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
    assert (adj["ninja"], adj["shim build"]) == (own_adj, own_adj), adj

    assert build.returncode == 0, output                       # shim build and ninja survived
    assert cgroup.oom_kills() >= 1, output
    assert (tmp_path / "big.o").exists() and (tmp_path / "long.o").exists()
    (first_pid, first_adj), (retry_pid, retry_adj) = pid_lines(tmp_path / "big.o.pid")
    assert 500 <= first_adj <= retry_adj <= 1000                # later steps: a little higher
    victims = cgroup.victims()
    if victims is not None:                                     # the kernel log names the victim
        assert victims and all(v == (first_pid, "alloc") for v in victims), (victims, first_pid)

    memcg.assert_retried_alone(tmp_path, output)
