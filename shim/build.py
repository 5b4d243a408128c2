"""`shim build`: ninja run as a CI build, under a memory budget, with a summary.

What it adds around the ninja of the PyPI package:
- the fast launcher first on ninja's PATH (so `shim` in build files costs the least);
- a memory budget (detected, or --budget / SHIM_MEMORY_BUDGET / memory.budget),
  passed to every step as SHIM_MEMORY_BUDGET=<bytes>, and the estimates index
  rebuilt from the ledger so steps are admitted by their measured peaks;
- when the user gives no -j: a GNU make jobserver fifo (MAKEFLAGS=--jobserver-auth=
  fifo:PATH, which ninja >= 1.13 obeys) with twice as many tokens as cores, and
  SHIM_CPU_SLOTS=<cores> for the steps: more edges are in flight than cores, so a
  step waiting for memory does not idle a core, while shim admits the running
  ones by CPU and by memory;
- a sampler of the memory in use by ninja's process tree, and a closing summary
  (wall, aggregate peak, steps that waited, OOM retries, top memory steps), with
  a `build` record in the ledger.
"""

import os
import threading
import time

from shim import exit_status, host, ledger, size
from shim.exit_status import ShimError


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def remote_jobs(config: dict) -> int:
    """Edges to keep in flight for the launchers in use that have `jobs` (distcc hosts)."""
    from shim.host import program_stem
    chains = [t["launcher"] for t in config["tools"].values() if t.get("launcher")]
    chains += [s["launcher"] for s in config["steps"].values() if s.get("launcher")]
    jobs = [config["launchers"].get(program_stem(c[0]), {}).get("jobs") for c in chains]
    return max((j for j in jobs if j), default=0)


SHIM_FOOTPRINT = 10 << 20        # a waiting or spawning shim (measured 8.8 MiB)
BUILD_FOOTPRINT = 24 << 20       # shim build itself and ninja


def for_steps(budget: int, in_flight: int) -> int:
    """What the steps' reservations may add up to: the budget is for the whole build,
    so the shims that wait or spawn beside the tools (one per edge in flight, at most)
    and this process and ninja come off it first."""
    return max(budget - BUILD_FOOTPRINT - in_flight * SHIM_FOOTPRINT, budget // 2, 1 << 20)


def _jobs(ninja_args, cores: int) -> int:
    """The -j N of *ninja_args*, else ninja's default (cores + 2)."""
    for i, a in enumerate(ninja_args):
        if a.startswith("-j"):
            value = a[2:] or (ninja_args[i + 1] if i + 1 < len(ninja_args) else "")
            if value.isdigit() and int(value) > 0:
                return int(value)
    return cores + 2


def gives_jobs(ninja_args) -> bool:
    """Whether the user chose ninja's parallelism (-j N) or runs a tool/dry run."""
    return any(a.startswith("-j") or a.startswith("-t") or a == "-n" for a in ninja_args)


def tidy(run_dir: str, now: float = None) -> None:
    """Remove what dead builds left in the runtime directory: the jobserver fifo of a
    `shim build` that was killed (-9 leaves no chance to clean up), and warn-once markers
    older than a day."""
    now = time.time() if now is None else now
    try:
        names = os.listdir(run_dir)
    except OSError:
        return
    for name in names:
        path = os.path.join(run_dir, name)
        try:
            if name.startswith("jobserver-") and name[10:].isdigit():
                if not host.pid_alive(int(name[10:])):
                    os.unlink(path)
            elif name.startswith("warned-") and now - os.lstat(path).st_mtime > 86400:
                os.unlink(path)
        except OSError:
            pass


class Jobserver:
    """A GNU make jobserver fifo holding tokens for ninja (POSIX only)."""

    def __init__(self, directory: str, tokens: int):
        self.path = os.path.join(directory, "jobserver-%d" % os.getpid())
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.mkfifo(self.path, 0o600)
        # Hold it open read-write: the tokens live as long as this descriptor does.
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        os.write(self.fd, b"+" * tokens)
        self.tokens = tokens

    def makeflags(self, jobs: int) -> str:
        return "-j%d --jobserver-auth=fifo:%s" % (jobs, self.path)

    def close(self) -> None:
        os.close(self.fd)
        try:
            os.unlink(self.path)
        except OSError:
            pass


class Sampler(threading.Thread):
    """Sums the RSS of a process tree every *interval* seconds; keeps the peak."""

    def __init__(self, root_pid_getter, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root = root_pid_getter
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.stopping = threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE")

    def run(self):
        while not self.stopping.wait(self.interval):
            pid = self.root()
            if pid:
                self.peak = max(self.peak, self.tree_rss(pid))
                self.samples += 1

    def tree_rss(self, pid: int) -> int:
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            try:
                with open("/proc/%d/statm" % p) as f:
                    total += int(f.read().split()[1]) * self.page
                with open("/proc/%d/task/%d/children" % (p, p)) as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError, IndexError):
                continue
        return total

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=2)


