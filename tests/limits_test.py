"""Budget detection against fixture trees of cgroup v1, v2, hybrid and container layouts."""

import os

import pytest

from shim import budget

GIB = 1 << 30
MEMINFO = "MemTotal:       24576000 kB\nMemFree:        20000000 kB\n"
V1_MOUNTS = ("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
             "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
             "36 31 0:33 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n")
V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
HYBRID_MOUNTS = V1_MOUNTS + "40 31 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"


def tree(tmp_path, files: dict):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


def test_cgroup_v1_limit_of_this_process_is_found(tmp_path):
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "4:memory:/ci/job1\n3:cpu:/\n0::/\n",
        "proc/self/mountinfo": V1_MOUNTS,
        "sys/fs/cgroup/memory/ci/job1/memory.limit_in_bytes": "%d\n" % (4 * GIB),
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
    })
    limit, figures = budget.detect(root)
    assert limit.value == 4 * GIB and limit.name == "cgroup v1 memory.limit_in_bytes"
    assert limit.source == "/sys/fs/cgroup/memory/ci/job1/memory.limit_in_bytes"
    assert {f.name for f in figures} == {"cgroup v1 memory.limit_in_bytes", "MemTotal"}


def test_an_unlimited_v1_cgroup_leaves_memtotal(tmp_path):
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "4:memory:/process_api/abc\n",
        "proc/self/mountinfo": V1_MOUNTS,
        "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": "9223372036854771712\n",
    })
    limit, _ = budget.detect(root)
    assert (limit.name, limit.value) == ("MemTotal", 24576000 * 1024)


def test_cgroup_v2_takes_the_smaller_of_max_and_high_up_the_tree(tmp_path):
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "0::/user.slice/ci.scope\n",
        "proc/self/mountinfo": V2_MOUNTS,
        "sys/fs/cgroup/user.slice/ci.scope/memory.max": "max\n",
        "sys/fs/cgroup/user.slice/ci.scope/memory.high": "%d\n" % (6 * GIB),
        "sys/fs/cgroup/user.slice/memory.max": "%d\n" % (3 * GIB),     # a parent's limit binds too
    })
    limit, figures = budget.detect(root)
    assert (limit.name, limit.value) == ("cgroup v2 memory.max", 3 * GIB)
    assert sorted(f.value for f in figures)[:2] == [3 * GIB, 6 * GIB]


def test_hybrid_hosts_read_both_hierarchies(tmp_path):
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "4:memory:/job\n0::/job\n",
        "proc/self/mountinfo": HYBRID_MOUNTS,
        "sys/fs/cgroup/memory/job/memory.limit_in_bytes": "%d\n" % (8 * GIB),
        "sys/fs/cgroup/unified/job/memory.max": "%d\n" % (5 * GIB),
    })
    limit, figures = budget.detect(root)
    assert (limit.name, limit.value) == ("cgroup v2 memory.max", 5 * GIB)
    assert any(f.name == "cgroup v1 memory.limit_in_bytes" and f.value == 8 * GIB for f in figures)


def test_inside_a_container_the_mount_root_is_the_containers_own_cgroup(tmp_path):
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "0::/docker/0123abcd\n",
        "proc/self/mountinfo": "30 23 0:26 /docker/0123abcd /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n",
        "sys/fs/cgroup/memory.max": "%d\n" % (2 * GIB),
    })
    assert budget.detect(root)[0].value == 2 * GIB


def test_the_wrong_hierarchy_line_is_not_used(tmp_path):
    # Chromium's script once read the first line of /proc/self/cgroup: here that is cpu.
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "5:cpu,cpuacct:/other\n4:memory:/mine\n",
        "proc/self/mountinfo": V1_MOUNTS,
        "sys/fs/cgroup/memory/other/memory.limit_in_bytes": "%d\n" % GIB,
        "sys/fs/cgroup/memory/mine/memory.limit_in_bytes": "%d\n" % (7 * GIB),
    })
    assert budget.detect(root)[0].value == 7 * GIB


def test_resolve_auto_subtracts_a_reserve_and_explains_itself(tmp_path):
    root = tree(tmp_path, {"proc/meminfo": "MemTotal: %d kB\n" % (4 * 1024 * 1024)})
    value, lines = budget.explain("auto", root)
    assert value == 4 * GIB - GIB // 2
    assert lines[-1] == "budget: 3.5GiB = 4.0GiB (MemTotal) minus a reserve of 512.0MiB"
    small = tree(tmp_path / "small", {"proc/meminfo": "MemTotal: %d kB\n" % (1024 * 1024)})
    assert budget.explain(None, small)[0] == GIB - (256 << 20)


@pytest.mark.parametrize("request_, expected", [
    ("3GiB", 3 * GIB), ("75%", 3 * GIB), ("off", None), ("OFF", None), ("512M", 512 << 20),
])
def test_resolve_explicit_budgets(tmp_path, request_, expected):
    root = tree(tmp_path, {"proc/meminfo": "MemTotal: %d kB\n" % (4 * 1024 * 1024)})
    assert budget.explain(request_, root)[0] == expected


def test_a_bad_budget_says_why(tmp_path):
    with pytest.raises(ValueError, match="unknown size unit"):
        budget.explain("3 bananas", tree(tmp_path, {"proc/meminfo": MEMINFO}))


def test_this_machine_has_a_figure():
    limit, figures = budget.detect()
    assert limit is not None and limit.value > 0 and figures


def test_a_cgroup_namespace_made_below_the_mount_finds_its_group_by_this_process(tmp_path):
    # `unshare --cgroup` without mounting cgroup2 anew: the mount's root shows as "/..", the
    # process's own path as "/"; the group holding this pid, one level down, is the one.
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "0::/\n",
        "proc/self/mountinfo": "58 53 0:53 /.. /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n",
        "sys/fs/cgroup/other/cgroup.procs": "1\n",
        "sys/fs/cgroup/other/memory.max": "%d\n" % GIB,
        "sys/fs/cgroup/job/cgroup.procs": "1\n%d\n" % os.getpid(),
        "sys/fs/cgroup/job/memory.max": "%d\n" % (2 * GIB),
    })
    limit, _ = budget.detect(root)
    assert (limit.value, limit.source) == (2 * GIB, "/sys/fs/cgroup/job/memory.max")


def test_the_root_of_a_v1_hierarchy_is_not_among_the_files_a_step_reads(tmp_path):
    # The root group (the one with release_agent) cannot be limited: reading its file on
    # every step would cost a /sys read for nothing.
    from shim.config import limits
    job, mid = "sys/fs/cgroup/memory/ci/job1/", "sys/fs/cgroup/memory/ci/"
    root = tree(tmp_path, {"proc/self/cgroup": "4:memory:/ci/job1\n", "proc/self/mountinfo": V1_MOUNTS,
                           job + "memory.limit_in_bytes": "%d\n" % GIB, mid + "memory.limit_in_bytes": "max\n",
                           "sys/fs/cgroup/memory/memory.limit_in_bytes": "max\n",
                           "sys/fs/cgroup/memory/release_agent": "\n"})
    assert [path for path, _ in limits.limit_files(root)] == [
        "/sys/fs/cgroup/memory/ci/job1/memory.limit_in_bytes", "/sys/fs/cgroup/memory/ci/memory.limit_in_bytes"]
