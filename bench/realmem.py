"""Builds inside a real memory cgroup: static ninja -jN vs shim, judged by the kernel's OOM killer.

    .venv/bin/python bench/realmem.py [--limit 1GiB] [--projects fake,gen,neighbour] [--write BENCHMARKS.md]

Every build runs in a fresh child memory cgroup of the given limit (tests/memcg.py: cgroup
v1 here, delegated v2 elsewhere; root needed), from a fresh build dir, so a kill is the
kernel's verdict and not a sampler's estimate. Configurations:
- `ninja -j2`, `ninja -j4`: the plain manifest, tools called directly;
- `ninja -j4` + `SHIM_MEMORY_BUDGET`: the wrapped manifest (rules call `shim`), plain ninja,
  the budget `shim build` would give its steps in this cgroup (limit - reserve - ninja's,
  shim build's and 4 waiting shims' own memory);
- `shim build`: no flags (budget detected from the cgroup, its jobserver), cold (no `.shim/`)
  and warm (the next clean build, history kept).
Per build: finished or not (outputs built / all), OOM kills (the cgroup's `oom_kill` counter),
who the kernel killed (dmesg, by command name), shim's OOM retries (ledger), wall, and the
cgroup's max usage (`memory.max_usage_in_bytes`, v2 `memory.peak`: page cache included).

Projects:
- fake: compiles of tests/fixtures/alloc.c, a C program that touches N MiB and holds it;
  2 x 520 MiB for 1.5 s and 6 x 200 MiB for 1 s (no prior in toolchain.toml: the gcc preset's
  256 MiB for a compile, so cold shim underestimates the big ones);
- gen: bench/memory.py's generated project of real `gcc -O2 -c` compiles (cc1 peaks of ~76, 203,
  387, 587 MiB) and one link; its cold and warm shim builds are the cold-vs-warm rows of issue 18;
- neighbour (issue 18): 8 x 330 MiB fake compiles beside a process that holds 400 MiB of the
  cgroup for the whole build; configurations ninja -j1, -j2, plain `ninja -j8` through shim
  (build.ninja calls shim, nothing configured) and `shim build`; whether the neighbour survived.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import memcg  # noqa: E402
from memory import cpu_busy, gen_manifest, gen_sources, wait_quiet  # noqa: E402
from overhead import write_section  # noqa: E402

BEGIN, END = "<!-- realmem:begin -->", "<!-- realmem:end -->"
INTRO = ('`bench/realmem.py`: the same builds inside a real memory cgroup, where running out of '
         "memory means the kernel's OOM killer, not a sampled peak over a budget.")
HEADING = "## Real memory limit (issue 11)"
MiB = 1 << 20
GiB = 1 << 30
TIMEOUT = 900
FAKE_STEPS = [("big0", 520, 1500), ("s0", 200, 1000), ("s1", 200, 1000), ("big1", 520, 1500),
              ("s2", 200, 1000), ("s3", 200, 1000), ("s4", 200, 1000), ("s5", 200, 1000)]
CONFIGS = ["ninja -j2", "ninja -j4", "ninja -j4 + SHIM_MEMORY_BUDGET", "shim build (cold)", "shim build (warm)"]


def ninja_bin():
    return os.path.join(BIN, "ninja")


def shim_bin():
    return os.path.join(BIN, "shim")


def steps_budget(limit: int) -> int:
    """What `shim build` in a cgroup of *limit* lets its steps reserve with 4 edges in flight."""
    from shim import budget
    from shim.driver import build
    return build.for_steps(limit - budget.reserve_for(limit), 4)


class Project:
    def __init__(self, name, title, write, outputs, configs=CONFIGS, neighbour=None):
        self.name, self.title, self.write, self.outputs = name, title, write, outputs
        self.configs, self.neighbour = configs, neighbour      # neighbour: (alloc, MiB) held all along


NEIGHBOUR_MB = 400
NEIGHBOUR_STEPS = [("n%d" % i, 330, 1000) for i in range(8)]
NEIGHBOUR_CONFIGS = ["ninja -j1", "ninja -j2", "ninja -j8 through shim", "shim build (cold)"]


def neighbour_project(root: str):
    """Issue 18: 8 x 330 MiB fake compiles (prior 256 MiB) beside a process holding 400 MiB of
    the cgroup for the whole build (a test database, the runner's agent)."""
    alloc = memcg.compile_alloc(os.path.join(root, "tools"))

    def write(directory, wrapped):
        return memcg.write_fake_project(directory, alloc, NEIGHBOUR_STEPS, wrapped=wrapped)
    title = ("neighbour: %d x %d MiB held %.1f s beside a process holding %d MiB all along (gcc preset prior: "
             "256 MiB a compile)" % (len(NEIGHBOUR_STEPS), NEIGHBOUR_STEPS[0][1], NEIGHBOUR_STEPS[0][2] / 1000,
                                     NEIGHBOUR_MB))
    return Project("neighbour", title, write, [s[0] + ".o" for s in NEIGHBOUR_STEPS], NEIGHBOUR_CONFIGS,
                   (alloc, NEIGHBOUR_MB))


def start_neighbour(cg, neighbour, directory):
    """The neighbour process inside *cg*, once its memory is charged there (or None if it died)."""
    alloc, mb = neighbour
    proc = subprocess.Popen(cg.wrap([alloc, "-DMB=%d" % mb, "-DMS=3600000", "-o",
                                     os.path.join(directory, "neighbour.o")]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    usage = os.path.join(cg.path, "memory.usage_in_bytes" if cg.version == "v1" else "memory.current")
    for _ in range(1000):
        with open(usage) as f:
            if int(f.read()) >= mb * MiB:
                return proc
        if proc.poll() is not None:
            return None
        time.sleep(0.01)
    return proc


def fake_project(root: str):
    alloc = memcg.compile_alloc(os.path.join(root, "tools"))

    def write(directory, wrapped):
        return memcg.write_fake_project(directory, alloc, FAKE_STEPS, wrapped=wrapped)
    title = "fake: %s (tests/fixtures/alloc.c; gcc preset prior: 256 MiB a compile)" % ", ".join(
        "%d x %d MiB held %.1f s" % (sum(1 for s in FAKE_STEPS if s[1:] == k), k[0], k[1] / 1000)
        for k in sorted({s[1:] for s in FAKE_STEPS}, reverse=True))
    return Project("fake", title, write, [s[0] + ".o" for s in FAKE_STEPS])


def gen_project(root: str):
    """bench/memory.py's generated project (same files, same order), without its calibration."""
    src = os.path.join(root, "src")
    os.makedirs(src)
    names, objs = gen_sources(src)
    counts = {}
    for _, stmts in names:
        counts[stmts] = counts.get(stmts, 0) + 1
    title = ("gen: %d `gcc -O2 -c` compiles (%s statements; cc1 peaks ~76/203/387/587 MiB) + 1 link"
             % (len(names), ", ".join("%d x %d" % (counts[s], s) for s in sorted(counts))))
    return Project("gen", title, lambda directory, wrapped: gen_manifest(directory, src, objs, wrapped),
                   [o + ".o" for o in objs] + ["prog"])


class Run:
    def __init__(self, config, status, wall, built, total, kills, victims, retries, max_usage, other_cpu, output):
        self.config, self.status, self.wall, self.built, self.total = config, status, wall, built, total
        self.kills, self.victims, self.retries, self.max_usage = kills, victims, retries, max_usage
        self.other_cpu, self.output = other_cpu, output


def build_once(project, config, directory, env, limit, logs, say) -> Run:
    argv = {"ninja -j1": [ninja_bin(), "-j1"], "ninja -j2": [ninja_bin(), "-j2"], "ninja -j4": [ninja_bin(), "-j4"],
            "ninja -j8 through shim": [ninja_bin(), "-j8"],
            "ninja -j4 + SHIM_MEMORY_BUDGET": [ninja_bin(), "-j4"]}.get(config, [shim_bin(), "build"])
    run_env = dict(env)
    since = len(read_ledger(directory))          # warm: the ledger holds the cold build too
    if config.startswith("ninja -j4 +"):
        run_env["SHIM_MEMORY_BUDGET"] = "%dMiB" % (steps_budget(limit) // MiB)
    log_path = os.path.join(logs, "%s-%s.log" % (project.name, slug(config)))
    with memcg.MemCg(limit, prefix="shimbench-") as cg, open(log_path, "wb") as log:
        neighbour = start_neighbour(cg, project.neighbour, directory) if project.neighbour else None
        busy0 = cpu_busy()
        start = time.perf_counter()
        proc = subprocess.Popen(cg.wrap(argv), cwd=directory, env=run_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        hung = threading.Timer(TIMEOUT, cg.kill_all)      # a hang: kill everything in the cgroup
        hung.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            cg.kill_all()
            proc.wait()
            raise
        finally:
            hung.cancel()
        wall = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if wall >= TIMEOUT:
            code = "killed after %d s" % TIMEOUT
        other = max(0.0, cpu_busy() - busy0 - (usage.ru_utime + usage.ru_stime))
        kills, victims, max_usage = cg.oom_kills(), cg.victims(), cg.max_usage()
        alive = None
        if project.neighbour:
            alive = neighbour is not None and neighbour.poll() is None
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    with open(log_path, errors="replace") as f:
        output = f.read()
    built = sum(1 for o in project.outputs if os.path.exists(os.path.join(directory, o)))
    retries = sum(1 for r in read_ledger(directory)[since:] if r.get("retry")) if "shim" in config.lower() else None
    r = Run(config, code, wall, built, len(project.outputs), kills, victims, retries, max_usage, other, output)
    r.neighbour_alive = alive
    say("  %-32s %s, %d/%d built, %d OOM kills%s, %.1f s, max usage %s" % (
        config, "exit 0" if code == 0 else "FAILED (%s)" % code, built, r.total, kills,
        " (%s)" % victim_names(victims) if kills else "", wall, mib(max_usage)))
    return r


def read_ledger(directory):
    from shim.reports import records
    ledger = os.path.join(directory, ".shim")
    return records.read(ledger) if os.path.isdir(ledger) else []


def clean(directory, env):
    subprocess.run([ninja_bin(), "-C", directory, "-t", "clean"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench_project(project, root, env, limit, logs, quiet, say):
    say("%s, cgroup limit %s" % (project.title, mib(limit)))
    runs = []
    for config in project.configs:
        if config == "shim build (warm)":
            directory = os.path.join(root, project.name, slug("shim build (cold)"))
            clean(directory, env)      # keep .shim/: the history cold left
        else:
            directory = os.path.join(root, project.name, slug(config))
            project.write(directory, wrapped="shim" in config.lower() or "SHIM" in config)
        if quiet:
            wait_quiet(say, quiet)
        runs.append(build_once(project, config, directory, env, limit, logs, say))
    return runs


def slug(config: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", config.lower()).strip("-")


def mib(n):
    return "-" if n is None else "%d MiB" % round(n / MiB)


def victim_names(victims):
    if victims is None:
        return "kernel log unreadable"
    counts = {}
    for _, name in victims:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join("%s x%d" % (n, c) if c > 1 else n for n, c in sorted(counts.items()))


def table(project, runs, limit):
    lines = ["### %s, limit %s" % (project.title, mib(limit)), "",
             "| configuration | finished | built | OOM kills (killed) | shim OOM retries | wall | cgroup max usage |"
             " CPU of other processes |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in runs:
        lines.append("| %s | %s | %d/%d | %s | %s | %.1f s | %s | %.0f s |" % (
            r.config, "yes" if r.status == 0 else "**no** (%s)" % (
                "ninja exit %s" % r.status if r.config.startswith("ninja") else "exit %s" % r.status),
            r.built, r.total, "%d (%s)" % (r.kills, victim_names(r.victims)) if r.kills else "0",
            "-" if r.retries is None else r.retries, r.wall, mib(r.max_usage), r.other_cpu))
    if any(getattr(r, "neighbour_alive", None) is not None for r in runs):
        lines += ["", "The neighbour after each build: %s. Wall against `ninja -j1`: %s." % (
            ", ".join("%s %s" % (r.config, "alive" if r.neighbour_alive else "**killed**") for r in runs),
            ", ".join("%s %.2fx" % (r.config, r.wall / runs[0].wall) for r in runs[1:]))]
    summaries = [(r.config, line) for r in runs for line in r.output.splitlines()
                 if r.config.startswith("shim") and line.startswith("shim: ")]
    if summaries:
        lines += ["", "shim build's own summary:", "", "```"]
        lines += ["[%s] %s" % (c.split("(")[-1].rstrip(")"), line) for c, line in summaries]
        lines.append("```")
    return lines


def cgroup_parser(doc: str, section: str, quiet_wait: float) -> argparse.ArgumentParser:
    """The options every benchmark inside a memory cgroup takes: --limit, --quiet-wait, --write."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--limit", default="1GiB", help="memory limit of the cgroup of every build (default 1GiB)")
    parser.add_argument("--quiet-wait", type=float, default=quiet_wait, metavar="S",
                        help="before each build, wait at most S seconds for other load to stop (default %g; 0: never)"
                        % quiet_wait)
    parser.add_argument("--write", metavar="FILE", help="replace the %s section of FILE (BENCHMARKS.md)" % section)
    return parser


def cgroup_limit(args) -> int:
    """The --limit in bytes; exits with the reason where no memory cgroup can be made."""
    from shim import size
    limit = size.parse(args.limit)
    reason = memcg.available()
    if reason:
        raise SystemExit("no memory cgroup can be made here: %s" % reason)
    return limit


def main(argv=None) -> int:
    parser = cgroup_parser(__doc__, "realmem", 60.0)
    parser.add_argument("--projects", default="fake,gen,neighbour", help="comma-separated subset of fake,gen,neighbour")
    args = parser.parse_args(argv)
    limit = cgroup_limit(args)
    for exe in (ninja_bin(), shim_bin()):
        if not os.path.exists(exe):
            raise SystemExit("%s is missing: pip install . into this venv first" % exe)
    started = time.time()
    root = tempfile.mkdtemp(prefix="shim-realmem-")
    run_dir = os.path.join(root, "run")
    os.makedirs(run_dir, mode=0o700)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SHIM_", "XDG_", "NINJA_", "CCACHE_")) and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(XDG_RUNTIME_DIR=run_dir, SHIM_CACHE_DIR=os.path.join(root, "cache"),
               XDG_CONFIG_HOME=os.path.join(root, "config"), HOME=os.path.join(root, "home"), LC_ALL="C",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    os.makedirs(env["HOME"])
    logs = os.path.join(root, "logs")
    os.makedirs(logs)

    def say(text):
        print(text, flush=True)

    def terminate(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)
    say("work dir %s (logs in %s)" % (root, logs))
    sections = []
    for name in args.projects.split(","):
        project = {"fake": fake_project, "gen": gen_project, "neighbour": neighbour_project}[name](
            os.path.join(root, name + "-src"))
        runs = bench_project(project, root, env, limit, logs, args.quiet_wait, say)
        sections.append(table(project, runs, limit))
    elapsed = time.time() - started
    head = ["Command: `%s bench/realmem.py --limit %s%s` on %s, Python %s, %d CPUs, %d GiB RAM, gcc %s, "
            "Linux %s, cgroup %s; the whole run took %.1f min." % (
                os.path.relpath(sys.executable), args.limit,
                "" if args.projects == "fake,gen,neighbour" else " --projects " + args.projects,
                time.strftime("%Y-%m-%d"), sys.version.split()[0], os.cpu_count(),
                round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GiB),
                subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip(),
                os.uname().release, memcg.locate()[0], elapsed / 60),
            "",
            "Each build: a fresh build dir and a fresh child memory cgroup of the limit (memsw limited "
            "too: no swap), one run. `ninja -jN` builds the plain manifest (tools called directly); "
            "`ninja -j4 + SHIM_MEMORY_BUDGET` the wrapped one (every step `shim cc`/`shim link`) with "
            "`SHIM_MEMORY_BUDGET=%s`, what shim build gives its steps in this cgroup; `shim build` has no "
            "flags: its budget is detected from the cgroup (limit minus a 1/8, >= 256 MiB reserve), "
            "cold without `.shim/`, warm the clean build after it. Plain ninja stops at the first "
            "failed step (`built` counts outputs that exist). OOM kills: the cgroup's `oom_kill` count; "
            "the names are the victims' command names from the kernel log. Max usage is the cgroup's "
            "own figure and includes page cache, which the kernel reclaims before it kills. CPU of other "
            "processes: the machine's busy time (/proc/stat) minus the build's own CPU. Other engineers "
            "share this machine; before each build the script waited (at most %.0f s) for 4 s with less "
            "than 0.15 core of it. Where that figure is large the wall is inflated and not comparable; "
            "finished, built and OOM kills do not depend on it."
            % (mib(steps_budget(limit)).replace(" ", ""), args.quiet_wait),
            ""]
    text = "\n".join(head + [line for s in sections for line in s + [""]]).rstrip()
    say("\n" + text)
    if args.write:
        write_section(args.write, text, BEGIN, END, HEADING, INTRO)
    for name in args.projects.split(","):          # keep the logs; the builds are of no further use
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        shutil.rmtree(os.path.join(root, name + "-src"), ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