def rewrap(directory: str, ninja: str, env: dict) -> int:
    """`--wrap`: let the generator bring build.ninja up to date first (CMake's RERUN_CMAKE
    edge regenerates it, unwrapped), then wrap it; 0 or ninja's failing status.

    Ninja reloads a manifest it has just regenerated and goes on with it, so wrapping
    must happen between the two: building the manifest alone, then the targets, does it.
    Wrapping is idempotent, so an unchanged manifest costs a parse and nothing else.
    """
    from shim import wrap
    finished = host.spawn_program(ninja, [ninja, "-C", directory, "build.ninja"], dict(env, MAKEFLAGS=""),
                                  die_with_parent=True)
    if finished.code != 0:
        return finished.code if finished.code is not None else 128 + finished.signal
    manifest = os.path.join(directory, "build.ninja")
    if wrap.run(manifest, check=True, quiet=True) != 0:
        wrap.run(manifest)
    return 0


def run(directory: str, ninja: str, ninja_args: list, env: dict, budget_request=None, echo=print,
        rewrap_first: bool = False) -> int:
    """Build in *directory*; returns ninja's exit status (or dies of its signal)."""
    from shim import budget as budget_mod
    from shim import estimates, launcher, records, rundir, toolchain
    build_dir = os.path.abspath(directory)
    # First: what shim build warns about, and its steps, is then "this build" (warned once).
    build_id = "%x-%d" % (int(time.time() * 1e6), os.getpid())
    env["SHIM_BUILD_ID"] = build_id
    try:
        bindir = os.path.dirname(launcher.write(os.path.join(build_dir, ".shim", "bin")))
    except ShimError as e:   # a read-only build dir: the installed launcher still works
        echo("shim: warning: %s; using the installed launcher" % e)
        bindir = os.path.dirname(os.path.abspath(os.environ.get("_", "") or "shim"))
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if rewrap_first:
        status = rewrap(directory, ninja, env)
        if status:
            return status
    try:
        config = toolchain.load(build_dir, env)
    except ShimError:
        config = None              # the steps will say what is wrong with toolchain.toml
    request = budget_request or env.get("SHIM_MEMORY_BUDGET") or (config and config["memory"]["budget"]) or "auto"
    try:
        budget, reasons = budget_mod.resolve(request)
    except ValueError as e:
        raise ShimError("memory budget %r: %s" % (request, e), exit_status.USAGE) from None
    ledger_dir = ledger.directory(build_dir, env, config or {}, require_build_dir=False)
    if budget and ledger_dir:
        _, history = records.load(ledger_dir, build_dir, "all")
        try:
            estimates.rebuild(ledger_dir, history)
        except OSError:
            pass     # the steps warn about the unwritable ledger; admission falls back to priors
    jobserver = None
    n = cores()
    if host.PLATFORM != "windows" and not gives_jobs(ninja_args) and "--jobserver-auth" not in env.get("MAKEFLAGS", ""):
        try:
            in_flight = max(2, 2 * n, remote_jobs(config) if config else 0)
            run_dir = rundir.ensure(env)
            tidy(run_dir)
            jobserver = Jobserver(run_dir, in_flight - 1)
            env["MAKEFLAGS"] = jobserver.makeflags(in_flight)
            env["SHIM_CPU_SLOTS"] = str(n)
        except OSError as e:
            echo("shim: warning: no jobserver (%s); ninja chooses its parallelism" % e)
            jobserver = None

    in_flight = jobserver.tokens + 1 if jobserver else _jobs(ninja_args, n)
    steps_budget = for_steps(budget, in_flight) if budget else None
    env["SHIM_MEMORY_BUDGET"] = str(steps_budget) if budget else "off"
    t0 = time.time()
    child = []
    sampler = Sampler(lambda: child[0] if child else None)

    def started(pid):
        child.append(pid)
        sampler.start()          # only now: ninja is forked from a process with no other thread

    try:
        finished = host.spawn_program(ninja, [ninja, "-C", directory] + list(ninja_args), env,
                                      on_start=started, die_with_parent=True)
    finally:
        if child:
            sampler.stop()
        if jobserver:
            jobserver.close()
    t1 = time.time()
    if ledger_dir:
        ledger.append(ledger_dir, {"rec": "build", "id": build_id, "b": build_id, "t0": t0, "t1": t1,
                                   "exit": finished.code, "sig": finished.signal,
                                   "argv": ["-C", directory] + list(ninja_args), "budget": budget,
                                   "steps_budget": steps_budget,
                                   "peak": sampler.peak, "jobs": jobserver.tokens + 1 if jobserver else None},
                      env)
        for line in summary(ledger_dir, build_dir, build_id, t1 - t0, budget, sampler.peak,
                            jobserver.tokens + 1 if jobserver else None):
            echo(line)
    if finished.signal is not None:
        host.die_of_signal(finished.signal)
    return finished.code


