"""The hot path: one build step from `shim TOOL ARGS...` to the real tool.

In process: find the toolchain (cached), pick the tool, read the arguments
(@files too), apply the rewrite rules, choose exec or spawn, and under a memory
budget wait for slots worth the step's expected peak. Then exec (shim becomes the
tool: its memory and process are gone, exit status and signals are the tool's by
construction, and the tool holds the reservation) or spawn and wait (exit code,
peak RSS, CPU times; a signal death is re-raised; an out-of-memory failure is
retried alone with the tool's low_memory rewrites, its message held back from the
log). Every step leaves a ledger record. Imports are limited to shim/hotpath.py's list.
"""

import errno
import gc
import sys

from shim import admission, digest, estimates, family, host, ledger, oom, pattern, program, rewrite, rundir
from shim import args as args_mod
from shim import budget as budget_mod
from shim import toolchain, watcher
from shim.exit_status import BAD_INPUT, NOT_EXECUTABLE, NOT_FOUND, OS_ERROR, USAGE, ShimError

MAX_DEPTH = 8   # shim running shim this deep is a loop (PATH or tool.X.program pointing back)

# Why exec/posix_spawn failed -> exit status, as a shell would answer.
_EXEC_ERRORS = {errno.ENOENT: NOT_FOUND, errno.ENOTDIR: NOT_FOUND, errno.EACCES: NOT_EXECUTABLE,
                errno.ENOEXEC: NOT_EXECUTABLE, errno.EPERM: NOT_EXECUTABLE, errno.EISDIR: NOT_EXECUTABLE,
                errno.ETXTBSY: NOT_EXECUTABLE, errno.ELOOP: NOT_EXECUTABLE}


def choose_mode(requested: str, exec_supported: bool, known: bool = False) -> str:
    """The mode a step really runs in: exec where the platform can, else spawn.

    `auto` execs once the step's memory is *known* (measured lately with the same
    arguments) and spawns to measure it otherwise.
    """
    if exec_supported and (requested == "exec" or (requested == "auto" and known)):
        return "exec"
    return "spawn"


def select_tool(config: dict, name: str):
    """(tool id or None, tool rules, program to run) for `shim NAME`.

    A tool id from toolchain.toml wins; otherwise NAME is a program (launcher form,
    `shim /usr/bin/g++ -c a.cc`) whose rules come from the tool whose `names` match.
    """
    tools = config["tools"]
    tool = tools.get(name)
    if tool is not None:
        return name, tool, tool["program"] or name
    stem = host.program_stem(name)
    tool_id = config["names"].get(family.alias(name) or stem)
    if tool_id is None:
        for pat, candidate in config["name_patterns"]:
            if pattern.match(stem, pat):
                tool_id = candidate
                break
    return tool_id, tools.get(tool_id, _NO_RULES), name


_NO_RULES = dict(rewrite.EMPTY, program=None, family=None, kind=None, mode=None, launcher=None,
                 memory=None, low_memory=rewrite.EMPTY)
_LAUNCHER_DEFAULTS = {"remote": False, "memory_factor": 1.0, "jobs": None, "env_set": {}}


def launcher_of(config: dict, tool: dict, kind: str):
    """The launcher chain for a step: tool.<id>.launcher, else step.<kind>.launcher."""
    chain = tool["launcher"]
    if chain is None:
        chain = (config["steps"].get(kind) or {}).get("launcher")
    return chain or None


def requested_mode(config: dict, env: dict, tool: dict, kind: str, budget) -> str:
    """SHIM_MODE, else tool.<id>.mode, else step.<kind>.mode, else defaults.mode,
    else auto under a memory budget and exec without one."""
    step = config["steps"].get(kind)
    mode = (env.get("SHIM_MODE") or tool["mode"] or (step and step["mode"]) or config["mode"]
            or ("auto" if budget else "exec"))
    if mode not in ("exec", "spawn", "auto"):
        raise ShimError("SHIM_MODE=%s: expected exec, spawn or auto" % mode, USAGE)
    return mode


