"""The memory limits that apply to this process: cgroup files and MemTotal, found and explained.

The limit is the smallest of: cgroup v2 `memory.max` / `memory.high` and cgroup v1
`memory.limit_in_bytes` of *this process's own* cgroup and its ancestors (each
hierarchy read through /proc/self/cgroup and /proc/self/mountinfo, so v1, v2 and
hybrid hosts all work, inside containers too), and MemTotal. scan() is the walk a step
pays for once per cgroup: shim/budget.py caches which files it found, reads their values
and explains the budget (`shim doctor`). This module only finds; it judges nothing.

Every function takes *root*, a prefix for /proc and /sys, so tests can point it at
fixture trees of each cgroup layout.
"""

import os

from shim import size


class Figure:
    """One number the budget was derived from, and where it was read."""

    def __init__(self, name: str, value: int, source: str):
        self.name, self.value, self.source = name, value, source

    def __repr__(self):
        return "Figure(%r, %s, %r)" % (self.name, size.format(self.value), self.source)


def _read(path: str):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def mem_total(root: str = "/"):
    text = _read(os.path.join(root, "proc/meminfo")) or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return Figure("MemTotal", int(line.split()[1]) * 1024, "/proc/meminfo")
    return None


def _own_cgroups(root: str):
    """{"v2": path} and/or {"memory": path} from /proc/self/cgroup."""
    found = {}
    for line in (_read(os.path.join(root, "proc/self/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            found["v2"] = path
        elif "memory" in controllers.split(","):
            found["memory"] = path
    return found


def _mounts(root: str):
    """[(fstype, mount root, mount point, super options)] of cgroup mounts."""
    mounts = []
    for line in (_read(os.path.join(root, "proc/self/mountinfo")) or "").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) >= 5 and rfields and rfields[0] in ("cgroup", "cgroup2"):
            mounts.append((rfields[0], fields[3], fields[4], rfields[-1] if len(rfields) > 2 else ""))
    return mounts


def _listdir(path: str):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _directory(mount_root: str, mount_point: str, cgroup_path: str, root: str) -> str:
    """Where *cgroup_path* of a hierarchy is visible, given how it is mounted here."""
    if mount_root == "/":
        rel = cgroup_path
    elif cgroup_path == mount_root or cgroup_path.startswith(mount_root.rstrip("/") + "/"):
        rel = cgroup_path[len(mount_root.rstrip("/")):]
    elif set(mount_root.strip("/").split("/")) == {".."}:
        # A cgroup namespace made below the mount (`unshare --cgroup` without mounting anew):
        # the mount's root is "/..", and the namespace's root, whose name this process
        # cannot see, is the group N levels down that holds this process.
        found = [os.path.join(root, mount_point.lstrip("/"))]
        for _ in range(mount_root.count("..")):
            found = [os.path.join(d, name) for d in found for name in _listdir(d)]
        for d in found:
            d = os.path.join(d, cgroup_path.lstrip("/"))
            if str(os.getpid()) in (_read(os.path.join(d, "cgroup.procs")) or "").split():
                return d
        rel = "/"
    else:
        rel = "/"                     # a container sees its own cgroup as the mount's root
    return os.path.join(root, mount_point.lstrip("/"), rel.lstrip("/"))


def _walk_up(directory: str, top: str):
    d = os.path.normpath(directory)
    top = os.path.normpath(top)
    while True:
        yield d
        if d == top or len(d) <= len(top):
            return
        d = os.path.dirname(d)


def limit_files(root: str = "/"):
    """[(path under *root*, figure name)] of every cgroup limit file (v1 and v2) on this
    process's cgroups and their ancestors, whatever it holds now ("max" too)."""
    own = _own_cgroups(root)
    found = []
    for fstype, mount_root, mount_point, options in _mounts(root):
        if fstype == "cgroup2" and "v2" in own:
            files = ("memory.max", "memory.high")
            path = own["v2"]
        elif fstype == "cgroup" and "memory" in options.split(",") and "memory" in own:
            files = ("memory.limit_in_bytes",)
            path = own["memory"]
        else:
            continue
        start = _directory(mount_root, mount_point, path, root)
        top = os.path.join(root, mount_point.lstrip("/"))
        for d in _walk_up(start, top):
            if fstype == "cgroup" and os.path.isfile(os.path.join(d, "release_agent")):
                continue    # a v1 hierarchy's root, which no one can limit: one file less a step reads
            for name in files:
                if os.path.isfile(os.path.join(d, name)):
                    found.append(("/" + os.path.relpath(os.path.join(d, name), root),
                                  "cgroup %s %s" % ("v2" if fstype == "cgroup2" else "v1", name)))
    return found


def scan(root: str = "/"):
    """(limit files, MemTotal in bytes or None): what shim/budget.py caches."""
    total = mem_total(root)
    return limit_files(root), total.value if total else None
