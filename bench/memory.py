"""Memory admission: static ninja parallelism vs `shim build --budget B`, side by side.

    .venv/bin/python bench/memory.py --corpus ~/.cache/shim-corpus [--repeat 2] [--write BENCHMARKS.md]

Projects (each a clean build per column):
- gen: a generated ninja project of real `gcc -O2 -c` compiles of large straight-line
  functions, sized so cc1 peaks at several levels (measured once and printed), plus one
  link; its build.ninja calls `gcc` (plain) or `shim cc` / `shim link` (wrapped);
- ninja and sqlite from ../shared/corpus (fetch-corpus.sh with LAUNCHER=.../bin/shim):
  the plain trees for the static columns, the `-wrapped` ones for shim.

Columns: `ninja -jN` (N = 1..4) and ninja with compile and link rules in `pool mem` of
depth 1 and 2 (ninja's default -j), all without shim; `shim build --budget B` cold (no
`.shim/` history) and warm (the next clean build, history kept). Rows: wall, aggregate
peak (sum of the RSS of the whole process tree under the build command, sampled every
20 ms from /proc/PID/statm), OOM-risk (peak > B). Targets (issue 4): warm <= 1.10 x the
wall of the best static column whose peak stays <= B, with peak <= B; cold <= 1.5 x.

Also: the RSS of a shim step waiting for memory (target <= 12 MiB) and the time admission
adds to a step when slots are free (target <= 2 ms).

ninja and shim are the ones installed beside this interpreter. Every build runs with a
private XDG_RUNTIME_DIR (memory and CPU pools), SHIM_CACHE_DIR and XDG_CONFIG_HOME, so
other shim users on the machine share no slots with the benchmark.
"""

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, HERE)
from overhead import timed, write_section  # noqa: E402

BEGIN, END = "<!-- memory:begin -->", "<!-- memory:end -->"
INTRO = ('`bench/memory.py`: the same builds with static ninja parallelism and under `shim build '
         '--budget B`, side by side in one run.')
HEADING = "## Memory admission (issue 4)"
MiB = 1 << 20
GiB = 1 << 30
PAGE = os.sysconf("SC_PAGE_SIZE")
TIMEOUT = 900          # seconds: a build taking longer than this is reported as a hang
WARM_TARGET, COLD_TARGET = 1.10, 1.5
WAIT_RSS_TARGET = 12 * MiB
ADMISSION_TARGET_MS = 2.0

# The generated project: (statements in one function, how many files). cc1 at -O2 peaks at
# roughly 80, 210, 400 and 600 MB for these on gcc 12 (measured again on every run).
GEN_LEVELS = [(2500, 4), (8500, 3), (14500, 2), (20000, 2)]


class Failure(Exception):
    pass


# --- measuring a build ---------------------------------------------------------------------

def descendants(root: int) -> list:
    from shim.driver.pauses import tree
    return tree(root)