def oom_score(env: dict, config: dict) -> int:
    """The oom_score_adj a step's tool runs with: SHIM_OOM_SCORE_ADJ, else
    memory.oom_score_adj; under `shim build` one more per second since the build began,
    so that of steps alike the kernel kills the youngest (which lost the least work)."""
    text = env.get("SHIM_OOM_SCORE_ADJ")
    if text:
        if not text.isdigit() or int(text) > 1000:
            raise ShimError("SHIM_OOM_SCORE_ADJ=%s: expected a whole number from 0 to 1000" % text, USAGE)
        value = int(text)
    else:
        value = config["memory"].get("oom_score_adj", 500)
    if not value:
        return 0
    started = env.get("SHIM_BUILD_ID", "").partition("-")[0]
    try:
        value += max(0, int(ledger.now() - int(started, 16) / 1e6)) if started else 0
    except ValueError:
        pass
    return min(value, 1000)


def _self_ids() -> frozenset:
    try:
        st = host.stat(sys.argv[0])
    except (OSError, ValueError, IndexError):
        return frozenset()
    return frozenset(((st.st_dev, st.st_ino),))


class _Admission:
    """What memory admission decided for one step."""

    __slots__ = ("pool", "unit", "total", "estimate", "source", "entry", "reservation", "guessed")

    def __init__(self):
        self.pool = self.entry = self.reservation = None
        self.unit = self.total = self.estimate = 0
        self.source = ""
        self.guessed = False        # a guess this build has not borne out: admitted below the pause mark


def _plan(budget, config, env, ledger_dir, key, kind, tool, name):
    """Where to reserve and how much, or None when admission is off or impossible here."""
    plan = _Admission()
    peaks = None
    if ledger_dir:
        plan.entry = estimates.lookup(ledger_dir, key, env)
        if plan.entry is None:            # cold: what its siblings measured so far in this build
            peaks = estimates.measured(ledger_dir, name, kind, rundir.build_identity(env))
    plan.estimate, plan.source = estimates.estimate(plan.entry, kind, config, tool, estimates.siblings(peaks))
    plan.guessed = plan.source != "history" and not estimates.borne_out(peaks, plan.estimate)
    found = budget_mod.limit(env)
    plan.unit, plan.total = admission.geometry(budget, config["memory"]["unit"], found[0] if found else None)
    try:
        place, dfd = rundir.dir_fd(env)
        plan.pool = admission.pool_path(place, plan.unit)
        admission.open_pool(plan.pool, dfd)     # acquire() takes it from there
    except OSError as e:
        rundir.warn_once("memory", "no memory admission: %s" % e, env)
        return None
    return plan


def _launch_env(conf: dict, env: dict, ledger_dir) -> None:
    """A launcher's env.set, with {ledger_dir} and {build_dir} filled in."""
    if not conf["env_set"]:
        return
    places = {"ledger_dir": ledger_dir or "", "build_dir": ledger.build_dir(ledger_dir) if ledger_dir else ""}
    for name, value in conf["env_set"].items():
        for key, place in places.items():
            value = value.replace("{%s}" % key, place)
        env[name] = value


def _cpu_slot(env: dict, owner: str):
    """One of SHIM_CPU_SLOTS slots (set by `shim build`, which runs more edges than cores)."""
    cores = env.get("SHIM_CPU_SLOTS", "")
    if not cores.isdigit() or int(cores) < 1:
        return None
    try:
        place, dfd = rundir.dir_fd(env)
        path = admission.cpu_pool_path(place, int(cores))
        admission.open_pool(path, dfd)
        return admission.acquire(path, int(cores), 1, 1, owner=owner)
    except OSError as e:
        rundir.warn_once("cpu", "no CPU admission: %s" % (e.strerror or e), env)
        return None


class _Step:
    """Everything decided about one step before it runs."""

    __slots__ = ("config", "tool_id", "tool", "name", "parsed", "args", "env", "path", "run_path",
                 "prefix", "launcher", "ledger_dir", "record", "plan", "cpu", "mode", "owner", "oom_score", "low")


def run(name: str, argv: list, env: dict):
    """Run tool *name* with arguments *argv*; returns only on spawn (the exit status)."""
    step = _prepare(name, argv, env)
    _admit(step)
    record = step.record
    if step.mode == "exec":
        if record:
            ledger.append(step.ledger_dir, record, step.env)    # the end comes from .ninja_log later
        _execute(step, step.args, step.env, exec_=True)
    gc.enable()                  # off since the launcher (shim/generators/launcher.py): this step stays
    watch = _watch(step)
    retries = step.config["memory"]["oom_retries"] if step.plan else 0
    finished = _execute(step, step.args, step.env, capture=bool(step.plan or watch), watch=watch,
                        hold=retries > 0)
    attempt = 0
    while oom.ran_out(finished) and attempt < retries:
        attempt += 1
        # The out-of-memory message of an attempt that is retried stays unshown: a log
        # scanner must not take gcc's "fatal error: Killed signal" for the build's.
        if not family.get(step.parsed.family).replays_stderr:
            _to_stderr(b"shim: %s ran out of memory (%s): running it again alone, retry %d of %d\n" % (
                _named(step), _ending(finished), attempt, retries))
        finished = _retry_alone(step, finished, attempt, hold=attempt < retries)
    _to_stderr(finished.withheld)       # the last attempt's (if any): its failure is the step's
    if step.record:
        _finish(step.record, finished, step.ledger_dir, step.env, _budget_of(step))
    if finished.signal is not None:
        host.die_of_signal(finished.signal)
    return finished.code


