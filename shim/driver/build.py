"""A build tool run as a CI build: the plan, budget, jobserver, sampled peak, record and summary.

What `shim build` (shim/driver/ninja.py) and `shim cargo` (shim/driver/cargo.py) share:
- the fast launcher first on the build tool's PATH (so `shim` in build files costs the least);
- a memory budget (detected, or --budget / SHIM_MEMORY_BUDGET / memory.budget), passed to
  every step as SHIM_MEMORY_BUDGET=<bytes> after the build's own footprint is taken off,
  and the estimates index rebuilt from the ledger so steps are admitted by their measured
  peaks;
- a GNU make jobserver fifo (MAKEFLAGS=--jobserver-auth=fifo:PATH, which ninja >= 1.13
  obeys) with twice as many tokens as cores, and SHIM_CPU_SLOTS=<cores> for the steps:
  more edges are in flight than cores, so a step waiting for memory does not idle a core,
  while shim admits the running ones by CPU and by memory;
- the sampled peak of the build tool's process tree, and a closing summary (wall,
  aggregate peak, steps that waited, OOM retries, top memory steps), with a `build`
  record in the ledger.

The process runner is a parameter (`spawn`, host.spawn_program's signature, as ninja's
CommandRunner), so these decisions are unit-tested without a build tool. Output is plain
writes to stdout and stderr: no click here.
"""

import os
import sys
import time

from shim import admission, host, ledger, size
from shim.driver.sampler import Sampler
from shim.exit_status import ShimError

SHIM_FOOTPRINT = 4 << 20         # a waiting or spawning shim: 3.3 MiB of its own (smaps Private_Dirty); the
                                 # rest of its 9 MiB RSS is the interpreter's shared pages, charged once
BUILD_FOOTPRINT = 24 << 20       # shim build itself and ninja


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    sys.stderr.write("shim: warning: %s\n" % message)
    sys.stderr.flush()


def note(message: str) -> None:
    """A one-line `shim: ...` on stderr: what the driver chose, when the user should know."""
    sys.stderr.write("shim: %s\n" % message)
    sys.stderr.flush()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def remote_jobs(config: dict) -> int:
    """Edges to keep in flight for the launchers in use that have `jobs` (distcc hosts)."""
    chains = [t["launcher"] for t in config["tools"].values() if t.get("launcher")]
    chains += [s["launcher"] for s in config["steps"].values() if s.get("launcher")]
    jobs = [config["launchers"].get(host.program_stem(c[0]), {}).get("jobs") for c in chains]
    return max((j for j in jobs if j), default=0)


