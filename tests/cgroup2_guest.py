"""The guest half of tests/cgroup2_test.py: run inside the cgroup v2 VM (tests/vm.py), as

    python tests/cgroup2_guest.py WORK

where WORK holds `alloc` (tests/fixtures/alloc.c, built on the host) and the fake projects
the host wrote (bare/, protected/, build/, retry/, growth/, growth-unpaused/). Runs shim doctor and the builds in fresh
memory cgroups (tests/memcg.py, v2 here), and prints one JSON object of what it saw: exit
statuses, output, memory.events' OOM kills, oom_score_adj of the processes, the kernel log's
victims. The host asserts; this side only observes (one Python start costs ~1 s under TCG).
"""

import json
import os
import subprocess
import sys
import time
import traceback

import memcg

BIN = os.path.dirname(sys.executable)
SHIM = os.path.join(BIN, "shim")
NINJA = os.path.join(BIN, "ninja")
LIMIT = 1 << 30
TIMEOUT = 180


def environment(name, **settings):
    """A fresh environment with no SHIM_* settings but *settings*, pools and caches of its own (guest tmpfs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIM_", "XDG_", "NINJA_", "MAKEFLAGS"))}
    for key, path in (("HOME", "/root/" + name), ("XDG_RUNTIME_DIR", "/run/" + name),
                      ("SHIM_CACHE_DIR", "/run/%s-cache" % name)):
        os.makedirs(path, mode=0o700, exist_ok=True)
        env[key] = path
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.update(settings)
    return env


def run(argv, cwd, name, **settings):
    result = subprocess.run(argv, cwd=cwd, env=environment(name, **settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=TIMEOUT)
    return {"exit": result.returncode, "output": result.stdout}


def doctor_in_group(work):
    with memcg.MemCg(LIMIT) as cg:
        seen = run(cg.wrap([SHIM, "doctor"]), work, "doctor-max")
        seen["group"] = cg.name
    return seen


def doctor_in_nested_group(work):
    """shim doctor in a group with memory.high = 640 MiB, a child of one with memory.max = 1 GiB."""
    with memcg.MemCg(LIMIT) as outer:
        with open(os.path.join(outer.path, "cgroup.subtree_control"), "w") as f:
            f.write("+memory\n")
        inner = os.path.join(outer.path, "inner")
        os.mkdir(inner)
        try:
            with open(os.path.join(inner, "memory.high"), "w") as f:
                f.write("%d\n" % (640 << 20))
            argv = ["/bin/sh", "-c", memcg.MOVE_IN, os.path.join(inner, "cgroup.procs"), SHIM, "doctor"]
            seen = run(argv, work, "doctor-high")
        finally:
            os.rmdir(inner)          # empty: doctor has ended
        seen["group"] = outer.name
    return seen


def doctor_in_namespace(work, remount):
    """shim doctor where its group (memory.max = 1 GiB) is the root of a cgroup namespace; with
    *remount*, /sys/fs/cgroup mounted afresh inside it, as container runtimes do."""
    script = 'exec "$0" doctor'
    if remount:      # in the new mount namespace: the same place cannot hold two mounts of it
        script = "umount /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && " + script
    with memcg.MemCg(LIMIT) as cg:
        seen = run(cg.wrap(["unshare", "--cgroup", "--mount", "/bin/sh", "-c", script, SHIM]), work,
                   "doctor-ns" if remount else "doctor-ns-plain")
        seen["group"] = cg.name
    return seen


def build(project, argv, name, **settings):
    with memcg.MemCg(LIMIT) as cg:
        seen = run(cg.wrap(argv), project, name, **settings)
        seen["oom_kills"] = cg.oom_kills()
        seen["peak"] = cg.max_usage()
        deadline = time.monotonic() + 30          # the pause watcher leaves once no step runs
        while cg.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        seen["left"] = cg.pids()
    return seen


def retry(project):
    """shim build of `long` (300 MiB, held) and `big` (750 MiB), both expected at 300 MiB: what
    the kernel killed, and the oom_score_adj of long's tool, ninja and shim build meanwhile."""
    with memcg.MemCg(LIMIT) as cg:
        own_adj = memcg.oom_score_adj(os.getpid())
        # SHIM_PAUSE_AT=off: paused, big would not be the kernel's victim (see the "growth" check)
        proc = subprocess.Popen(cg.wrap([SHIM, "build"]), cwd=project, env=environment("retry", SHIM_PAUSE_AT="off"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        adj = {}
        try:
            deadline = time.monotonic() + TIMEOUT
            pid_file = os.path.join(project, "long.o.pid")
            while not memcg.pid_lines(pid_file) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            lines = memcg.pid_lines(pid_file)
            if lines:
                ninja = memcg.ninja_under(proc.pid)
                adj = {"long's tool": memcg.oom_score_adj(lines[0][0]), "shim build": memcg.oom_score_adj(proc.pid),
                       "ninja": memcg.oom_score_adj(ninja) if ninja else None}
            output, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return {"exit": proc.returncode, "output": output, "own_adj": own_adj, "adj": adj,
                "oom_kills": cg.oom_kills(), "victims": cg.victims()}


def main(work):
    checks = {
        "doctor_max": lambda: doctor_in_group(work),
        "doctor_high": lambda: doctor_in_nested_group(work),
        "doctor_ns": lambda: doctor_in_namespace(work, remount=True),
        "doctor_ns_plain": lambda: doctor_in_namespace(work, remount=False),
        "bare": lambda: build(os.path.join(work, "bare"), [NINJA, "-j8"], "bare"),
        "protected": lambda: build(os.path.join(work, "protected"), [NINJA, "-j8"], "protected"),
        "build": lambda: build(os.path.join(work, "build"), [SHIM, "build"], "build"),
        "retry": lambda: retry(os.path.join(work, "retry")),
        "growth": lambda: build(os.path.join(work, "growth"), [NINJA, "-j4"], "growth"),
        "growth_unpaused": lambda: build(os.path.join(work, "growth-unpaused"), [NINJA, "-j4"], "growth-unpaused",
                                         SHIM_PAUSE_AT="off"),
    }
    wanted = sys.argv[2:] or list(checks)
    seen = {"cgroup": memcg.locate()[0], "uptime": float(open("/proc/uptime").read().split()[0])}
    for name in wanted:
        start = time.monotonic()
        try:
            seen[name] = checks[name]()
        except Exception:
            seen[name] = {"error": traceback.format_exc()}
        seen[name]["seconds"] = round(time.monotonic() - start, 1)
    json.dump(seen, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