def _prepare(name: str, argv: list, env: dict) -> _Step:
    """Tool, arguments, environment, program, launcher, ledger record: no waiting yet."""
    if not name:
        raise ShimError("no tool given (usage: shim TOOL ARGS..., or shim --help)", USAGE)
    depth = env.get("SHIM_DEPTH", "0")
    depth = int(depth) if depth.isdigit() else 0
    try:
        cwd = host.getcwd()
    except OSError as e:
        raise ShimError("cannot get the current directory: %s" % (e.strerror or e), OS_ERROR) from None
    s = _Step()
    # A family's step may start outside its build (cargo runs rustc in the package's source,
    # go runs asm there): the family says where the build is (shim/family.py locate).
    fam = family.get(args_mod.family_of(name))
    if fam.locate is None and argv:         # `shim W /path/rustc ARGS`: a wrapper in front
        fam = family.get(args_mod.family_of(argv[0]))
    located = fam.locate(argv, cwd, env) if fam.locate else None
    base = located[0] if located else cwd
    s.config = config = toolchain.load(base, env)
    s.tool_id, s.tool, prog = select_tool(config, name)
    inline = []
    if s.tool_id is None and argv and not argv[0].startswith("-") and host.program_stem(prog) in args_mod.LAUNCHERS:
        # `shim ccache c++ ARGS` (shim wrap's form of a rule whose generator wrote the launcher):
        # c++'s step, run through that chain, which replaces the toolchain's launcher so
        # that ccache does not run twice. `shim ccache -s` is ccache's own command.
        inline = [prog]
        while len(argv) > 1 and host.program_stem(argv[0]) in args_mod.LAUNCHERS:
            inline.append(argv[0])
            argv = argv[1:]
        name, argv = argv[0], argv[1:]
        s.tool_id, s.tool, prog = select_tool(config, name)
    if depth >= MAX_DEPTH:
        raise ShimError("shim is running itself in a loop (%d levels deep at tool %r, program %r): "
                        "check PATH and tool.%s.program" % (depth, name, prog, s.tool_id or name), USAGE)
    fam_name = s.tool["family"] or args_mod.family_of(prog)
    wrapped = []
    if fam_name == "other" and argv and family.get(args_mod.family_of(argv[0])).wrapped:
        # A wrapper in front of a tool (cargo runs `shim W /path/rustc ARGS` when RUSTC_WORKSPACE_WRAPPER
        # is W): the step is the tool's, with the tool's rules, run as `W /path/rustc ARGS`.
        wrapped, argv, fam_name = argv[:1], argv[1:], args_mod.family_of(argv[0])
        tool_id, tool, _ = select_tool(config, wrapped[0])
        if tool_id:
            s.tool_id, s.tool = tool_id, tool
    s.name = s.tool_id or host.program_stem(name)
    fam = family.get(fam_name)
    s.parsed = args_mod.parse(argv, fam_name, cwd, s.tool["kind"] or "")
    s.args = rewrite.arguments(s.tool, argv)
    s.env = env = rewrite.environment(s.tool, env)
    self_ids = _self_ids()
    s.path = program.resolve(prog, s.tool_id or name, env.get("PATH", ""), cwd, self_ids)
    env["SHIM_DEPTH"] = str(depth + 1)
    # A probe (rustc -vV, cargo's `___`) only asks the tool something: it leaves no record.
    s.ledger_dir = None if s.parsed.probe else ledger.directory(base, env, config, require_build_dir=not located)
    s.record = _record(s.name, prog, s.path, s.parsed, cwd, s.ledger_dir, s.args, env) if s.ledger_dir else None
    if s.record and s.parsed.detail is not None and fam.facts:
        s.record.update(fam.facts(s.parsed.detail, env, located[1] if located else None))
    s.owner = "%s %s" % (s.name, s.parsed.primary_output or "")
    s.oom_score = oom_score(env, config)
    chain = inline or launcher_of(config, s.tool, s.parsed.kind)
    s.launcher = _LAUNCHER_DEFAULTS
    s.run_path, s.prefix = s.path, [s.path] + wrapped
    if chain:
        lname = host.program_stem(chain[0])
        s.launcher = config["launchers"].get(lname, _LAUNCHER_DEFAULTS)
        s.run_path = program.resolve(chain[0], "launcher %s" % lname, env.get("PATH", ""), cwd, self_ids)
        s.prefix = [s.run_path] + list(chain[1:]) + [s.path] + wrapped   # exec'd as one: `ccache /usr/bin/gcc ...`
        _launch_env(s.launcher, env, s.ledger_dir)
        if s.record:
            s.record["launcher"] = lname
    return s


