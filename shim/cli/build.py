"""`shim build`: ninja run as a CI build, under a memory budget, with a summary.

What it adds around the ninja of the PyPI package:
- the fast launcher first on ninja's PATH (so `shim` in build files costs the least);
- a memory budget (detected, or --budget / SHIM_MEMORY_BUDGET / memory.budget),
  passed to every step as SHIM_MEMORY_BUDGET=<bytes> (the steps admit themselves by
  the peaks they learned, shim/estimates.py: nothing of the ledger is read at start);
- when the user gives no -j: a GNU make jobserver fifo (MAKEFLAGS=--jobserver-auth=
  fifo:PATH, which ninja >= 1.13 obeys) with twice as many tokens as cores, and
  SHIM_CPU_SLOTS=<cores> for the steps: more edges are in flight than cores, so a
  step waiting for memory does not idle a core, while shim admits the running
  ones by CPU and by memory;
- a sampler of the memory in use by ninja's process tree, and a closing summary
  (wall, aggregate peak, steps that waited, OOM retries, top memory steps), with
  a `build` record in the ledger, which is then kept to its bound (reports/compact.py).

The process runner is a parameter (`spawn`, as ninja's CommandRunner), so the driver's
decisions (budget, jobserver, environment, summary) are unit-tested without a ninja.
"""

import os
import threading
import time

import click

from shim import budget as grammar

from shim import admission, exit_status, host, ledger, size
from shim.exit_status import ShimError


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-C", "directory", default=None, metavar="DIR",
              help="Build in DIR (where build.ninja is), as ninja -C.")
@click.option("--mode", type=click.Choice(["exec", "spawn", "auto"]),
              help="Run every step in this mode (sets SHIM_MODE for the build).")
@click.option("--budget", metavar="SIZE",
              help="Memory budget: " + grammar.DESCRIPTION + ".")
@click.option("--wrap", "rewrap", is_flag=True,
              help="Bring a generated build.ninja up to date, then `shim wrap` it, then build "
                   "(survives CMake regenerating it).")
@click.argument("ninja_args", nargs=-1, type=click.UNPROCESSED)
def build(directory, mode, budget, rewrap, ninja_args):
    """Run ninja in DIR, admitting its steps into a memory budget.

    The ninja is the PyPI package's (1.13+). NINJA_ARGS go to ninja unchanged (targets,
    -j N, -k N, -v, -n ...). Without -j, ninja gets a jobserver with 2 tokens per core and
    shim admits the steps by CPU and memory. Ends with a summary; `shim report` tells the rest.
    """
    where = directory or "."
    if directory is not None and not os.path.isdir(directory):
        raise ShimError("-C %s: no such directory" % directory, exit_status.USAGE)
    if not os.path.isfile(os.path.join(where, "build.ninja")) and not _has_f(ninja_args):
        raise ShimError("no build.ninja in %s%s" % (os.path.abspath(where), "" if directory else " (use -C DIR)"),
                        exit_status.USAGE)
    env = dict(os.environ)
    if mode:
        env["SHIM_MODE"] = mode
    return run(where, ninja_binary(), list(ninja_args), env, budget, rewrap_first=rewrap)


def _has_f(args) -> bool:
    return any(a == "-f" or a.startswith("-f") and not a.startswith("-f=") for a in args)


def ninja_binary() -> str:
    """The ninja of the PyPI `ninja` package (1.13+), not whatever is first on PATH."""
    try:
        import ninja
    except ImportError:
        raise ShimError("the Python package 'ninja' is not installed (pip install ninja)",
                        exit_status.NOT_FOUND) from None
    path = os.path.join(ninja.BIN_DIR, "ninja.exe" if host.PLATFORM == "windows" else "ninja")
    if not os.path.isfile(path):
        raise ShimError("the ninja package has no binary at %s" % path, exit_status.NOT_FOUND)
    return path


def warn(message: str) -> None:
    click.echo("shim: warning: %s" % message, err=True)


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


