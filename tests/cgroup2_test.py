"""shim under a real cgroup v2 memory controller: in a throwaway VM (tests/vm.py), since this
project's machines are cgroup v1 (tests/realmem_test.py has the v1 versions).

One boot runs every check (tests/cgroup2_guest.py prints what it saw as JSON); the fake
projects, the fake compiler (tests/fixtures/alloc.c, built here with gcc) and every build's
outputs and ledger are in a work directory the guest shares read-write, so the assertions
read them here. Each build runs in a fresh 1 GiB group (memory.max, memory.swap.max = 0)
with fake compiles of eight 300 MiB steps: small C programs, as TCG makes real compiles
~30x slower. Skipped, with the reason, where no VM can run (no QEMU, no kernel image, no
busybox-static: the Debian package is named).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import memcg
from shim.driver.build import DRIVER_OOM_SCORE
import vm
from conftest import BIN

HERE = Path(__file__).resolve().parent
STEPS = [("s%d" % i, 300, 3000) for i in range(8)]      # 2.4 GiB at once under ninja -j8
PRIOR = "300MiB"
TIMEOUT = 600
GROW_MS = 6000          # slower than on the host (tests/pauses_test.py): a Python watcher is slow under TCG

REASON = vm.unavailable() or (None if shutil.which("gcc") else "gcc is not installed (builds the fake tool)")
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(REASON is not None, reason="no cgroup v2 VM: %s" % REASON)]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return vm.Image.build(str(tmp_path_factory.mktemp("vm-image")))


@pytest.fixture(scope="module")
def guest(image, tmp_path_factory):
    """(what the guest saw, the shared work directory) after one boot running every check."""
    work = tmp_path_factory.mktemp("vm-work")
    alloc = memcg.compile_alloc(str(work / "tools"))
    memcg.write_fake_project(str(work / "bare"), alloc, STEPS, wrapped=False)
    for name in ("protected", "build"):
        memcg.write_fake_project(str(work / name), alloc, STEPS, wrapped=True, prior=PRIOR)
    memcg.write_fake_project(str(work / "retry"), alloc, [("long", 300, 5000), ("big", 750, 500, 600)],
                             wrapped=True, prior=PRIOR)
    for name in ("growth", "growth-unpaused"):
        memcg.write_growing_project(str(work / name), alloc, grow_ms=GROW_MS)
    try:
        result = vm.run(image, [sys.executable, HERE / "cgroup2_guest.py", work], cwd=work, timeout=TIMEOUT,
                        env={"PATH": "%s:/usr/sbin:/usr/bin:/sbin:/bin" % BIN, "HOME": "/root", "LANG": "C.UTF-8"})
    except subprocess.TimeoutExpired as e:
        pytest.fail("the VM ran past %d s; the guest printed:\n%s%s" % (TIMEOUT, e.output, e.stderr))
    assert result.returncode == 0, result.stdout + result.stderr
    (work / "guest.json").write_text(result.stdout)       # for a look after a failure
    return json.loads(result.stdout), work


def check(guest, name) -> dict:
    seen = guest[0][name]
    assert "error" not in seen, seen["error"]
    return seen


def doctor(guest, name):
    """(what the guest saw, the lines of its `shim doctor` under "memory budget": each figure,
    then the budget's origin)."""
    seen = check(guest, name)
    assert seen["exit"] == 0, seen["output"]
    lines = seen["output"].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("memory budget"))
    end = next(i for i, line in enumerate(lines) if i > start and not line.startswith("  "))
    return seen, [line.strip() for line in lines[start + 1:end]]


def test_the_guest_is_cgroup_v2(guest):
    assert guest[0]["cgroup"] == "v2"


def test_the_budget_is_memory_max_of_the_group_minus_the_reserve(guest):
    seen, lines = doctor(guest, "doctor_max")
    assert "cgroup v2 memory.max: 1.0GiB (/sys/fs/cgroup/%s/memory.max)" % seen["group"] in lines, lines
    assert "budget: 960.0MiB = 1.0GiB (cgroup v2 memory.max) minus a reserve of 64.0MiB" in lines, lines


def test_memory_high_of_a_nested_group_is_the_limit_below_its_parents_memory_max(guest):
    seen, lines = doctor(guest, "doctor_high")
    assert "cgroup v2 memory.high: 640.0MiB (/sys/fs/cgroup/%s/inner/memory.high)" % seen["group"] in lines, lines
    assert "cgroup v2 memory.max: 1.0GiB (/sys/fs/cgroup/%s/memory.max)" % seen["group"] in lines, lines
    assert "budget: 600.0MiB = 640.0MiB (cgroup v2 memory.high) minus a reserve of 40.0MiB" in lines, lines


def test_a_group_that_is_the_root_of_its_cgroup_namespace_is_read_from_its_own_view(guest):
    # As in a container: /sys/fs/cgroup mounted inside the namespace shows the group as the root.
    _, lines = doctor(guest, "doctor_ns")
    assert "cgroup v2 memory.max: 1.0GiB (/sys/fs/cgroup/memory.max)" in lines, lines
    assert "budget: 960.0MiB = 1.0GiB (cgroup v2 memory.max) minus a reserve of 64.0MiB" in lines, lines