def _admit(s: _Step) -> None:
    """Choose the mode, then wait for memory slots and a CPU slot as the step needs."""
    s.plan = s.cpu = None
    if s.parsed.probe:                  # straight through: nothing to measure, admit or record
        s.mode = choose_mode("exec", host.EXEC_SUPPORTED)
        return
    budget = admission.budget(s.env, s.config)
    if budget:
        k = estimates.key_of(s.record) if s.record else estimates.key(
            s.name, s.parsed.primary_output or s.parsed.primary_input)
        s.plan = _plan(budget, s.config, s.env, s.ledger_dir, k, s.parsed.kind, s.tool, s.name)
        if s.plan and s.launcher["memory_factor"] != 1.0 and s.plan.source not in ("history", "build"):
            # A measured peak already is what ran here; only a prior needs scaling down.
            s.plan.estimate = int(s.plan.estimate * s.launcher["memory_factor"])
    known = bool(s.plan and estimates.is_fresh(s.plan.entry, s.record and s.record["argv"], ledger.now()))
    requested = requested_mode(s.config, s.env, s.tool, s.parsed.kind, budget)
    s.low = big = False
    if s.plan:
        big, s.low = heavy(s.plan.estimate, s.plan.unit * s.plan.total)
    # A step too big to share the budget runs spawned and alone, so that an OOM kill is
    # retried, never fatal; one too big for the budget starts with its low-memory rewrites.
    s.mode = choose_mode("spawn" if big and requested == "auto" else requested, host.EXEC_SUPPORTED, known)
    if s.low:
        low = s.tool["low_memory"]
        s.args = rewrite.arguments(low, s.args)
        s.env = rewrite.environment(low, s.env)
    marks = watcher.marks(s.env, s.config) if s.plan else None      # the pause mark: admission's and the watcher's
    if s.plan:
        k = s.plan.total if big else admission.slots_for(s.plan.estimate, s.plan.unit, s.plan.total)
        live = _live(s.env, marks, s.plan.guessed)
        try:
            s.plan.reservation = admission.acquire(s.plan.pool, s.plan.total, k, s.plan.unit,
                                                   s.config["memory"]["patience"], owner=s.owner, live=live)
        except OSError as e:       # a pool file planted, swapped or damaged: run, unadmitted
            rundir.warn_once("memory", "no memory admission: %s: %s" % (s.plan.pool, e.strerror or e), s.env)
            s.plan = None
        soft = s.plan and family.get(s.parsed.family).soft_limit
        if soft and soft not in s.env:
            _give_room(s, soft, live)
    # After memory: a step waiting for memory must not hold a core. Remote steps need none.
    s.cpu = None if s.launcher["remote"] else _cpu_slot(s.env, s.owner)
    if s.record:
        s.record["mode"] = s.mode
        s.record["t0"] = ledger.now()
        if s.low:
            s.record.update(low_memory=True, argv=digest.fingerprint("\0".join(s.args)))
            if "args" in s.record:
                s.record["args"] = s.args
        if s.plan:
            s.record.update(res=s.plan.reservation.bytes, est=s.plan.estimate, src=s.plan.source)
        if s.plan:
            s.record["wait"] = round(s.plan.reservation.waited, 6)
        if s.cpu:
            s.record["cpu_wait"] = round(s.cpu.waited, 6)
    if s.plan:         # pause before kill: a watcher may stop this step's tree while memory is short
        watcher.note(s.plan, s.record, s.ledger_dir, s.env, marks)


