"""What default protection's system calls cost alone: the floor under bench/overhead.py's row.

    .venv/bin/python bench/syscall_floor.py [--rounds 100] [--write BENCHMARKS.md]

One real protected step (`shim cc -c tiny.c`, no configuration) leaves a private runtime
directory as every later step finds it: the limits note and the pool. Then the system calls a
protected step makes beyond an unprotected one (strace of both, BUILD.md), on the same files
and in the same order, are replayed in fresh processes, with nothing between them: from Python
(`python -I -S`, the posix module, as shim makes them) and from C (built here with gcc). Both
also make the call both kinds of step share (the /proc/self/oom_score_adj write), and an empty
replay makes only that one: the first /proc/self access of a process costs more than the next
(a protected step that reads its own cgroup moves it there; one that takes its parent's note
makes none). The same rounds time the real step,
protected and not, as bench/overhead.py's fresh-process row does (shim's entry to the exec): its
cost less the Python replay's is what shim's own code does between the calls. Each round runs
the six in a rotating order; medians.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from overhead import FRESH_LOADER, fresh_code, installed_site_packages, write_section       # noqa: E402  (bench/ is not a package)

BEGIN, END = "<!-- syscall-floor:begin -->", "<!-- syscall-floor:end -->"
SLOTS = 12      # what a small compile takes at the 192 MiB prior in 16 MiB slots (the replay's lock length)


def operations(run: str, env: dict):
    """[(group, call, args)] of the system calls a protected step makes beyond an unprotected one
    in the runtime directory *run* (shim/ names the offsets; the limit files from its note)."""
    from shim import admission, budget, watcher
    found = budget.limit(env)
    total = admission.geometry(admission.budget(env, {}), admission.DEFAULT_UNIT, found[0])[1]
    parents = [n for n in os.listdir(run) if n.startswith("parent")]
    pools = [n for n in os.listdir(run) if n.startswith("pool-")]
    if len(parents) != 1 or len(pools) != 1:
        raise SystemExit("expected one parent note and one pool in %s, found %s" % (run, os.listdir(run)))
    first = 7
    # Its cgroup (/proc/self/cgroup, the namespace link), the cgroup's note and the limit files are
    # read only by a step that finds its parent's note over a second old (budget.FRESH_FOR): one in
    # many in a build, none of them here.
    ops = [("note", "opendir", run), ("note", "stat", "/"), ("note", "readlinkat", parents[0]),
           ("note", "lstatat", parents[0])]
    ops += [("pool", "openat", pools[0]),
            ("reserve", "lock", admission.GATE, 1), ("reserve", "pread", admission.DRAIN_SIZE, admission.DRAIN_AT),
            ("reserve", "lock", 1 + first, SLOTS)]
    usage = budget._usage_files(env, "/")
    if usage == "":                       # the limit is the machine's RAM: sysinfo()
        ops.append(("live", "sysinfo"))
    elif usage:                           # the usage file beside the binding limit
        ops.append(("live", "read", usage[0]))
    ops += [("live", "pread", total * admission.ROSTER_SIZE, admission.ROSTER_BASE),
            ("list", "pwrite", SLOTS * admission.ROSTER_SIZE, admission.ROSTER_BASE + first * admission.ROSTER_SIZE),
            ("list", "unlock", admission.GATE),
            ("record", "pwrite", SLOTS * admission.OWNER_SIZE, admission.OWNER_BASE + first * admission.OWNER_SIZE),
            ("record", "pwrite", watcher.STAMP_SIZE, watcher.ADMITTED_BASE + first * watcher.STAMP_SIZE),
            ("record", "test", watcher.WATCH_LOCK)]
    return ops


# The same calls twice over: Python lines and C lines, each group's clock read after its last.
PY = {"read": "fd = posix.open(%r, R); posix.read(fd, 65536); posix.close(fd)",
      "readlink": "posix.readlink(%r)",
      "opendir": "dfd = posix.open(%r, R | posix.O_NOFOLLOW | posix.O_DIRECTORY); posix.fstat(dfd)",
      "stat": "posix.stat(%r)",
      "readlinkat": "posix.readlink(%r, dir_fd=dfd)",
      "lstatat": "posix.stat(%r, dir_fd=dfd, follow_symlinks=False)",
      "openat": "pfd = posix.open(%r, posix.O_RDWR | posix.O_CREAT | posix.O_NONBLOCK | posix.O_NOFOLLOW | R, "
                "0o600, dir_fd=dfd); posix.fstat(pfd); posix.set_inheritable(pfd, True)",
      "lock": "posix.lseek(pfd, %d, 0); posix.lockf(pfd, posix.F_TLOCK, %d)",
      "unlock": "posix.lseek(pfd, %d, 0); posix.lockf(pfd, posix.F_ULOCK, 1)",
      "test": "posix.lseek(pfd, %d, 0)\ntry:\n    posix.lockf(pfd, posix.F_TEST, 1)\nexcept OSError:\n    pass",
      "pread": "posix.pread(pfd, %d, %d)",
      "pwrite": "posix.pwrite(pfd, bytes(%d), %d)",
      "sysinfo": "posix.sysconf('SC_AVPHYS_PAGES')"}
C = {"read": 'fd = open("%s", R); read(fd, buf, sizeof buf); close(fd);',
     "readlink": 'readlink("%s", buf, sizeof buf);',
     "opendir": 'dfd = open("%s", R | O_NOFOLLOW | O_DIRECTORY); fstat(dfd, &st);',
     "stat": 'stat("%s", &st);',
     "readlinkat": 'readlinkat(dfd, "%s", buf, sizeof buf);',
     "lstatat": 'fstatat(dfd, "%s", &st, AT_SYMLINK_NOFOLLOW);',
     "openat": 'pfd = openat(dfd, "%s", O_RDWR | O_CREAT | O_NONBLOCK | O_NOFOLLOW | R, 0600); fstat(pfd, &st);'
               ' ioctl(pfd, FIONCLEX);',
     "lock": "lseek(pfd, %d, 0); lockf(pfd, F_TLOCK, %d);",
     "unlock": "lseek(pfd, %d, 0); lockf(pfd, F_ULOCK, 1);",
     "test": "lseek(pfd, %d, 0); lockf(pfd, F_TEST, 1);",
     "pread": "pread(pfd, buf, %d, %d);",
     "pwrite": "memset(buf, 0, %d); pwrite(pfd, buf, %d, %d);",
     "sysinfo": "sysconf(_SC_AVPHYS_PAGES);"}
SHARED = {"py": 'fd = posix.open("/proc/self/oom_score_adj", posix.O_RDWR | R); posix.read(fd, 16); '
                'posix.write(fd, b"0"); posix.close(fd)',
          "c": 'fd = open("/proc/self/oom_score_adj", O_RDWR | R); read(fd, buf, 16); write(fd, "0", 1); close(fd);'}


def segments(ops) -> list:
    """The names of the replay's timed parts, in order: each run of one group's calls, then
    the shared call."""
    return [g for i, (g, *_) in enumerate(ops) if i == 0 or ops[i - 1][0] != g] + ["shared"]


def _lines(ops, kind: str):
    """The replay's statements, a clock read closing each group, then the shared call."""
    table, out = (PY, []) if kind == "py" else (C, [])
    clock = "T.append(pc())" if kind == "py" else "T[n++] = ns();"
    for i, (group, call, *args) in enumerate(ops):
        if kind == "c" and call == "pwrite":
            args = [args[0]] + args
        out.append(table[call] % tuple(args) if args else table[call])
        if i + 1 == len(ops) or ops[i + 1][0] != group:
            out.append(clock)
    return out + [SHARED[kind], clock]


