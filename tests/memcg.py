"""Real memory cgroups for tests and benchmarks: make one, run commands in it, count OOM kills.

    with memcg.MemCg(1 << 30) as cg:                      # raises memcg.Unavailable(reason)
        subprocess.run(cg.wrap(["ninja", "-j4"]), ...)    # the command starts inside the cgroup
        cg.oom_kills(), cg.max_usage(), cg.victims()

cgroup v1 (a `memory` hierarchy, as on this project's machines): a child of this process's
own memory cgroup with `memory.limit_in_bytes` and, when the kernel accounts swap,
`memory.memsw.limit_in_bytes` set to the same figure (so the limit cannot spill into swap)
and `memory.swappiness` 0 (the same where the kernel does not account swap: a host with swap
would otherwise swap a step out rather than kill it);
OOM kills from `memory.oom_control` (`oom_kill N`, Linux >= 4.13), peak from
`memory.max_usage_in_bytes`. cgroup v2: a child of the nearest cgroup, this process's or an
ancestor, whose `cgroup.subtree_control` enables memory (one holding processes cannot), with
`memory.max` and `memory.swap.max = 0`; OOM kills from `memory.events`, peak from
`memory.peak` (Linux >= 5.19). Anything else (not root and not delegated, no memory hierarchy mounted, an old kernel)
raises `Unavailable` with the reason, for `pytest.skip`.

A command enters the cgroup through `/bin/sh -c 'echo $$ > cgroup.procs; exec "$@"'`: the
shell moves itself and then becomes the command (same pid), so everything the command starts
is charged to the cgroup and nothing that ran before it is. On close, processes still inside
(only ever ones started through `wrap`) are killed by pid, and the directory is removed.
"""

import os
import re
import signal
import subprocess
import time
import uuid

MOVE_IN = 'echo $$ > "$0" && exec "$@"'


class Unavailable(Exception):
    """No writable memory cgroup here; the message says why."""


def _read(path):
    with open(path) as f:
        return f.read()


def _own_cgroups():
    """{"v1": path of the memory controller's cgroup, "v2": path in the unified hierarchy}."""
    own = {}
    for line in _read("/proc/self/cgroup").splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            own["v2"] = path
        elif "memory" in controllers.split(","):
            own["v1"] = path
    return own


def _mount(fstype, option=None):
    """(mount root, mount point) of the first cgroup mount of *fstype* (with super *option*)."""
    for line in _read("/proc/self/mountinfo").splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) >= 5 and rfields and rfields[0] == fstype:
            if option is None or option in rfields[-1].split(","):
                return fields[3], fields[4]
    return None


def _directory(mount, path):
    root, point = mount
    if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root.rstrip("/")):]
    return os.path.join(point, path.lstrip("/"))


def locate():
    """("v1" or "v2", the directory to create cgroups in, its path in the hierarchy, the files a
    new cgroup must have). Raises Unavailable when no memory cgroup can be made here."""
    try:
        own = _own_cgroups()
        _read("/proc/self/mountinfo")
    except OSError as e:
        raise Unavailable("cannot read /proc/self/cgroup or mountinfo (%s)" % e.strerror) from None
    if "v1" in own:
        mount = _mount("cgroup", "memory")
        if mount is None:
            raise Unavailable("the cgroup v1 memory controller is not mounted")
        version, path = "v1", own["v1"]
        directory = _directory(mount, path)
        needed = ("memory.limit_in_bytes", "memory.oom_control", "memory.max_usage_in_bytes")
    elif "v2" in own:
        mount = _mount("cgroup2")
        if mount is None:
            raise Unavailable("cgroup v2 is not mounted")
        version, path = "v2", own["v2"]
        # A v2 cgroup that holds processes (ours does: this one) cannot enable controllers for
        # children, so the new cgroup goes under the nearest ancestor that does enable memory.
        top = mount[1]
        directory = start = _directory(mount, path)
        while True:
            try:
                if "memory" in _read(os.path.join(directory, "cgroup.subtree_control")).split():
                    break
            except OSError:
                pass
            if os.path.normpath(directory) == os.path.normpath(top):
                raise Unavailable("no cgroup from %s up to %s enables the memory controller for its children "
                                  "(cgroup.subtree_control)" % (start, top))
            directory, path = os.path.dirname(directory), os.path.dirname(path.rstrip("/")) or "/"
        needed = ("memory.max", "memory.events")
    else:
        raise Unavailable("this process is in no memory cgroup (/proc/self/cgroup)")
    if not os.path.isdir(directory):
        raise Unavailable("%s (the memory cgroup to create one in) is not visible here" % directory)
    if not os.access(directory, os.W_OK):
        raise Unavailable("%s is not writable (not root, and the cgroup is not delegated to uid %d)"
                          % (directory, os.geteuid()))
    if version == "v1" and "oom_kill " not in _read(os.path.join(directory, "memory.oom_control")):
        raise Unavailable("memory.oom_control has no oom_kill count (Linux < 4.13)")
    return version, directory, path, needed