SOFT_FLOOR = 32 << 20    # the least soft limit given: below it a collector only spins


def _give_room(s: _Step, name: str, live) -> None:
    """Give a runtime that takes a soft memory limit (family.soft_limit: Go's GOMEMLIMIT) the
    room its step was admitted into: what the limit less the reserve leaves beside the memory
    in use and what the other steps may still grow into. A cold Go compile admitted at the
    prior and growing to ~300 MiB was OOM-killed in a 272 MiB cgroup where the collector,
    told of the room, kept it near 200 MiB (BUILD.md); where the room is larger than the step
    grows, the limit is never reached and changes nothing. Go's cache keys do not include it."""
    try:
        room = admission.room_of(s.plan.reservation, s.plan.total, live)
    except OSError:
        return
    if room is not None:
        mib = max(room, SOFT_FLOOR) >> 20
        s.env = dict(s.env, **{name: "%dMiB" % mib})
        if s.record:
            s.record["soft_limit"] = mib << 20


def _live(env: dict, marks=None, guessed: bool = False):
    """(ceiling, reader, mark, *guessed*) for admission by the memory really in use (issue 18):
    the auto budget of the limit (what all memory in use may reach), budget.in_use, and the
    pause mark (*marks*, watcher.marks: the fractions; the budget itself when pausing is off); None
    without a limit. While a step admitted on a guess runs (no peak of its own, and none of its
    tool and kind measured in this build to bear its estimate out), or this one is *guessed*,
    everything must fit below the mark: the rest of the budget is the margin for a wrong guess,
    the pause watcher's time to act before the limit (two cold 330 MB steps admitted at the
    192 MiB prior beside a 400 MiB neighbour crossed from the mark to a 1 GiB limit in ~0.1 s;
    a step admitted at its siblings' 330 MiB beside one still running at its 192 MiB guess
    was OOM-killed)."""
    found = budget_mod.limit(env)
    if not found:
        return None
    ceiling = budget_mod.of(budget_mod.AUTO, None, *found)
    return ceiling, lambda exact: budget_mod.in_use(env, exact), int(ceiling * marks[0]) if marks else ceiling, guessed


NEAR = 0.75        # of the budget: a step expected to need this much runs alone, spawned


def heavy(estimate: int, budget: int):
    """(run alone and spawned, start with the low-memory rewrites) for a step expected to
    peak at *estimate* under *budget*: a peak learned on a bigger runner is one too big
    for this one, and an OOM kill of it must be retried, not fatal."""
    return estimate >= NEAR * budget, estimate > budget


def _named(s: _Step) -> bytes:
    """The step for people: its tool and output (else input)."""
    what = s.parsed.primary_output or s.parsed.primary_input
    return ("%s %s" % (s.name, what) if what else s.name).encode("utf-8", "surrogateescape")


def _ending(finished) -> bytes:
    return b"signal %d" % finished.signal if finished.signal is not None else b"exit %d" % finished.code


def _to_stderr(data: bytes) -> None:
    if not data:
        return
    try:
        sys.stderr.flush()
        sys.stderr.buffer.write(data)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass                    # stderr closed or gone: the step's status still counts


def _retry_alone(s: _Step, failed, attempt: int, hold: bool):
    """Run an out-of-memory step again holding the whole budget, with low_memory rewrites."""
    if s.record:
        _finish(s.record, failed, s.ledger_dir, s.env, _budget_of(s))
        s.record = dict(s.record, id="%s-r%d" % (s.record["id"], attempt), retry=attempt)
        s.record.pop("oom", None)
        s.record.pop("meta", None)
        s.record.pop("cpu_wait", None)     # this attempt keeps the core; it waits only for memory
    plan = s.plan
    plan.reservation.release()
    plan.reservation = admission.acquire(plan.pool, plan.total, plan.total, plan.unit, 0.0,
                                         owner=s.owner + " (retry)")
    low = rewrite.EMPTY if s.low else s.tool["low_memory"]      # a low-memory start has them already
    retry_args = rewrite.arguments(low, s.args)
    retry_env = rewrite.environment(low, dict(s.env))
    if s.record:       # t0 after the wait, as in _admit: a duration never holds a wait
        s.record.update(t0=ledger.now(), res=plan.reservation.bytes, wait=round(plan.reservation.waited, 6),
                        argv=digest.fingerprint("\0".join(retry_args)), low_memory=True)
        if "args" in s.record:
            s.record["args"] = retry_args
    return _execute(s, retry_args, retry_env, capture=True, watch=_watch(s), hold=hold)