def python_replay(ops) -> str:
    body = ["import posix, time", "pc = time.perf_counter_ns", "R = posix.O_RDONLY | posix.O_CLOEXEC",
            'fd = posix.open("/dev/null", R); posix.close(fd)', "T = [pc()]"]
    body += _lines(ops, "py")
    body.append('print(" ".join("%.1f" % ((b - a) / 1e3) for a, b in zip(T, T[1:])))')
    return "\n".join(body) + "\n"


def c_replay(ops) -> str:
    head = """#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#define R (O_RDONLY | O_CLOEXEC)
static char buf[1 << 17];
static long ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000L + t.tv_nsec; }
int main(void) {
    long T[64]; int n = 0, fd, dfd = -1, pfd = -1; struct stat st;
    (void)dfd; (void)pfd; (void)st;
    memset(buf, 0, sizeof buf);
    fd = open("/dev/null", R); close(fd);
    T[n++] = ns();
"""
    tail = """    for (int i = 1; i < n; i++) printf("%.1f%s", (T[i] - T[i - 1]) / 1e3, i + 1 < n ? " " : "\\n");
    return 0;
}
"""
    return head + "".join("    %s\n" % line for line in _lines(ops, "c")) + tail


def measure(rounds: int):
    work = tempfile.mkdtemp(prefix="shim-floor-")
    try:
        run = os.path.join(work, "run")
        os.makedirs(run, mode=0o700)
        with open(os.path.join(work, "tiny.c"), "w") as f:
            f.write("int twice(int x) { return 2 * x; }\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIM_", "CCACHE_"))}
        env.update(XDG_RUNTIME_DIR=run, HOME=os.path.join(work, "home"), SHIM_MODE="exec")
        shim = os.path.join(os.path.dirname(sys.executable), "shim")
        subprocess.run([shim, "cc", "-c", "tiny.c", "-o", "tiny.o"], cwd=work, env=env, check=True)
        ops = operations(os.path.join(run, "shim"), env)
        # The real step as bench/overhead.py's fresh-process row times it, entry to exec, from the
        # installed bundle (the launcher's site-packages, not this checkout).
        step = [sys.executable, "-I", "-S", "-c", FRESH_LOADER, installed_site_packages(), fresh_code()]
        replays = {"shim step": (step, {}), "shim step, unprotected": (step, {"SHIM_MEMORY_BUDGET": "off"}),
                   "python": ([sys.executable, "-I", "-S", "-c", python_replay(ops)], {}),
                   "python, shared call only": ([sys.executable, "-I", "-S", "-c", python_replay([])], {})}
        gcc = shutil.which("gcc")
        if gcc:
            for name, these in (("C", ops), ("C, shared call only", [])):
                src = os.path.join(work, "replay%d.c" % len(these))
                with open(src, "w") as f:
                    f.write(c_replay(these))
                subprocess.run([gcc, "-O2", "-o", src[:-2], src], check=True)
                replays[name] = ([src[:-2]], {})
        out = {name: [] for name in replays}
        order = list(replays)
        for r in range(rounds):
            k = r % len(order)
            for name in order[k:] + order[:k]:
                argv, extra = replays[name]
                done = subprocess.run(argv, cwd=work, env=dict(env, **extra), stdout=subprocess.PIPE, text=True,
                                      check=True)
                out[name].append([float(x) for x in done.stdout.split()])
        return ops, out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(ops, out, rounds: int) -> str:
    groups = segments(ops)
    lines = ["Command: `%s bench/syscall_floor.py --rounds %d`, %d alternating rounds, medians in µs"
             % (os.path.relpath(sys.executable), rounds, rounds), "",
             "| replay | %s | protection's calls, net |" % " | ".join(groups),
             "|---|%s---:|" % ("---:|" * len(groups))]
    for name in (n for n in out if "only" not in n and not n.startswith("shim")):
        runs, alone = out[name], out[name + ", shared call only"]
        cols = [statistics.median(run[i] for run in runs) for i in range(len(groups))]
        net = statistics.median(sum(run) - base[0] for run, base in zip(runs, alone))
        lines.append("| %s | %s | %.0f |" % (name, " | ".join("%.1f" % c for c in cols), net))
    lines += ["", "Net: all the groups, less the shared call made alone in the same round. The calls: %s."
              % "; ".join("%s %s" % (op[0], op[1]) for op in ops)]
    step = statistics.median(a[0] - b[0] for a, b in zip(out["shim step"], out["shim step, unprotected"]))
    calls = statistics.median(sum(run) - base[0] for run, base in zip(out["python"], out["python, shared call only"]))
    lines.append("The real step in the same rounds (bench/overhead.py's fresh-process row: shim's entry to the exec), "
                 "protected less unprotected: %+.0f µs. Less the Python replay of its calls, %.0f µs are shim's own "
                 "code between them (%.0f%%)." % (step, step - calls, 100 * (step - calls) / step))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="alternating rounds (default 100)")
    parser.add_argument("--write", metavar="FILE", help="replace the syscall-floor section of FILE (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    ops, out = measure(args.rounds)
    text = report(ops, out, args.rounds)
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END, "## The system calls under default protection",
                      "bench/syscall_floor.py: the calls a protected step adds, replayed alone (BUILD.md, "
                      "\"Where a protected step's time goes\").")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