def kill_tree(root: int) -> None:
    """SIGKILL *root* and every descendant (ninja puts each command in a process group of its own)."""
    for pid in descendants(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def wait_quiet(say, limit: float = 180.0) -> float:
    """Wait (at most *limit* s) until other processes use < 0.15 core for 4 s; returns the seconds waited."""
    start = time.monotonic()
    quiet = 0
    while time.monotonic() - start < limit:
        b0 = cpu_busy()
        time.sleep(2.0)
        load = (cpu_busy() - b0) / 2.0
        quiet = quiet + 1 if load < 0.15 else 0
        if quiet >= 2:
            break
    waited = time.monotonic() - start
    if waited > 6:
        say("  (waited %.0f s for the machine to be quiet%s)" % (waited, "" if quiet >= 2 else ": it was not"))
    return waited


def cpu_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Result:
    def __init__(self, wall, peak, samples, cpu, other_cpu, output):
        self.wall, self.peak, self.samples = wall, peak, samples
        self.cpu, self.other_cpu, self.output = cpu, other_cpu, output

    def summary_lines(self):
        return [line for line in self.output.splitlines() if line.startswith("shim: ")]


def run_build(argv, env, log_path) -> Result:
    """Run one build; raises Failure (with the command and the tail of its output) unless it exits 0."""
    with open(log_path, "wb") as log:
        busy0 = cpu_busy()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        from shim.driver.sampler import Sampler
        sampler = Sampler(proc.pid, interval=0.02)
        sampler.start()
        killer = threading.Timer(TIMEOUT, lambda: kill_tree(proc.pid))
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            kill_tree(proc.pid)
            proc.wait()
            raise
        finally:
            killer.cancel()
            sampler.stop()
        wall = time.perf_counter() - start
        busy1 = cpu_busy()
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(log_path, errors="replace") as f:
        output = f.read()
    if proc.returncode != 0:
        hung = " (killed after %d s: hang?)" % TIMEOUT if wall >= TIMEOUT else ""
        raise Failure("build failed with status %d%s:\n  $ %s\n%s" % (
            proc.returncode, hung, " ".join(argv), "\n".join(output.splitlines()[-40:])))
    cpu = usage.ru_utime + usage.ru_stime
    return Result(wall, sampler.peak, sampler.samples, cpu, max(0.0, busy1 - busy0 - cpu), output)


# --- projects ------------------------------------------------------------------------------

def ninja_bin():
    return os.path.join(BIN, "ninja")


def shim_bin():
    return os.path.join(BIN, "shim")


def clean(build_dir, env):
    subprocess.run([ninja_bin(), "-C", build_dir, "-t", "clean"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def add_pool(text: str, heavy, depth: int):
    """*text* with `pool = mem` in every rule *heavy* accepts; (new text, rules changed)."""
    out, changed = [], []
    for line in text.splitlines():
        out.append(line)
        if line.startswith("rule ") and heavy(line.split()[1]):
            out.append("  pool = mem")
            changed.append(line.split()[1])
    return "\n".join(out) + "\n", changed


def pool_manifest(build_dir: str, depth: int, heavy) -> str:
    """Write build-poolN.ninja (and pool copies of included rule files); returns its name."""
    name = "build-pool%d.ninja" % depth
    with open(os.path.join(build_dir, "build.ninja")) as f:
        lines = f.read().splitlines()
    changed = []
    for i, line in enumerate(lines):
        if line.startswith(("include ", "subninja ")):
            inc = line.split(None, 1)[1]
            with open(os.path.join(build_dir, inc)) as f:
                text, rules = add_pool(f.read(), heavy, depth)
            if rules:
                root, ext = os.path.splitext(inc)
                copy = "%s-pool%d%s" % (root, depth, ext)
                with open(os.path.join(build_dir, copy), "w") as f:
                    f.write(text)
                lines[i] = "include " + copy
                changed += rules
    text, rules = add_pool("\n".join(lines), heavy, depth)
    changed += rules
    if not changed:
        raise Failure("no compile or link rule found in %s/build.ninja" % build_dir)
    with open(os.path.join(build_dir, name), "w") as f:
        f.write("pool mem\n  depth = %d\n\n" % depth + text)
    return name


class Project:
    def __init__(self, name, title, plain, wrapped, targets, budget, heavy):
        self.name, self.title, self.plain, self.wrapped = name, title, plain, wrapped
        self.targets, self.budget, self.heavy = targets, budget, heavy
        self.notes = []


def corpus_projects(corpus: str):
    build = os.path.join(corpus, "build")
    for d in ("ninja", "ninja-wrapped", "sqlite", "sqlite-wrapped"):
        if not os.path.isfile(os.path.join(build, d, "build.ninja")):
            raise SystemExit("%s/%s has no build.ninja: run LAUNCHER=%s PYTHON=%s bash "
                             "bench/fetch-corpus.sh %s" % (build, d, shim_bin(), sys.executable, corpus))
    ninja = Project("ninja", "ninja 1.13.2 + gtest, target `all` (g++ -O2 -g)",
                    os.path.join(build, "ninja"), os.path.join(build, "ninja-wrapped"), ["all"], 1 * GiB,
                    lambda rule: rule in ("cxx", "link"))
    sqlite = Project("sqlite", "sqlite 3.53.2 amalgamation, default target (cc -O2 -g, shared + static)",
                     os.path.join(build, "sqlite"), os.path.join(build, "sqlite-wrapped"), [], 768 * MiB,
                     lambda rule: rule.startswith(("C_COMPILER__", "CXX_COMPILER__"))
                     or ("_LINKER__" in rule and "STATIC_LIBRARY" not in rule))
    return [ninja, sqlite]


def gen_function(name: str, stmts: int) -> str:
    out = ["int %s(const int *a) {" % name,
           "  int " + ", ".join("v%d = a[%d]" % (i, i) for i in range(16)) + ";"]
    for s in range(stmts):
        i, j, k = s % 16, (s * 7 + 3) % 16, (s * 5 + 1) % 16
        out.append("  v%d = v%d * %d + (v%d ^ a[%d]);" % (i, j, s % 97 + 1, k, s % 128))
    out.append("  return " + " + ".join("v%d" % i for i in range(16)) + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def gen_sources(src: str):
    """Write the generated project's sources into *src* (one large function per file, in a
    fixed, unsorted order: neither best nor worst case, and main.c); returns
    ([(name, statements)], object names)."""
    files = [stmts for stmts, count in GEN_LEVELS for _ in range(count)]
    random.Random(4).shuffle(files)
    names = []
    for i, stmts in enumerate(files):
        name = "f%02d_%d" % (i, stmts)
        with open(os.path.join(src, name + ".c"), "w") as f:
            f.write(gen_function("fn_" + name, stmts))
        names.append((name, stmts))
    with open(os.path.join(src, "main.c"), "w") as f:
        f.write("".join("int fn_%s(const int *);\n" % n for n, _ in names))
        f.write("int a[128];\nint main(void) {\n  int r = 0;\n")
        f.write("".join("  r += fn_%s(a);\n" % n for n, _ in names))
        f.write("  return r & 1;\n}\n")
    return names, [n for n, _ in names] + ["main"]


def gen_manifest(directory: str, src: str, objs: list, wrapped: bool) -> None:
    """The generated project's build.ninja in *directory*: gcc, or `shim cc`/`shim link`."""
    cc, link = ("shim cc", "shim link") if wrapped else ("gcc", "gcc")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "build.ninja"), "w") as f:
        f.write("src = %s\n\n" % src)
        f.write("rule cc\n  command = %s -O2 -c $in -o $out\n  description = CC $out\n\n" % cc)
        f.write("rule link\n  command = %s -o $out $in\n  description = LINK $out\n\n" % link)
        for o in objs:
            f.write("build %s.o: cc $src/%s.c\n" % (o, o))
        f.write("\nbuild prog: link %s\ndefault prog\n" % " ".join(o + ".o" for o in objs))


def gen_project(root: str, env: dict):
    """Write the generated project (src/, plain/, wrapped/); returns (Project, [(file, stmts, peak)])."""
    src = os.path.join(root, "src")
    os.makedirs(src)
    names, objs = gen_sources(src)
    files = [stmts for _, stmts in names]
    for variant in ("plain", "wrapped"):
        gen_manifest(os.path.join(root, variant), src, objs, variant == "wrapped")
    peaks = calibrate(src, [n for n, _ in names], env)
    project = Project("gen", "generated: %d gcc -O2 compiles of one large function each + 1 link" % len(files),
                      os.path.join(root, "plain"), os.path.join(root, "wrapped"), [], 1 * GiB,
                      lambda rule: rule in ("cc", "link"))
    return project, [(n, s, peaks[n]) for n, s in names]


def calibrate(src: str, names, env) -> dict:
    """Peak RSS of each compile (cc1, through wait4 of the gcc driver), two at a time."""
    gcc = shutil.which("gcc")
    out_dir = tempfile.mkdtemp(prefix="calib-", dir=os.path.dirname(src))
    todo, running, peaks = list(names), {}, {}
    while todo or running:
        while todo and len(running) < 2:
            n = todo.pop(0)
            argv = [gcc, "-O2", "-c", os.path.join(src, n + ".c"), "-o", os.path.join(out_dir, n + ".o")]
            running[os.posix_spawn(gcc, argv, env)] = n
        pid, status, usage = os.wait4(-1, 0)
        n = running.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise Failure("calibration compile of %s failed" % n)
        peaks[n] = usage.ru_maxrss * 1024
    shutil.rmtree(out_dir, ignore_errors=True)
    return peaks


# --- columns -------------------------------------------------------------------------------

STATIC = ["ninja -j1", "ninja -j2", "ninja -j3", "ninja -j4", "pool depth 1", "pool depth 2"]
SHIM = ["shim cold", "shim warm"]


def static_argv(project, column, manifests):
    argv = [ninja_bin(), "-C", project.plain]
    if column.startswith("ninja -j"):
        argv.append(column.split()[1])
    else:
        argv += ["-f", manifests[int(column.split()[-1])]]
    return argv + project.targets


def shim_argv(project):
    return [shim_bin(), "build", "-C", project.wrapped, "--budget", "%dMiB" % (project.budget // MiB)] + project.targets


def disturbed(r: Result) -> bool:
    """Other processes on the machine used more than 0.1 core on average during the run."""
    return r.other_cpu > max(5.0, 0.1 * r.wall)


def bench_project(project, env, logs, repeat, retries, quiet_limit, say):
    """{column: [Result, ...]}; a run disturbed by other load is run again (at most *retries* times)
    and the least disturbed run is kept (the others are listed in project.notes)."""
    manifests = {d: pool_manifest(project.plain, d, project.heavy) for d in (1, 2)}
    results = {c: [] for c in STATIC + SHIM}

    def once(column, attempt):
        log = os.path.join(logs, "%s-%s-%d-%d.log" % (project.name, column.replace(" ", ""),
                                                       len(results[column]), attempt))
        wait_quiet(say, quiet_limit)
        if column in SHIM:
            clean(project.wrapped, env)
            if column == "shim cold":
                shutil.rmtree(os.path.join(project.wrapped, ".shim"), ignore_errors=True)
            r = run_build(shim_argv(project), env, log)
        else:
            clean(project.plain, env)
            r = run_build(static_argv(project, column, manifests), env, log)
        say("  %-13s %7.1f s  peak %5d MiB  (%d samples, build CPU %.0f s, other CPU %.1f s%s)"
            % (column, r.wall, r.peak // MiB, r.samples, r.cpu, r.other_cpu,
               ", DISTURBED" if disturbed(r) else ""))
        for line in r.summary_lines():
            say("      " + line)
        return r

    def measure(column):
        runs = [once(column, 0)]
        while disturbed(runs[-1]) and len(runs) <= retries:
            runs.append(once(column, len(runs)))
        kept = min(runs, key=lambda r: r.other_cpu)
        for r in runs:
            if r is not kept:
                project.notes.append("%s run %d discarded as disturbed: %.1f s, peak %d MiB, %.0f s of other "
                                     "CPU on the machine" % (column, len(results[column]) + 1, r.wall,
                                                             r.peak // MiB, r.other_cpu))
        results[column].append(kept)

    say("%s: %s; B = %s" % (project.name, project.title, fmt_size(project.budget)))
    for column in STATIC + SHIM:
        measure(column)
    for _ in range(repeat - 1):
        for column in SHIM:
            measure(column)
        best = best_static(project, results)
        if best:
            measure(best)
    return results


def mean(rs, attr):
    return statistics.mean(getattr(r, attr) for r in rs)


def best_static(project, results):
    """The static column with the lowest mean wall among those whose every run peaked <= B."""
    ok = [c for c in STATIC if results[c] and all(r.peak <= project.budget for r in results[c])]
    return min(ok, key=lambda c: mean(results[c], "wall")) if ok else None


# --- waiting RSS and admission cost ---------------------------------------------------------

def waiting_rss(work: str, launcher: str, env: dict):
    """(max VmRSS, VmHWM, seconds observed) of `shim cc` waiting while `shim sleep` holds the pool."""
    from shim import admission
    # A budget of one slot: every step needs at least one, so the waiter waits for the holder
    # whatever the priors of `sleep` and `cc` are.
    env = dict(env, SHIM_MEMORY_BUDGET=str(admission.DEFAULT_UNIT))
    holder = subprocess.Popen([launcher, "sleep", "4"], cwd=work, env=env)
    time.sleep(0.5)
    waiter = subprocess.Popen([launcher, "cc", "-c", "tiny.c", "-o", "tiny.o"], cwd=work, env=env)
    rss = hwm = 0
    t0 = time.monotonic()
    observed = 0.0
    while holder.poll() is None and time.monotonic() - t0 < 3.0:
        time.sleep(0.05)
        try:
            with open("/proc/%d/status" % waiter.pid) as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            exe = os.readlink("/proc/%d/exe" % waiter.pid)
        except OSError:
            break
        if "python" not in os.path.basename(exe):
            break                     # it is no longer shim waiting: it became (or started) the tool
        rss = max(rss, int(status["VmRSS"].split()[0]) * 1024)
        hwm = max(hwm, int(status["VmHWM"].split()[0]) * 1024)
        observed = time.monotonic() - t0
    waited_early = waiter.poll() is not None and holder.poll() is None
    holder.wait()
    code = waiter.wait()
    if code != 0 or waited_early or not rss:
        raise Failure("waiting-RSS probe: the step did not wait for the pool (exit %s, observed %.2f s)"
                      % (code, observed))
    return rss, hwm, observed


def admission_cost(work: str, launcher: str, env: dict, rounds: int):
    variants = [("SHIM_MEMORY_BUDGET=off", "off"), ("SHIM_MEMORY_BUDGET=4GiB", "4GiB"),
                ("SHIM_MEMORY_BUDGET=%d (as shim build passes it)" % (4 * GiB), str(4 * GiB))]
    argv = [launcher, "cc", "-c", "tiny.c", "-o", "tiny.o"]
    samples = {name: [] for name, _ in variants}
    for name, value in variants:
        for _ in range(3):
            timed(argv, dict(env, SHIM_MODE="exec", SHIM_MEMORY_BUDGET=value), work)
    for r in range(rounds):
        k = r % len(variants)
        for name, value in variants[k:] + variants[:k]:
            samples[name].append(timed(argv, dict(env, SHIM_MODE="exec", SHIM_MEMORY_BUDGET=value), work))
    return [(name, statistics.median(samples[name])) for name, _ in variants]


def step_costs(root: str, env: dict, rounds: int):
    work = os.path.join(root, "steps")
    os.makedirs(work)
    with open(os.path.join(work, "tiny.c"), "w") as f:
        f.write("int twice(int x) { return 2 * x; }\n")
    subprocess.run([shim_bin(), "launcher", os.path.join(work, "fast")], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    fast = os.path.join(work, "fast", "shim")
    waits = [("shim build's launcher",) + waiting_rss(work, fast, env),
             ("installed bin/shim",) + waiting_rss(work, shim_bin(), env)]
    return waits, admission_cost(work, fast, env, rounds)


# --- report --------------------------------------------------------------------------------

def fmt_size(n: int) -> str:
    return "%g GiB" % (n / GiB) if n % GiB == 0 else "%d MiB" % (n // MiB)


def cell(rs, fn):
    return " / ".join(fn(r) for r in rs) if rs else "–"


def verdict(ratio, limit):
    return "met" if ratio <= limit else "MISSED by %.2f" % (ratio - limit)


def project_report(project, results, extra="") -> list:
    b = project.budget
    cols = STATIC + SHIM
    lines = ["### %s, B = %s" % (project.title, fmt_size(b)), ""]
    if extra:
        lines += [extra, ""]
    lines.append("| | " + " | ".join("`shim build --budget %s` %s" % (fmt_size(b), c.split()[1])
                                        if c in SHIM else c for c in cols) + " |")
    lines.append("|---|" + "---:|" * len(cols))
    lines.append("| wall | " + " | ".join(cell(results[c], lambda r: "%.1f s" % r.wall) for c in cols) + " |")
    lines.append("| aggregate peak (sampled) | " + " | ".join(
        cell(results[c], lambda r: "%d MiB" % (r.peak // MiB)) for c in cols) + " |")
    lines.append("| OOM-risk (peak > B) | " + " | ".join(
        cell(results[c], lambda r: "**yes**" if r.peak > b else "no") for c in cols) + " |")
    lines.append("| CPU used by other processes during the run | " + " | ".join(
        cell(results[c], lambda r: "%.0f s" % r.other_cpu) for c in cols) + " |")
    lines.append("")
    if project.notes:
        lines += ["Re-run because other load disturbed them (the least disturbed run is shown): "
                  + "; ".join(project.notes) + ".", ""]
    best = best_static(project, results)
    if not best:
        lines.append("No static configuration stayed within B: no ratio to compute.")
        return lines
    bw = mean(results[best], "wall")
    lines.append("Best static configuration with peak <= B: **%s**, %.1f s%s." % (
        best, bw, " (mean of %d runs)" % len(results[best]) if len(results[best]) > 1 else ""))
    lines.append("")
    for column, limit in (("shim warm", WARM_TARGET), ("shim cold", COLD_TARGET)):
        rs = results[column]
        ratio = mean(rs, "wall") / bw
        peak_ok = all(r.peak <= b for r in rs)
        lines.append("- %s / best = %.2f (%s%.1f s): target <= %.2f: **%s**; peak <= B: **%s** (%s)" % (
            column.split()[1], ratio, "mean of %d runs, " % len(rs) if len(rs) > 1 else "",
            mean(rs, "wall"), limit, verdict(ratio, limit),
            "met" if peak_ok else "MISSED", ", ".join("%d MiB" % (r.peak // MiB) for r in rs)))
    summaries = [(c, i, r) for c in SHIM for i, r in enumerate(results[c])]
    lines += ["", "shim build's own summary (first run of each):", "", "```"]
    for c, i, r in summaries:
        if i == 0:
            lines += ["[%s] %s" % (c.split()[1], s) for s in r.summary_lines()]
    lines.append("```")
    return lines


def steps_report(waits, costs, rounds) -> list:
    lines = ["### Per step: a waiting shim's memory, admission's cost", "",
             "| measurement | value | target |", "|---|---:|---|"]
    for name, rss, hwm, seen in waits:
        lines.append("| VmRSS of `shim cc` waiting for a full pool (%s; VmHWM %.1f MiB, watched %.1f s) "
                     "| %.1f MiB | <= 12 MiB: %s |" % (name, hwm / MiB, seen, rss / MiB,
                                                     "met" if rss <= WAIT_RSS_TARGET else
                                                     "MISSED by %.1f MiB" % ((rss - WAIT_RSS_TARGET) / MiB)))
    off = costs[0][1]
    for name, med in costs:
        if name.endswith("off"):
            lines.append("| `shim cc -c tiny.c` exec, %s | %.2f ms | |" % (name, med))
        else:
            added = med - off
            lines.append("| `shim cc -c tiny.c` exec, %s | %.2f ms (%+.2f ms) | <= %.0f ms added: %s |" % (
                name, med, added, ADMISSION_TARGET_MS, "met" if added <= ADMISSION_TARGET_MS else
                "MISSED by %.2f ms" % (added - ADMISSION_TARGET_MS)))
    lines += ["", "The waiting step is `shim cc` started while `shim sleep 4` holds the only slot of a "
              "one-slot budget (16 MiB); VmRSS read from /proc every 50 ms while it is still Python. "
              "Step timings: medians of %d alternating rounds, shim build's direct launcher, "
              "slots free." % rounds]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=os.path.expanduser("~/.cache/shim-corpus"),
                        help="fetch-corpus.sh DEST (default ~/.cache/shim-corpus)")
    parser.add_argument("--projects", default="gen,sqlite,ninja", help="comma-separated subset of gen,sqlite,ninja")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of the shim columns and the best static one (default 1)")
    parser.add_argument("--retries", type=int, default=1,
                        help="re-runs of a column disturbed by other load on the machine (default 1)")
    parser.add_argument("--quiet-wait", type=float, default=180.0, metavar="S",
                        help="before each build, wait at most S seconds for other load to stop (default 180)")
    parser.add_argument("--rounds", type=int, default=40, help="rounds of the per-step timing (>= 30)")
    parser.add_argument("--write", metavar="FILE", help="replace the memory section of FILE (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    for exe in (ninja_bin(), shim_bin()):
        if not os.path.isfile(exe):
            raise SystemExit("%s is missing: run this with the interpreter of a venv where shim is installed" % exe)
    started = time.time()
    root = tempfile.mkdtemp(prefix="shim-bench-mem-")
    os.makedirs(os.path.join(root, "logs"))
    run_dir = os.path.join(root, "run")
    os.makedirs(run_dir, mode=0o700)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SHIM_", "CCACHE", "NINJA_")) and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(XDG_RUNTIME_DIR=run_dir, SHIM_CACHE_DIR=os.path.join(root, "cache"),
               XDG_CONFIG_HOME=os.path.join(root, "config"), LC_ALL="C")

    def say(text):
        print(text, flush=True)

    def terminate(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)      # so that run_build's finally kills the build running now
    logs = os.path.join(root, "logs")
    say("work dir %s (logs in %s)" % (root, logs))
    sections = []
    try:
        waits, costs = step_costs(root, env, args.rounds)
        sections.append(steps_report(waits, costs, args.rounds))
        say("\n".join(sections[-1]))
        wanted = args.projects.split(",")
        projects = []
        if "gen" in wanted:
            say("generating and calibrating the generated project ...")
            gen, peaks = gen_project(os.path.join(root, "gen"), env)
            levels = {}
            for _n, stmts, peak in peaks:
                levels.setdefault(stmts, []).append(peak)
            extra = "cc1 peaks (measured once, wait4 of the gcc driver): " + "; ".join(
                "%d x %d statements: %s MiB" % (len(v), s, "/".join(str(p // MiB) for p in v))
                for s, v in sorted(levels.items())) + "; one link of the %d objects." % (len(peaks) + 1)
            say(extra)
            projects.append((gen, extra))
        corpus = {p.name: p for p in corpus_projects(args.corpus)} if set(wanted) & {"sqlite", "ninja"} else {}
        for name in ("sqlite", "ninja"):
            if name in wanted:
                projects.append((corpus[name], ""))
        for project, extra in projects:
            results = bench_project(project, env, logs, args.repeat, args.retries, args.quiet_wait, say)
            sections.insert(len(sections) - 1, project_report(project, results, extra))
            say("\n".join(sections[-2]))
    except Failure as e:
        say("STOPPED: %s" % e)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    elapsed = time.time() - started
    head = ["Command: `%s bench/memory.py --repeat %d --retries %d --quiet-wait %g%s` on %s, Python %s, %d CPUs, %d GiB RAM, gcc %s; "
            "the whole run took %.0f min." % (
                os.path.relpath(sys.executable), args.repeat, args.retries, args.quiet_wait,
                "" if args.projects == "gen,sqlite,ninja" else " --projects " + args.projects,
                time.strftime("%Y-%m-%d"), sys.version.split()[0], os.cpu_count(),
                round(os.sysconf("SC_PHYS_PAGES") * PAGE / GiB),
                subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip(),
                elapsed / 60),
            "",
            "Every column is a clean build (`ninja -t clean`; cold also deletes `.shim/`); the static "
            "columns build the plain tree with the PyPI ninja, the shim columns the wrapped tree "
            "(every compile and link through shim) with `shim build --budget B` and no -j (its "
            "jobserver: 4 edges in flight, 2 CPU slots). Pool columns: compile and link rules in "
            "`pool mem` of that depth, ninja's default -j (4 here). Aggregate peak: the sum of the RSS "
            "of every process under the build command (shim build itself included), sampled every "
            "20 ms. Warm is the clean build after cold, history kept. Other engineers use this machine: "
            "\"CPU used by other processes\" is the machine's busy time (/proc/stat) minus the build's own "
            "CPU; every run first waited (at most %.0f s) for 4 s with less than 0.15 core of it%s. "
            "%s Noise here is ±5–10 %% on a quiet machine."
            % (args.quiet_wait,
               "" if not args.retries else ", and a run with more than max(5 s, 0.1 x wall) of it was run "
               "again (at most %d times) and the least disturbed run kept" % args.retries,
               "One run per column." if args.repeat == 1 else
               "Shim columns and the best static one ran %d times (cells show each run, ratios use "
               "the means); the others once." % args.repeat),
            ""]
    text = "\n".join(head + [line for s in sections for line in s + [""]]).rstrip()
    say("\n" + text)
    if args.write:
        write_section(args.write, text, BEGIN, END, HEADING, INTRO)
    ledger = os.path.join(root, "gen", "wrapped", ".shim")
    if os.path.isdir(ledger):       # keep the generated build's ledger beside the logs (shim report)
        shutil.copytree(ledger, os.path.join(logs, "gen-wrapped-shim"), ignore=shutil.ignore_patterns("bin"))
    shutil.rmtree(os.path.join(root, "gen"), ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