def for_steps(budget: int, in_flight: int, footprint: int = BUILD_FOOTPRINT) -> int:
    """What the steps' reservations may add up to: the budget is for the whole build,
    so the shims that wait or spawn beside the tools (one per edge in flight, at most)
    and this process and the build tool (*footprint*: ninja, cargo) come off it first."""
    return max(budget - footprint - in_flight * SHIM_FOOTPRINT, budget // 2, 1 << 20)


def worth_in_flight(plan, kind: str, tool: str = None, footprint: int = BUILD_FOOTPRINT) -> int:
    """Steps worth keeping in flight: two per core, so that a step waiting for memory does
    not idle a core; one per core where the steps' budget admits no more than one step
    per core at the prior of a *kind* step (of *tool*): there the extra ones could only
    wait in line for memory, and the build tool's own order (cargo's and ninja's critical
    path first) would give way to the order in which their shims happened to take slots
    (measured: cargo in 384 MiB started `quote`, on the path to serde, after `regex-syntax`)."""
    from shim import estimates
    n = cores()
    if plan.budget and plan.config:
        prior, _ = estimates.prior(kind, plan.config, plan.config["tools"].get(tool) if tool else None)
        if prior and for_steps(plan.budget, 2 * n, footprint) // prior <= n:
            return max(n, 2)
    return max(2, 2 * n)


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


class Plan:
    """What the driver decided before starting the build tool (*runner*: its name)."""

    def __init__(self, build_dir: str, env: dict, runner: str = "ninja"):
        self.build_dir, self.env, self.runner = build_dir, env, runner
        self.config = self.ledger_dir = self.jobserver = self.ledger_mark = None
        self.budget = self.steps_budget = None
        self.build_id = ""


def start(plan: Plan) -> str:
    """Name the build (SHIM_BUILD_ID: what it warns about, and its steps, are then "this
    build", warned once), keep the OOM killer off the driver, and put the fast launcher
    first on PATH; returns its path."""
    plan.build_id = plan.env["SHIM_BUILD_ID"] = "%x-%d" % (int(time.time() * 1e6), os.getpid())
    protect_self()
    return _put_launcher_first(plan)


DRIVER_OOM_SCORE = -900


def protect_self() -> None:
    """oom_score_adj -900 for this process, hence for the build tool and the shims it starts
    (inherited; a step's tool still takes 500): when memory runs out the kernel kills a
    step, which is retried, never the driver, ninja or a shim waiting for memory, whose
    death would fail the build. Lowering needs privileges (root, CAP_SYS_RESOURCE); without
    them nothing changes. -900, not -1000: the kernel may still kill it rather than none."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(DRIVER_OOM_SCORE))
    except OSError:
        pass


def max_in_flight(budget: int) -> int:
    """The most edges worth running at once under *budget*: each waits in a shim of its own
    (SHIM_FOOTPRINT), and the waiting shims may take at most a quarter of the budget."""
    return max(cores() + 2, budget // 4 // SHIM_FOOTPRINT)


def finish(finished) -> int:
    """The build tool's exit status, or die of its signal as it did."""
    if finished.signal is not None:
        host.die_of_signal(finished.signal)
    return finished.code


def installed_launcher() -> str:
    """The `shim` installed beside the running Python (the venv's bin: bin/shim runs the
    python beside it), else the program this process was started as, else plain `shim`
    (found on PATH). Never `$_`: the shell sets it to what it ran, which is `env`,
    `timeout` or nothing of shim's when one of those or another program started us."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "shim")
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    for candidate in (beside, argv0):
        if host.program_stem(candidate) == "shim" and os.access(candidate, os.X_OK):
            return candidate
    return "shim"


def _put_launcher_first(plan: Plan) -> str:
    """The fast launcher in .shim/bin, first on the build tool's PATH (so `shim` costs the
    least); returns its path."""
    from shim.generators import launcher
    try:
        path = launcher.write(os.path.join(plan.build_dir, ".shim", "bin"))
    except OSError as e:   # a read-only build dir: the installed launcher still works
        path = installed_launcher()
        warn("cannot write the fast launcher in %s/.shim/bin (%s); using the installed one (%s)"
             % (plan.build_dir, e.strerror or e, path))
    if os.path.dirname(path):
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


def serve_jobs(plan: Plan) -> None:
    """A jobserver with two tokens per core (one per core where the budget is small:
    worth_in_flight; or the launchers' `jobs`) and CPU slots for the steps; none on Windows
    or under a jobserver already (a make above us)."""
    from shim import rundir
    env = plan.env
    if host.PLATFORM == "windows" or "--jobserver-auth" in env.get("MAKEFLAGS", ""):
        return
    n = cores()
    try:
        in_flight = max(worth_in_flight(plan, "compile"), remote_jobs(plan.config) if plan.config else 0)
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
    # Anonymous memory, as the steps are measured and admitted: summed RSS counts the build
    # tool's, the shims' and every rustc's shared libraries once per process, and said "OVER
    # the budget" of a cargo build whose cgroup never came near it.
    watcher = pause_watcher(plan)
    sampler = Sampler(lambda: child[0] if child else None, anon=True,
                      each=watcher.pace if watcher else None)

    def started(pid):
        child.append(pid)
        sampler.start()          # only now: the tool is forked from a process with no other thread

    try:
        finished = spawn(program, argv, plan.env, on_start=started, die_with_parent=True)
    finally:
        if child:
            sampler.stop()
        if watcher:
            watcher.release()
        if plan.jobserver:
            plan.jobserver.close()
    return finished, sampler.peak


def pause_watcher(plan: Plan):
    """The pause watcher of the pool the steps are admitted into (shim/driver/pauses.py),
    run by the sampler; None when there is no budget or pausing is off."""
    if not plan.steps_budget:
        return None
    from shim import budget, rundir
    from shim.driver import pauses
    found = budget.limit(plan.env)
    unit = ((plan.config or {}).get("memory") or {}).get("unit") or admission.DEFAULT_UNIT
    unit, total = admission.geometry(plan.steps_budget, unit, found[0] if found else None)
    try:
        pool = admission.pool_path(rundir.ensure(plan.env), unit)
    except OSError:
        return None
    return pauses.for_build(pool, total, plan.env, plan.config, plan.build_id)


def run_tool(plan: Plan, program: str, args: list, spawn, jobs, chosen, footprint: int, what: str) -> int:
    """The end shared by `shim cargo` and `shim go`: the steps' budget for what runs at once
    (*jobs* we chose, else the number the user *chose*, else one per core, each beside a tool
    of *footprint* bytes), then *program* *args* sampled, recorded (counting *what*) and its
    exit status."""
    in_flight = jobs or (int(chosen) if chosen and chosen.isdigit() and int(chosen) > 0 else cores())
    plan.steps_budget = for_steps(plan.budget, in_flight, footprint) if plan.budget else None
    plan.env["SHIM_MEMORY_BUDGET"] = str(plan.steps_budget) if plan.budget else "off"
    t0 = time.time()
    finished, peak = run_sampled(plan, program, [program] + list(args), spawn)
    record_build(plan, args, t0, time.time(), finished, peak, jobs, what)
    return finish(finished)


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
                        plan.runner, since=plan.ledger_mark):
        say(line)
    from shim.reports import compact
    compact.maybe(plan.ledger_dir, plan.config)       # the last ledger.keep_builds builds, ledger.max_size


def summary(ledger_dir, build_dir, build_id, wall, budget, peak, jobs, what: str = "edges",
            runner: str = "ninja", since=None) -> list:
    """The closing lines of `shim build` and `shim cargo` (*runner*: the build tool; *since*:
    records.mark() of the ledger at its start, so only this build's part is read)."""
    from shim.reports import fields, records
    recs = [r for r in records.read(ledger_dir, since) if r.get("b") == build_id]
    steps = records.steps_of(recs, build_dir)
    waited = [s for s in steps if (s.get("wait") or 0) >= 0.05]
    cpu_waited = [s for s in steps if (s.get("cpu_wait") or 0) >= 0.05]
    retries = [r for r in recs if r.get("retry")]
    over = ""
    if budget and peak > budget:
        over = " - %s OVER the budget" % size.format(peak - budget)
    lines = ["shim: %d steps in %.1fs; budget %s; sampled build peak %s (%s and all under it%s)%s" % (
        len(steps), wall, size.format(budget) if budget else "off", size.format(peak), runner, over,
        "; %d %s in flight on %d cores" % (jobs, what, cores()) if jobs else "")]
    pauses = [r for r in recs if r.get("rec") == "pause"]
    lines.append("shim: %d steps waited for memory (longest %.1fs), %d for a core; %d out-of-memory retries; "
                 "%d pauses (longest %.1fs)"
                 % (len(waited), max((s["wait"] for s in waited), default=0.0), len(cpu_waited), len(retries),
                    len(pauses), max((r.get("dur") or 0 for r in pauses), default=0.0)))
    known = [(s["rss"], "") if s["rss"] else (s["est"], "~") if s.get("src") == "history" else (None, "")
             for s in steps]
    top = sorted(((m, mark, s) for (m, mark), s in zip(known, steps) if m), key=lambda x: -x[0])[:3]
    if top:
        lines.append("shim: top memory: " + ", ".join(
            "%s%s %s" % (mark, size.format(m), fields.name_of(s)) for m, mark, s in top)
            + (" (~ learned earlier: exec'd steps are not measured)" if any(mark for _, mark, _ in top) else ""))
    return lines