def _watch(s: _Step):
    """What to note the time of in a recorded step's stderr (which then passes through
    shim, line by line as the tool writes it), as its family says: rustc's notice that the
    crate's metadata is ready, on which cargo starts the crates that depend on it. Shown in
    the trace."""
    watch = family.get(s.parsed.family).watch
    return watch(s.parsed.detail) if watch and s.record and s.parsed.detail is not None else None


def _budget_of(s: _Step) -> int:
    return s.plan.unit * s.plan.total if s.plan else 0


def _finish(record: dict, finished, ledger_dir: str, env: dict, budget: int = 0) -> None:
    """Complete and append the record of a spawned attempt. One the OOM killer cut short
    is learned as needing more than the *budget* it was killed under: the next build then
    starts it alone with its low-memory rewrites instead of paying the same kill again."""
    record.update(rec="step", t1=ledger.now(), exit=finished.code, sig=finished.signal,
                  rss=finished.max_rss, ut=finished.user_time, st=finished.system_time)
    if finished.noticed is not None:
        record["meta"] = finished.noticed
    record["dur"] = record["t1"] - record["t0"]
    if oom.ran_out(finished):
        record["oom"] = True
        record["need"] = max(finished.max_rss or 0, budget + 1) or None
        if record["need"]:
            estimates.observe(ledger_dir, record)
    elif finished.signal is None and finished.max_rss:
        estimates.observe(ledger_dir, record, rundir.build_identity(env))
    ledger.append(ledger_dir, record, env)


def _execute(s: _Step, args: list, env: dict, exec_: bool = False, capture: bool = False, watch=None,
             hold: bool = False):
    """exec or spawn the tool (through its launcher); a failure to start it becomes a
    ShimError (127/126/71). With *hold* an out-of-memory message on stderr and what follows
    it are held back (Finished.withheld)."""
    # The tool inherits a raised oom_score_adj; a spawning shim takes its own back at once.
    was = host.raise_oom_score(s.oom_score) if s.oom_score else None
    try:
        if exec_:
            host.exec_program(s.run_path, s.prefix + args, env)
        # The tool dies with its shim (kill -9 too): it must not run on without the reservation.
        return host.spawn_program(s.run_path, s.prefix + args, env, capture_stderr=capture, sample_tree=True,
                                  die_with_parent="KILL",
                                  on_start=None if was is None else lambda pid: host.restore_oom_score(was),
                                  watch=watch, hold=oom.hold_from if hold else None)
    except ValueError as e:        # a NUL in an argument or the environment
        raise ShimError("tool %r: cannot execute %s: %s" % (s.name, s.run_path, e), BAD_INPUT) from None
    except OSError as e:
        status = _EXEC_ERRORS.get(e.errno, OS_ERROR)
        if s.record:
            ledger.append(s.ledger_dir, {"rec": "end", "id": s.record["id"], "exit": status}, env)
        raise ShimError("tool %r: cannot execute %s: %s" % (s.name, s.run_path, e.strerror or e),
                        status) from None


def _record(tool: str, prog: str, path: str, parsed, cwd: str, ledger_dir: str,
            tool_args: list, env: dict) -> dict:
    """The ledger record of a step about to run; paths relative to the build dir."""
    base = ledger.build_dir(ledger_dir)
    cwd = ledger.unsandboxed(cwd)
    if ledger.transient_exec_root(cwd, parsed.outputs):
        base = cwd          # a remote worker's: record what stays the same between builds
    where = ledger.relative(cwd, base) if cwd != base else "."

    def portable(p):
        if p is None or host.is_absolute(p) or where == ".":
            return ledger.relative(ledger.unsandboxed(p), base)
        return host.join(where, p)

    t0 = ledger.now()
    record = {"rec": "start", "id": ledger.new_id(t0),
              "b": env.get("SHIM_BUILD_ID"), "t0": t0, "pid": host.getpid(), "tool": tool,
              "prog": host.program_stem(prog), "kind": parsed.kind, "mode": None, "cwd": where,
              "in": portable(parsed.primary_input), "out": [portable(p) for p in parsed.outputs],
              "argv": digest.fingerprint("\0".join(tool_args))}
    if parsed.kind == "compile":       # for compile_commands.json
        record["exe"] = path
        record["args"] = tool_args
    return record