class MemCg:
    """A fresh child memory cgroup limited to *limit* bytes (context manager: removed on exit)."""

    def __init__(self, limit: int, prefix: str = "shimtest-"):
        self.version, parent, _, needed = locate()
        self.limit = limit
        self.name = prefix + uuid.uuid4().hex[:8]
        self.path = os.path.join(parent, self.name)
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise Unavailable("cannot create a cgroup in %s (%s)" % (parent, e.strerror)) from None
        try:
            missing = [n for n in needed if not os.path.exists(os.path.join(self.path, n))]
            if missing:
                raise Unavailable("the new cgroup %s has no %s" % (self.path, ", ".join(missing)))
            if self.version == "v1":
                self._write("memory.limit_in_bytes", limit)
                if os.path.exists(os.path.join(self.path, "memory.memsw.limit_in_bytes")):
                    self._write("memory.memsw.limit_in_bytes", limit)     # must be >= the limit: after it
                # Without swap accounting (swapaccount=0) the kernel may swap the cgroup's idle
                # pages out instead of killing: where the host has swap, a step the limit should
                # kill survives. Swappiness 0 stops reclaim at the limit from swapping anonymous memory.
                try:
                    self._write("memory.swappiness", 0)
                except OSError:           # kernels older than 2014 refuse it under use_hierarchy
                    pass
            else:
                self._write("memory.max", limit)
                if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                    self._write("memory.swap.max", 0)
        except BaseException:
            os.rmdir(self.path)
            raise

    def _write(self, name, value):
        with open(os.path.join(self.path, name), "w") as f:
            f.write("%d\n" % value)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wrap(self, argv) -> list:
        """*argv* as a command that first moves itself into this cgroup."""
        return ["/bin/sh", "-c", MOVE_IN, os.path.join(self.path, "cgroup.procs")] + [str(a) for a in argv]

    def pids(self) -> list:
        try:
            return [int(p) for p in _read(os.path.join(self.path, "cgroup.procs")).split()]
        except OSError:
            return []

    def oom_kills(self) -> int:
        """Processes of this cgroup the kernel's OOM killer has killed so far."""
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        for line in _read(os.path.join(self.path, name)).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def max_usage(self):
        """The highest memory use charged to this cgroup (bytes), or None if the kernel does not say."""
        name = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        try:
            return int(_read(os.path.join(self.path, name)).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def victims(self):
        """[(pid, command name)] the kernel log names as OOM-killed in this cgroup, or None when
        the log cannot be read (dmesg_restrict, no dmesg)."""
        try:
            log = subprocess.run(["dmesg"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 errors="replace", timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if log.returncode != 0:
            return None
        # Linux >= 4.19: "oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/a/b,task_memcg=/a/b,task=cc1,pid=42,uid=0"
        found = []
        # (matched by the cgroup's own unique name: inside a cgroup namespace the log shows more of the path)
        pattern = re.compile(r"oom-kill:.*\boom_memcg=[^,]*/%s,.*\btask=(.*),pid=(\d+),uid=" % re.escape(self.name))
        for line in log.stdout.splitlines():
            m = pattern.search(line)
            if m:
                found.append((int(m.group(2)), m.group(1)))
        return found

    def kill_all(self) -> None:
        """SIGKILL every process inside (each one started by us, through wrap), by pid."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def close(self, timeout: float = 20.0) -> None:
        """Kill what is still inside, then remove the cgroup."""
        deadline = time.monotonic() + timeout
        while True:
            self.kill_all()
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def available():
    """None when a memory cgroup can be made here, else why not."""
    try:
        locate()
    except Unavailable as e:
        return str(e)
    return None


def compile_alloc(directory, source=None) -> str:
    """Build the fake compiler tests/fixtures/alloc.c into *directory*; returns its path."""
    source = source or os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "alloc.c")
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, "alloc")
    subprocess.run(["gcc", "-O2", "-o", out, source], check=True)
    return out


def write_fake_project(directory, alloc, steps, wrapped: bool, prior: str = None) -> list:
    """A ninja project of fake compiles: *steps* = [(name, MiB, hold ms[, delay ms])].

    Each step is `ALLOC -DMB=.. -DMS=.. -c NAME.c -o NAME.o` (*wrapped*: `shim cc ...`, with a
    toolchain.toml making tool cc that program, gcc's family, and *prior* the expected memory
    of a compile). Returns the outputs' names."""
    os.makedirs(directory, exist_ok=True)
    prefix = "shim cc" if wrapped else alloc
    lines = ["rule cc", "  command = %s $flags -c $in -o $out" % prefix, "  description = CC $out", ""]
    outs = []
    for step in steps:
        name, mb, ms = step[:3]
        delay = step[3] if len(step) > 3 else 0
        open(os.path.join(directory, name + ".c"), "w").close()
        lines += ["build %s.o: cc %s.c" % (name, name),
                  "  flags = -DMB=%d -DMS=%d%s" % (mb, ms, " -DDELAY=%d" % delay if delay else "")]
        outs.append(name + ".o")
    with open(os.path.join(directory, "build.ninja"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if wrapped:
        toml = os.path.join(directory, "toolchain.toml")
        with open(toml, "w") as f:
            f.write('[tool.cc]\nprogram = "%s"\nfamily = "gcc"\n' % alloc)
            if prior:
                f.write('\n[step.compile]\nmemory = "%s"\n' % prior)
        os.chmod(toml, 0o644)
    return outs


def write_growing_project(directory, alloc, count: int = 8, mb: int = 300, grow_ms: int = 3000,
                          hold_ms: int = 1000) -> list:
    """*count* fake compiles through shim, expected at 64 MiB (a prior far too low), each climbing
    to *mb* MiB over *grow_ms* ms, then holding it *hold_ms* ms; returns the outputs' names."""
    outs = write_fake_project(directory, alloc, [("g%d" % i, mb, hold_ms) for i in range(count)], wrapped=True,
                              prior="64MiB")
    path = os.path.join(str(directory), "build.ninja")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("-DMS=%d" % hold_ms, "-DMS=%d -DGROW=%d" % (hold_ms, grow_ms)))
    return outs


def pause_records(directory) -> list:
    """The pause watcher's `pause` records in the ledger of the project in *directory*."""
    from shim.reports import records
    return [r for r in records.read(os.path.join(str(directory), ".shim")) if r.get("rec") == "pause"]


def pid_lines(path) -> list:
    """[(pid, oom_score_adj)] the fake tool (alloc.c) appended to OUT.pid, one line per run."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [tuple(int(x) for x in line.split()) for line in text.splitlines() if line.strip()]


def ninja_under(root: int):
    """The pid of the `ninja` process below *root* (e.g. shim build's child), or None."""
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            if _read("/proc/%d/comm" % pid).strip() == "ninja":
                return pid
            todo += [int(c) for c in _read("/proc/%d/task/%d/children" % (pid, pid)).split()]
        except (OSError, ValueError):
            pass
    return None


def oom_score_adj(pid) -> int:
    return int(_read("/proc/%d/oom_score_adj" % pid))


def summary_line(output: str) -> str:
    """The first line of `shim build`'s closing summary in *output*."""
    lines = [line for line in output.splitlines() if line.startswith("shim: ") and " steps in " in line]
    assert lines, output
    return lines[0]


def ledger_steps(directory) -> list:
    """Every step the ledger of the project in *directory* recorded."""
    from shim.reports import records
    return records.load(os.path.join(str(directory), ".shim"), which="all")[1]


def assert_retried_alone(directory, output: str) -> None:
    """The ledger of the retry scene (`long` held, `big` overshooting): big's first run was
    OOM-killed, its retry ran alone after long and succeeded, long was spared."""
    steps = ledger_steps(directory)
    first, retry = [s for s in steps if s["out"] == ["big.o"]]
    (long,) = [s for s in steps if s["out"] == ["long.o"]]
    assert (first["sig"], first["oom"], first["retry"]) == (9, True, None), first
    assert (retry["exit"], retry["retry"]) == (0, 1), retry
    assert (long["exit"], long.get("retry")) == (0, None), long                 # the bystander was spared
    assert retry["t0"] + retry["wait"] >= long["t1"] - 0.05, (retry, long)      # the retry ran alone
    assert "1 out-of-memory retries" in output, output