def test_a_cgroup_namespace_under_the_hosts_mount_finds_its_group_below_the_mount(guest):
    # `unshare --cgroup` alone: /proc/self/cgroup says "/", the mount's root is "/..".
    _, lines = doctor(guest, "doctor_ns_plain")
    assert "budget: 960.0MiB = 1.0GiB (cgroup v2 memory.max) minus a reserve of 64.0MiB" in lines, lines


def outputs_built(directory: Path) -> list:
    return [name for name, _, _ in STEPS if (directory / (name + ".o")).exists()]


def test_bare_ninja_j8_is_oom_killed_in_the_group(guest):
    seen = check(guest, "bare")
    assert seen["exit"] != 0, seen["output"]           # the build broke...
    assert seen["oom_kills"] > 0, seen["output"]       # ...because the kernel killed steps (memory.events)


def test_plain_ninja_j8_calling_shim_finishes_without_oom_kills_with_no_configuration(guest):
    # No SHIM_MEMORY_BUDGET: steps outside `shim build` find the group's limit themselves.
    seen = check(guest, "protected")
    assert (seen["exit"], seen["oom_kills"]) == (0, 0), seen["output"]
    assert outputs_built(guest[1] / "protected") == [name for name, _, _ in STEPS]
    steps = memcg.ledger_steps(guest[1] / "protected")
    assert len(steps) == 8 and all(s["exit"] == 0 and not s.get("retry") for s in steps)


def test_shim_build_with_no_flags_finishes_without_oom_kills(guest):
    seen = check(guest, "build")
    assert (seen["exit"], seen["oom_kills"]) == (0, 0), seen["output"]
    assert outputs_built(guest[1] / "build") == [name for name, _, _ in STEPS]
    assert "budget 960.0MiB" in memcg.summary_line(seen["output"]), seen["output"]
    steps = memcg.ledger_steps(guest[1] / "build")
    assert len(steps) == 8 and all(s["exit"] == 0 and not s.get("retry") for s in steps)   # none retried


def test_the_oom_victim_is_the_overshooting_step_never_ninja_or_shim_build_and_it_is_retried_alone(guest):
    seen = check(guest, "retry")
    project = guest[1] / "retry"
    assert seen["adj"]["long's tool"] >= 500, seen
    # shim build keeps the OOM killer off itself and ninja (-900 where it may lower its score).
    assert seen["adj"]["ninja"] == seen["adj"]["shim build"] in (seen["own_adj"], DRIVER_OOM_SCORE), seen
    assert seen["exit"] == 0, seen["output"]                 # shim build and ninja survived
    assert seen["oom_kills"] >= 1, seen["output"]            # memory.events
    assert (project / "big.o").exists() and (project / "long.o").exists()
    (first_pid, first_adj), (_, retry_adj) = memcg.pid_lines(project / "big.o.pid")
    assert 500 <= first_adj <= retry_adj <= 1000
    if seen["victims"] is not None:                          # the guest kernel's log names the victim
        assert seen["victims"] and all(tuple(v) == (first_pid, "alloc") for v in seen["victims"]), seen

    memcg.assert_retried_alone(project, seen["output"])


def test_steps_growing_past_a_far_too_low_estimate_are_oom_killed_in_the_group_without_pausing(guest):
    seen = check(guest, "growth_unpaused")
    assert seen["oom_kills"] > 0, seen["output"]
    assert not memcg.pause_records(guest[1] / "growth-unpaused")


def test_under_plain_ninja_steps_growing_past_their_estimate_are_paused_not_killed_in_the_group(guest):
    seen = check(guest, "growth")
    project = guest[1] / "growth"
    assert (seen["exit"], seen["oom_kills"]) == (0, 0), seen["output"]
    assert all((project / ("g%d.o" % i)).exists() for i in range(8))
    assert memcg.pause_records(project), seen["output"]
    assert seen["left"] == [], seen                          # the watcher left with the last step


def test_the_vm_runner_returns_the_output_and_exit_status_and_keeps_writes_in_the_work_directory(image, tmp_path):
    result = vm.run(image, ["/bin/sh", "-c", "cat /proc/self/cgroup; echo kept > out; echo lost > /etc/x; "
                            "echo oops >&2; exit 3"], cwd=tmp_path, timeout=TIMEOUT)
    assert (result.returncode, result.stdout, result.stderr) == (3, "0::/\n", "oops\n")
    assert (tmp_path / "out").read_text() == "kept\n"
    assert not os.path.exists("/etc/x")


def test_the_vm_runner_kills_qemu_at_the_timeout(image, tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        vm.run(image, ["sleep", "600"], cwd=tmp_path, timeout=3)
    running = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if image.initramfs.encode() in Path("/proc/%s/cmdline" % pid).read_bytes():
                running.append(pid)
        except OSError:
            pass
    assert running == []
