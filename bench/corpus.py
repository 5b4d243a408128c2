"""Real projects, wrapped vs unwrapped: clean `ninja -j2` builds of libuv, abseil and ninja.

    .venv/bin/python bench/corpus.py [--rounds 6] [--rounds-for abseil=4] [--corpus DIR]
                                     [--write BENCHMARKS.md]

The corpus comes from bench/fetch-corpus.sh (a copy of ../shared/corpus's), run here every time with LAUNCHER=shim
(so PATH picks the launcher) and DEST `<corpus>/bench`, whose `src` links to the corpus's
sources: the build dirs are this benchmark's own (bench/memory.py builds in the corpus's at the
same time, configured with another LAUNCHER). Each project has an unwrapped build dir
`<name>` and a wrapped one `<name>-wrapped` (CMake compiler and linker launchers;
`CXX="shim g++"` for ninja's configure.py), both RelWithDebInfo / -O2 -g. Every variant is a
clean build (`ninja -t clean` first, untimed) by the same plain `ninja -j2` (no `shim build`:
its jobserver and CPU admission would differ), so only the wrapper differs:

- unwrapped: `<name>`;
- exec / spawn: `<name>-wrapped` with SHIM_MODE=exec / spawn, and `shim` resolving to the
  direct `#!python -IS` launcher `shim launcher DIR` writes (DIR first on PATH), the fastest
  a user gets; for libuv also through the installed bin/shim (it starts through /bin/sh).

SHIM_MEMORY_BUDGET=off (this measures the wrapper's per-step cost, not admission); the ledger
stays on (it is part of that cost). Each round runs every variant of every project once, the
order of a project's variants rotating from round to round. Round 1 is cold (page cache,
toolchain cache) and reported apart; medians are of rounds 2..N. Wall is fork-to-wait of
ninja, CPU its children's user+system time (wait4).
Targets (issue 5): exec <= 1.02 on abseil and ninja, <= 1.08 on libuv; spawn <= 1.04 / <= 1.12.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
NINJA = os.path.join(BIN, "ninja")
FETCH = os.path.join(HERE, "fetch-corpus.sh")      # vendored from ../shared/corpus
BEGIN, END = "<!-- corpus:begin -->", "<!-- corpus:end -->"
HEADING = "## Real projects, wrapped vs unwrapped (issue 5)"
INTRO = """
Clean builds of three projects of the corpus (bench/fetch-corpus.sh) (-O2 -g, plain `ninja -j2`), each through
its unwrapped build dir and its wrapped one (CMake compiler and linker launchers, or
`CXX="shim g++"` for ninja's configure.py). `bench/corpus.py` says how; the ratios are
wrapped / unwrapped median wall.
"""

# project: (ninja target or None for the default, exec target, spawn target)
PROJECTS = {"libuv": (None, 1.08, 1.12), "abseil": (None, 1.02, 1.04), "ninja": ("all", 1.02, 1.04)}
INSTALLED_TOO = ("libuv",)
SHIM_WORD = re.compile(r"(^|(?<=[\s;&|(]))shim\s")


class Variant:
    def __init__(self, project, name, directory, mode, path):
        self.project, self.name, self.directory, self.mode, self.path = project, name, directory, mode, path
        self.wall, self.cpu = [], []


def clean_env(path: str, mode) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIM_", "NINJA_", "MAKEFLAGS", "CCACHE_"))}
    env.update(PATH=path, SHIM_MEMORY_BUDGET="off")
    if mode:
        env["SHIM_MODE"] = mode
    return env


def commands(directory: str, target) -> list:
    argv = [NINJA, "-C", directory, "-t", "commands"] + ([target] if target else [])
    return subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()


def compare_commands(corpus: str, name: str, target) -> tuple:
    """(steps, steps through shim, [differences other than `shim` and the build dir's path])."""
    build = os.path.join(corpus, "build")

    def own_path(directory):
        return re.compile(re.escape(directory) + r"(?![\w.-])")

    plain_dir, wrapped_dir = own_path(os.path.join(build, name)), own_path(os.path.join(build, name + "-wrapped"))
    plain = [plain_dir.sub("BUILD", c) for c in commands(os.path.join(build, name), target)]
    wrapped = commands(os.path.join(build, name + "-wrapped"), target)
    through = sum(1 for c in wrapped if SHIM_WORD.search(c))
    unshimmed = [wrapped_dir.sub("BUILD", SHIM_WORD.sub("", c)) for c in wrapped]
    differences = []
    for a, b in zip(plain, unshimmed):
        if a != b:
            extra = sorted(set(a.split()) ^ set(b.split()))
            differences.append(" ".join(extra))
    if len(plain) != len(wrapped):
        differences.append("%d vs %d commands" % (len(plain), len(wrapped)))
    return len(wrapped), through, sorted(set(differences))


def configure(corpus: str, path: str) -> str:
    """Configure the build dirs under *corpus*/bench (sources shared); return that DEST."""
    dest = os.path.join(corpus, "bench")
    os.makedirs(dest, exist_ok=True)
    if not os.path.lexists(os.path.join(dest, "src")):
        os.makedirs(os.path.join(corpus, "src"), exist_ok=True)
        os.symlink(os.path.join("..", "src"), os.path.join(dest, "src"))
    env = clean_env(path, None)
    env.update(LAUNCHER="shim", PYTHON=sys.executable)
    print("configuring: LAUNCHER=shim bash %s %s" % (os.path.relpath(FETCH), dest), flush=True)
    result = subprocess.run(["bash", FETCH, dest], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise SystemExit("fetch-corpus.sh failed:\n" + result.stdout[-4000:])
    return dest


def timed_build(variant: Variant, target, log: str, echo) -> tuple:
    """(wall s, CPU s, CPU s of other processes meanwhile) of one clean build of *variant*, tried again (after a pause) when it
    fails: other engineers reinstall this venv while the bench runs, and a build that starts
    `shim` in the middle of `pip install` fails."""
    for attempt in range(3):
        result = _timed_build(variant, target, log)
        if result is not None:
            return result
        with open(log) as f:
            failure = f.read()[-3000:]
        echo("%s %s failed (attempt %d), trying again in 30 s:\n%s" % (variant.project, variant.name,
                                                                     attempt + 1, failure))
        time.sleep(30)
    raise SystemExit("%s %s failed three times" % (variant.project, variant.name))


def busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (/proc/stat, all CPUs)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)       # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(echo, threshold: float = 0.3, sample: float = 2.0, patience: int = 30) -> None:
    """Wait (polling every minute, at most *patience* minutes) while other processes keep more
    than *threshold* of a core busy: another engineer's build would skew one variant."""
    for minute in range(patience + 1):
        before = busy_seconds()
        time.sleep(sample)
        busy = (busy_seconds() - before) / sample
        if busy <= threshold:
            return
        if minute == patience:
            echo("  still %.2f cores busy after %d min: going on" % (busy, patience))
            return
        echo("  %.2f cores busy with other work: waiting a minute" % busy)
        time.sleep(60)


def _timed_build(variant: Variant, target, log: str):
    env = clean_env(variant.path, variant.mode)
    subprocess.run([NINJA, "-C", variant.directory, "-t", "clean"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    argv = [NINJA, "-C", variant.directory, "-j2"] + ([target] if target else [])
    actions = [(os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    busy = busy_seconds()
    start = time.perf_counter()
    pid = os.posix_spawn(NINJA, argv, env, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        return None
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, max(0.0, busy_seconds() - busy - cpu)


def per_step_figures(benchmarks: str) -> dict:
    """{'exec': ms, 'spawn': ms} added to a tiny compile, from BENCHMARKS.md's overhead section."""
    figures = {}
    try:
        with open(benchmarks) as f:
            text = f.read()
    except OSError:
        return figures
    for mode in ("exec", "spawn"):
        m = re.search(r"\| shim cc, %s \(shim build's launcher\) \| [\d.]+ ms \| \+([\d.]+) ms" % mode, text)
        if m:
            figures[mode] = float(m.group(1))
    return figures


def measure(corpus: str, rounds: dict, work: str, log) -> tuple:
    fast = os.path.join(work, "fast")
    subprocess.run([os.path.join(BIN, "shim"), "launcher", fast], check=True, stdout=subprocess.DEVNULL)
    base_path = os.environ.get("PATH", "")
    fast_path = os.pathsep.join([fast, BIN, base_path])
    installed_path = os.pathsep.join([BIN, base_path])
    for path, expected in ((fast_path, os.path.join(fast, "shim")), (installed_path, os.path.join(BIN, "shim"))):
        found = shutil.which("shim", path=path)
        if found != expected:
            raise SystemExit("`shim` on PATH is %s, not %s" % (found, expected))
    dest = configure(corpus, fast_path)

    build = os.path.join(dest, "build")
    projects = {}
    for name in rounds:
        target = PROJECTS[name][0]
        steps, through, differences = compare_commands(dest, name, target)
        variants = [Variant(name, "unwrapped", os.path.join(build, name), None, fast_path)]
        for mode in ("exec", "spawn"):
            variants.append(Variant(name, mode, os.path.join(build, name + "-wrapped"), mode, fast_path))
        if name in INSTALLED_TOO:
            for mode in ("exec", "spawn"):
                variants.append(Variant(name, mode + ", installed bin/shim", os.path.join(build, name + "-wrapped"),
                                        mode, installed_path))
        projects[name] = dict(target=target, steps=steps, through=through, differences=differences,
                              variants=variants, cold={})
        log("%s: %d steps, %d through shim%s" % (name, steps, through, "; commands differ beyond `shim`: %s"
                                                  % "; ".join(differences) if differences else ""))

    loads, others = [], []
    for r in range(max(rounds.values())):
        for name, p in projects.items():
            if r >= rounds[name]:
                continue
            k = r % len(p["variants"])
            for v in p["variants"][k:] + p["variants"][:k]:
                for attempt in range(3):
                    wait_until_quiet(log)
                    load = os.getloadavg()[0]
                    wall, cpu, other = timed_build(v, p["target"], os.path.join(work, "ninja.log"), log)
                    if other <= max(2.0, 0.05 * cpu) or attempt == 2:
                        break
                    log("  %s %s: other processes took %.1f s of CPU meanwhile: built again"
                        % (name, v.name, other))
                loads.append(load)
                if r == 0:
                    p["cold"][v.name] = wall
                else:
                    v.wall.append(wall)
                    v.cpu.append(cpu)
                    others.append(other)
                log("round %d %-6s %-26s %7.2f s wall %7.2f s CPU; others %5.2f s CPU; load %.2f"
                    % (r + 1, name, v.name, wall, cpu, other, loads[-1]))
    return projects, loads, others


def caveat(cpu_step: float, tiny) -> str:
    """What to make of a per-step CPU figure far from the tiny-compile one."""
    if tiny is None:
        return ""
    if cpu_step < 0.5 * tiny:
        return (" The CPU grew by less than half a start-up per step, so most of the wall difference is "
                "this machine's run-to-run noise.")
    if cpu_step > 2 * tiny:
        return (" More than twice the tiny-compile figure: the rest grows with the step (longer command "
                "lines to parse and record) or is noise.")
    return ""


def command_line(rounds: dict) -> str:
    """The options that reproduce *rounds*."""
    common = statistics.mode(rounds.values())
    options = ["--rounds %d" % common] + ["--rounds-for %s=%d" % (n, k) for n, k in rounds.items() if k != common]
    if len(rounds) < len(PROJECTS):
        options += ["--only %s" % n for n in rounds]
    return " ".join(options)


def verdict(ratio: float, limit: float) -> str:
    return "<= %.2f: %s" % (limit, "met" if ratio <= limit else "MISSED by %.3f" % (ratio - limit))


def report(projects: dict, rounds: dict, loads: list, others: list, figures: dict, load_at_start) -> str:
    lines = [
        "Command: `%s bench/corpus.py %s` on %s, Python %s, %d CPUs, ninja %s"
        % (os.path.relpath(sys.executable, REPO), command_line(rounds), time.strftime("%Y-%m-%d"),
           sys.version.split()[0], os.cpu_count(),
           subprocess.run([NINJA, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()),
        "",
        "| project | variant | median wall | ratio | target | per-round ratios | median CPU "
        "| added wall / step | added CPU / step |",
        "|---|---|---:|---:|---|---|---:|---:|---:|",
    ]
    notes = []
    for name, p in projects.items():
        plain = p["variants"][0]
        w0, c0 = statistics.median(plain.wall), statistics.median(plain.cpu)
        for v in p["variants"]:
            w, c = statistics.median(v.wall), statistics.median(v.cpu)
            if v is plain:
                lines.append("| %s (%d steps, %d through shim) | unwrapped | %.2f s | | | | %.1f s | | |"
                             % (name, p["steps"], p["through"], w, c))
                continue
            mode = "spawn" if v.mode == "spawn" else "exec"
            limit = PROJECTS[name][1 if mode == "exec" else 2]
            ratio = w / w0
            paired = sorted(a / b for a, b in zip(v.wall, plain.wall))
            wall_step = (w - w0) / p["through"] * 1000
            cpu_step = (c - c0) / p["through"] * 1000
            lines.append("| | %s | %.2f s | %.3f | %s | %.3f–%.3f | %.1f s | %+.1f ms | %+.1f ms |"
                         % (v.name, w, ratio, verdict(ratio, limit), paired[0], paired[-1], c, wall_step, cpu_step))
            if ratio > limit:
                tiny = (" vs %+.2f ms added to a tiny compile in the per-step overhead section" % figures[mode]
                        if mode in figures else "")
                notes.append(
                    "- %s, %s: MISSED by %.3f. %+.1f s of wall over %d steps through shim is %+.1f ms per "
                    "step at -j2, and the build's CPU grew by %+.1f ms per step%s, against %.0f ms of CPU "
                    "per step unwrapped (%+.1f %%). That is the per-step start of shim: the interpreter "
                    "(%s), the hot-path bundle, the toolchain cache read and the ledger line%s."
                    % (name, v.name, ratio - limit, w - w0, p["through"], wall_step, cpu_step, tiny,
                       c0 / p["steps"] * 1000, (c / c0 - 1) * 100,
                       "through /bin/sh first" if "installed" in v.name else "the direct launcher",
                       "; spawn adds a second process (posix_spawn of the tool, wait4)" if mode == "spawn" else "")
                    + caveat(cpu_step, figures.get(mode)))
    lines.append("")
    lines.append("Medians of rounds 2..N (%s); round 1 was cold and is left out: %s."
                 % (", ".join("%s %d" % (n, k - 1) for n, k in rounds.items()),
                    "; ".join("%s %s" % (n, ", ".join("%s %.1f s" % (k, s) for k, s in p["cold"].items()))
                              for n, p in projects.items())))
    lines.append("SHIM_MEMORY_BUDGET=off (the wrapper's per-step cost, not admission); ledger on. "
                 "\"added … / step\": (wrapped − unwrapped) / steps through shim; at -j2 two steps "
                 "share the wall, so CPU per step is the figure to compare with the per-step overhead "
                 "section%s." % (" (%s)" % ", ".join("%s %+.2f ms" % kv for kv in figures.items()) if figures else ""))
    for name, p in projects.items():
        if p["differences"]:
            why = (" (fetch-corpus.sh's configure.py probes `$CXX` as one program, so `shim g++` fails "
                   "its -fdiagnostics-color probe; the flag only colours diagnostics)"
                   if "-fdiagnostics-color" in " ".join(p["differences"]) else "")
            lines.append("%s: the two build dirs' commands differ beyond `shim`: %s%s."
                         % (name, "; ".join(p["differences"]), why))
    lines.append("Each build waited until other processes kept under 0.3 of a core busy, and was "
                 "built again (up to twice) when they took more than 5 %% of its CPU meanwhile; during "
                 "the kept builds they used %.1f–%.1f s of CPU (median %.1f s). Load (1-min average) "
                 "before the first build: %.2f; before each build %.2f–%.2f, median %.2f (a build's "
                 "own ninja -j2 leaves about 2 behind)."
                 % (min(others), max(others), statistics.median(others), load_at_start, min(loads),
                    max(loads), statistics.median(loads)))
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def write_corpus_section(path: str, text: str) -> None:
    sys.path.insert(0, HERE)
    from overhead import write_section
    write_section(path, text, BEGIN, END, HEADING, INTRO)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per project, the first cold (default 6)")
    parser.add_argument("--rounds-for", action="append", default=[], metavar="NAME=N",
                        help="rounds for one project (e.g. abseil=4)")
    parser.add_argument("--only", action="append", choices=sorted(PROJECTS), help="projects to build (default all)")
    parser.add_argument("--corpus", default=os.environ.get("SHIM_CORPUS_DIR")
                        or os.path.expanduser("~/.cache/shim-corpus"),
                        help="the corpus (fetch-corpus.sh's DEST); build dirs go to CORPUS/bench")
    parser.add_argument("--write", metavar="FILE", help="replace the corpus section of FILE (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    rounds = {name: args.rounds for name in (args.only or PROJECTS)}
    for item in args.rounds_for:
        name, _, k = item.partition("=")
        if name not in rounds:
            parser.error("--rounds-for: unknown project %r" % name)
        rounds[name] = int(k)
    if min(rounds.values()) < 2:
        parser.error("at least 2 rounds: the first is cold")
    load_at_start = os.getloadavg()[0]
    work = tempfile.mkdtemp(prefix="shim-bench-corpus-")
    try:
        projects, loads, others = measure(args.corpus, rounds, work, lambda s: print(s, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(projects, rounds, loads, others, per_step_figures(args.write or os.path.join(REPO, "BENCHMARKS.md")),
                  load_at_start)
    print(text)
    if args.write:
        write_corpus_section(args.write, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