def summary(ledger_dir, build_dir, build_id, wall, budget, peak, jobs) -> list:
    """The closing lines of `shim build`."""
    from shim import records
    recs = [r for r in records.read(ledger_dir) if r.get("b") == build_id]
    steps = records.steps_of(recs, build_dir)
    waited = [s for s in steps if (s.get("wait") or 0) >= 0.05]
    cpu_waited = [s for s in steps if (s.get("cpu_wait") or 0) >= 0.05]
    retries = [r for r in recs if r.get("retry")]
    over = ""
    if budget and peak > budget:
        over = " - %s OVER the budget" % size.format(peak - budget)
    lines = ["shim: %d steps in %.1fs; budget %s; peak memory in use %s (sampled%s)%s" % (
        len(steps), wall, size.format(budget) if budget else "off", size.format(peak), over,
        "; %d edges in flight on %d cores" % (jobs, cores()) if jobs else "")]
    lines.append("shim: %d steps waited for memory (longest %.1fs), %d for a core; %d out-of-memory retries"
                 % (len(waited), max((s["wait"] for s in waited), default=0.0), len(cpu_waited), len(retries)))
    known = [(s["rss"], "") if s["rss"] else (s["est"], "~") if s.get("src") == "history" else (None, "")
             for s in steps]
    top = sorted(((m, mark, s) for (m, mark), s in zip(known, steps) if m), key=lambda x: -x[0])[:3]
    if top:
        lines.append("shim: top memory: " + ", ".join(
            "%s%s %s" % (mark, size.format(m), s["out"][0] if s["out"] else s["tool"]) for m, mark, s in top)
            + (" (~ learned earlier: exec'd steps are not measured)" if any(mark for _, mark, _ in top) else ""))
    return lines