def for_steps(budget: int, in_flight: int, footprint: int = BUILD_FOOTPRINT) -> int:
    """What the steps' reservations may add up to: the budget is for the whole build,
    so the shims that wait or spawn beside the tools (one per edge in flight, at most)
    and this process and the build tool (*footprint*: ninja, cargo) come off it first."""
    return max(budget - footprint - in_flight * SHIM_FOOTPRINT, budget // 2, 1 << 20)


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
    """Sums the RSS of a process tree (host.tree_rss) every *interval* seconds; keeps the peak."""

    def __init__(self, root_pid_getter, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root = root_pid_getter
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(self.interval):
            pid = self.root()
            if pid:
                self.peak = max(self.peak, host.tree_rss(pid))
                self.samples += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=2)


def rewrap(directory: str, ninja: str, env: dict, spawn=host.spawn_program) -> int:
    """`--wrap`: let the generator bring build.ninja up to date first (CMake's RERUN_CMAKE
    edge regenerates it, unwrapped), then wrap it; 0 or ninja's failing status.

    Ninja reloads a manifest it has just regenerated and goes on with it, so wrapping
    must happen between the two: building the manifest alone, then the targets, does it.
    Wrapping is idempotent, so an unchanged manifest costs a parse and nothing else.
    """
    from shim.cli import wrap
    finished = spawn(ninja, [ninja, "-C", directory, "build.ninja"], dict(env, MAKEFLAGS=""),
                     die_with_parent=True)
    if finished.code != 0:
        return finished.code if finished.code is not None else 128 + finished.signal
    wrap.ensure_wrapped(os.path.join(directory, "build.ninja"))
    return 0


class Plan:
    """What `shim build` decided before starting ninja."""

    def __init__(self, build_dir: str, env: dict, runner: str = "ninja"):
        self.build_dir, self.env, self.runner = build_dir, env, runner
        self.config = self.ledger_dir = self.jobserver = self.ledger_mark = None
        self.budget = self.steps_budget = None
        self.build_id = ""


def run(directory: str, ninja: str, ninja_args: list, env: dict, budget_option=None,
        rewrap_first: bool = False, spawn=host.spawn_program) -> int:
    """Build in *directory*; returns ninja's exit status (or dies of its signal). *spawn*
    runs ninja (host.spawn_program's signature): tests pass a stand-in."""
    plan = Plan(os.path.abspath(directory), env)
    start(plan)
    if rewrap_first:
        status = rewrap(directory, ninja, env, spawn)
        if status:
            return status
    choose_budget(plan, budget_option)
    _serve_jobs(plan, ninja_args)
    in_flight = plan.jobserver.tokens + 1 if plan.jobserver else _jobs(ninja_args, cores())
    plan.steps_budget = for_steps(plan.budget, in_flight) if plan.budget else None
    env["SHIM_MEMORY_BUDGET"] = str(plan.steps_budget) if plan.budget else "off"
    t0 = time.time()
    finished, peak = run_sampled(plan, ninja, [ninja, "-C", directory] + list(ninja_args), spawn)
    jobs = plan.jobserver.tokens + 1 if plan.jobserver else None
    record_build(plan, ["-C", directory] + list(ninja_args), t0, time.time(), finished, peak, jobs)
    return finish(finished)


def start(plan: Plan) -> str:
    """Name the build (SHIM_BUILD_ID: what it warns about, and its steps, are then "this
    build", warned once) and put the fast launcher first on PATH; returns its path."""
    plan.build_id = plan.env["SHIM_BUILD_ID"] = "%x-%d" % (int(time.time() * 1e6), os.getpid())
    return _put_launcher_first(plan)


def finish(finished) -> int:
    """The build tool's exit status, or die of its signal as it did."""
    if finished.signal is not None:
        host.die_of_signal(finished.signal)
    return finished.code


def _put_launcher_first(plan: Plan) -> str:
    """The fast launcher in .shim/bin, first on the build tool's PATH (so `shim` costs the
    least); returns its path."""
    from shim.generators import launcher
    try:
        path = launcher.write(os.path.join(plan.build_dir, ".shim", "bin"))
    except OSError as e:   # a read-only build dir: the installed launcher still works
        warn("cannot write the fast launcher in %s/.shim/bin (%s); using the installed one"
             % (plan.build_dir, e.strerror or e))
        path = os.path.join(os.path.dirname(os.path.abspath(os.environ.get("_", "") or "shim")), "shim")
    plan.env["PATH"] = os.path.dirname(path) + os.pathsep + plan.env.get("PATH", "")
    return path


def choose_budget(plan: Plan, option) -> None:
    """The budget (admission.budget, `auto` by default). The estimates index is the steps'
    own (estimates.observe): the ledger's history is not read (only a ledger that never had
    an index gets one, once)."""
    from shim import estimates, toolchain
    from shim.reports import records
    try:
        plan.config = toolchain.load(plan.build_dir, plan.env)
    except ShimError:
        plan.config = None         # the steps will say what is wrong with toolchain.toml
    plan.budget = admission.budget(plan.env, plan.config, option, default="auto")
    plan.ledger_dir = ledger.directory(plan.build_dir, plan.env, plan.config or {}, require_build_dir=False)
    plan.ledger_mark = records.mark(plan.ledger_dir) if plan.ledger_dir else None
    if plan.budget and plan.ledger_dir and not os.path.isdir(os.path.join(plan.ledger_dir, estimates.DIRNAME)) \
            and os.path.isfile(os.path.join(plan.ledger_dir, ledger.FILENAME)):
        _, history = records.load(plan.ledger_dir, plan.build_dir, "all")
        try:
            estimates.rebuild(plan.ledger_dir, history)
        except OSError:
            pass     # the steps warn about the unwritable ledger; admission falls back to priors


def _serve_jobs(plan: Plan, ninja_args: list) -> None:
    """Without -j: a jobserver with two tokens per core (or the launchers' `jobs`) and CPU
    slots for the steps."""
    from shim import rundir
    env = plan.env
    if host.PLATFORM == "windows" or gives_jobs(ninja_args) or "--jobserver-auth" in env.get("MAKEFLAGS", ""):
        return
    n = cores()
    try:
        in_flight = max(2, 2 * n, remote_jobs(plan.config) if plan.config else 0)
        run_dir = rundir.ensure(env)
        tidy(run_dir)
        plan.jobserver = Jobserver(run_dir, in_flight - 1)
        env["MAKEFLAGS"] = plan.jobserver.makeflags(in_flight)
        env["SHIM_CPU_SLOTS"] = str(n)
    except OSError as e:
        warn("no jobserver (%s); ninja chooses its parallelism" % e)
        plan.jobserver = None


def run_sampled(plan: Plan, program: str, argv: list, spawn):
    """(how the build tool ended, sampled peak of its process tree)."""
    child = []
    sampler = Sampler(lambda: child[0] if child else None)

    def started(pid):
        child.append(pid)
        sampler.start()          # only now: ninja is forked from a process with no other thread

    try:
        finished = spawn(program, argv, plan.env, on_start=started, die_with_parent=True)
    finally:
        if child:
            sampler.stop()
        if plan.jobserver:
            plan.jobserver.close()
    return finished, sampler.peak


def record_build(plan: Plan, argv, t0, t1, finished, peak, jobs, what: str = "edges") -> None:
    """The `build` record in the ledger (*argv*: what the build tool was given), and the
    closing summary (*jobs* of *what* in flight, when shim chose the parallelism)."""
    if not plan.ledger_dir:
        return
    ledger.append(plan.ledger_dir, {"rec": "build", "id": plan.build_id, "b": plan.build_id, "runner": plan.runner,
                                    "t0": t0, "t1": t1,
                                    "exit": finished.code, "sig": finished.signal,
                                    "argv": list(argv), "budget": plan.budget,
                                    "steps_budget": plan.steps_budget, "peak": peak, "jobs": jobs}, plan.env)
    for line in summary(plan.ledger_dir, plan.build_dir, plan.build_id, t1 - t0, plan.budget, peak, jobs, what,
                        since=plan.ledger_mark):
        click.echo(line)
    from shim.reports import compact
    compact.maybe(plan.ledger_dir, plan.config)       # the last ledger.keep_builds builds, ledger.max_size


def summary(ledger_dir, build_dir, build_id, wall, budget, peak, jobs, what: str = "edges", since=None) -> list:
    """The closing lines of `shim build` (*since*: records.mark() of the ledger at its start)."""
    from shim.reports import fields, records
    recs = [r for r in records.read(ledger_dir, since) if r.get("b") == build_id]
    steps = records.steps_of(recs, build_dir)
    waited = [s for s in steps if (s.get("wait") or 0) >= 0.05]
    cpu_waited = [s for s in steps if (s.get("cpu_wait") or 0) >= 0.05]
    retries = [r for r in recs if r.get("retry")]
    over = ""
    if budget and peak > budget:
        over = " - %s OVER the budget" % size.format(peak - budget)
    lines = ["shim: %d steps in %.1fs; budget %s; sampled build peak %s (ninja and all under it%s)%s" % (
        len(steps), wall, size.format(budget) if budget else "off", size.format(peak), over,
        "; %d %s in flight on %d cores" % (jobs, what, cores()) if jobs else "")]
    lines.append("shim: %d steps waited for memory (longest %.1fs), %d for a core; %d out-of-memory retries"
                 % (len(waited), max((s["wait"] for s in waited), default=0.0), len(cpu_waited), len(retries)))
    known = [(s["rss"], "") if s["rss"] else (s["est"], "~") if s.get("src") == "history" else (None, "")
             for s in steps]
    top = sorted(((m, mark, s) for (m, mark), s in zip(known, steps) if m), key=lambda x: -x[0])[:3]
    if top:
        lines.append("shim: top memory: " + ", ".join(
            "%s%s %s" % (mark, size.format(m), fields.name_of(s)) for m, mark, s in top)
            + (" (~ learned earlier: exec'd steps are not measured)" if any(mark for _, mark, _ in top) else ""))
    return lines
