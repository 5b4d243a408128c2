"""How much memory this machine (or container) lets the build use, and why.

The limit is the smallest of: cgroup v2 `memory.max` / `memory.high` and cgroup v1
`memory.limit_in_bytes` of *this process's own* cgroup and its ancestors (each
hierarchy read through /proc/self/cgroup and /proc/self/mountinfo, so v1, v2 and
hybrid hosts all work, inside containers too), and MemTotal. The budget is that
limit minus a reserve for the system (1/8, at least 256 MiB). `SHIM_MEMORY_BUDGET`,
toolchain.toml `memory.budget` and `shim build --budget` override it.

Every function takes *root*, a prefix for /proc and /sys, so tests can point it at
fixture trees of each cgroup layout.
"""

import os

from shim import size

UNLIMITED = 1 << 60          # v1 reports "no limit" as a number near 2**63
MINIMUM = 1 << 20            # a smaller budget is a slip, not a plan


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


def cgroup_limits(root: str = "/"):
    """[Figure] for every memory limit set on this process's cgroups (v1 and v2)."""
    own = _own_cgroups(root)
    figures = []
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
            for name in files:
                text = (_read(os.path.join(d, name)) or "").strip()
                if text.isdigit() and int(text) < UNLIMITED:
                    shown = "/" + os.path.relpath(os.path.join(d, name), root)
                    figures.append(Figure("cgroup %s %s" % ("v2" if fstype == "cgroup2" else "v1", name),
                                          int(text), shown))
    return figures


def reserve_for(limit: int) -> int:
    """Memory kept out of the budget for the OS, ninja and the page cache."""
    return max(256 << 20, limit // 8)


def detect(root: str = "/"):
    """(limit Figure, [all Figures considered]): the smallest limit that applies here."""
    figures = cgroup_limits(root)
    total = mem_total(root)
    if total:
        figures.append(total)
    if not figures:
        return None, []
    return min(figures, key=lambda f: f.value), figures


def resolve(requested, root: str = "/"):
    """(budget bytes or None for "off", explanation lines) for a requested budget.

    *requested*: None or "auto" (detect), "off", a size ("3GiB"), or a percentage of
    the detected limit ("75%").
    """
    text = "auto" if requested is None else str(requested).strip()
    if text.lower() in ("off", "none", "0", "false"):
        return None, ["memory admission off (%r)" % requested]
    limit, figures = detect(root)
    lines = ["%s: %s (%s)" % (f.name, size.format(f.value), f.source) for f in figures]
    if text.lower() == "auto":
        if limit is None:
            return None, lines + ["no memory figure found: admission off"]
        budget = limit.value - reserve_for(limit.value)
        lines.append("budget: %s = %s (%s) minus a reserve of %s"
                     % (size.format(budget), size.format(limit.value), limit.name,
                        size.format(reserve_for(limit.value))))
        return max(budget, 1 << 20), lines
    budget = size.parse(text, total=limit.value if limit else None)
    if budget < MINIMUM:
        raise ValueError("a budget of %s leaves no room for any step (at least 1MiB)" % size.format(budget))
    lines.append("budget: %s (%s)" % (size.format(budget), "%s of %s" % (text, limit.name)
                                       if text.endswith("%") else "as requested"))
    return budget, lines
