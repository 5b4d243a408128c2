"""The hot path: one build step from `shim TOOL ARGS...` to the real tool.

In process: find the toolchain (cached), pick the tool, read the arguments
(@files too), apply the rewrite rules, choose exec or spawn, and under a memory
budget wait for slots worth the step's expected peak. Then exec (shim becomes the
tool: its memory and process are gone, exit status and signals are the tool's by
construction, and the tool holds the reservation) or spawn and wait (exit code,
peak RSS, CPU times; a signal death is re-raised; an out-of-memory failure is
retried alone with the tool's low_memory rewrites). Every step leaves a ledger
record. Imports are limited to shim/hotpath.py's list.
"""

import errno
import sys
import time

from shim import admission, digest, estimates, host, ledger, oom, pattern, program, rewrite, rundir, size
from shim import args as args_mod
from shim import toolchain
from shim.exit_status import NOT_EXECUTABLE, NOT_FOUND, OS_ERROR, USAGE, ShimError

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
    tool_id = config["names"].get(stem)
    if tool_id is None:
        for pat, candidate in config["name_patterns"]:
            if pattern.match(stem, pat):
                tool_id = candidate
                break
    return tool_id, tools.get(tool_id, _NO_RULES), name


_EMPTY_RULES = {"prepend": [], "append": [], "drop": [], "drop_patterns": [], "replace": {},
                "env_set": {}, "env_unset": [], "path_prepend": []}
_NO_RULES = dict(_EMPTY_RULES, program=None, family=None, kind=None, mode=None, launcher=None,
                 low_memory=_EMPTY_RULES)
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


def memory_budget(env: dict, config: dict):
    """Bytes steps are admitted into, or None: SHIM_MEMORY_BUDGET, else memory.budget."""
    text = env.get("SHIM_MEMORY_BUDGET") or config["memory"]["budget"]
    if not text or text.lower() in ("off", "none", "0", "false"):
        return None
    if text.isdigit():
        return int(text)                  # what `shim build` passes: no parsing, no detection
    try:
        return size.parse(text)
    except ValueError:
        pass
    from shim import budget           # auto or a percentage: read the cgroups (off the fast path)
    try:
        return budget.resolve(text)[0]
    except ValueError as e:
        raise ShimError("memory budget %r: %s" % (text, e), USAGE) from None


def _self_ids() -> frozenset:
    try:
        st = host.stat(sys.argv[0])
    except (OSError, ValueError, IndexError):
        return frozenset()
    return frozenset(((st.st_dev, st.st_ino),))


class _Admission:
    """What memory admission decided for one step."""

    __slots__ = ("pool", "unit", "total", "estimate", "source", "entry", "reservation")

    def __init__(self):
        self.pool = self.entry = self.reservation = None
        self.unit = self.total = self.estimate = 0
        self.source = ""


def _plan(budget, config, env, ledger_dir, tool, output, kind):
    """Where to reserve and how much, or None when admission is off or impossible here."""
    plan = _Admission()
    if ledger_dir:
        plan.entry = estimates.lookup(ledger_dir, estimates.key(tool, output))
    plan.estimate, plan.source = estimates.estimate(plan.entry, kind, config)
    plan.unit, plan.total = admission.geometry(budget, config["memory"]["unit"])
    try:
        plan.pool = admission.pool_path(rundir.ensure(env), plan.unit, plan.total)
    except OSError as e:
        ledger.warn_once("memory", "no memory admission: %s" % e, env)
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
        path = admission.cpu_pool_path(rundir.ensure(env), int(cores))
    except OSError as e:
        ledger.warn_once("cpu", "no CPU admission: %s" % e, env)
        return None
    return admission.acquire(path, int(cores), 1, 1, owner=owner)


def run(name: str, argv: list, env: dict):
    """Run tool *name* with arguments *argv*; returns only on spawn (the exit status)."""
    if not name:
        raise ShimError("no tool given (usage: shim TOOL ARGS..., or shim --help)", USAGE)
    depth = env.get("SHIM_DEPTH", "0")
    depth = int(depth) if depth.isdigit() else 0
    try:
        cwd = host.getcwd()
    except OSError as e:
        raise ShimError("cannot get the current directory: %s" % (e.strerror or e), OS_ERROR) from None
    config = toolchain.load(cwd, env)
    tool_id, tool, prog = select_tool(config, name)
    if depth >= MAX_DEPTH:
        raise ShimError("shim is running itself in a loop (%d levels deep at tool %r, program %r): "
                        "check PATH and tool.%s.program" % (depth, name, prog, tool_id or name), USAGE)
    family = tool["family"] or args_mod.family_of(prog)
    parsed = args_mod.parse(argv, family, cwd, tool["kind"] or "")
    tool_args = rewrite.arguments(tool, argv)
    env = rewrite.environment(tool, env)
    self_ids = _self_ids()
    path = program.resolve(prog, tool_id or name, env.get("PATH", ""), cwd, self_ids)
    env["SHIM_DEPTH"] = str(depth + 1)
    tool_name = tool_id or host.program_stem(name)
    ledger_dir = ledger.directory(cwd, env, config)
    record = _record(tool_name, prog, path, parsed, cwd, ledger_dir, tool_args, env) if ledger_dir else None
    chain = launcher_of(config, tool, parsed.kind)
    lconf = _LAUNCHER_DEFAULTS
    run_path, prefix = path, [path]
    if chain:
        lname = host.program_stem(chain[0])
        lconf = config["launchers"].get(lname, _LAUNCHER_DEFAULTS)
        run_path = program.resolve(chain[0], "launcher %s" % lname, env.get("PATH", ""), cwd, self_ids)
        prefix = [run_path] + list(chain[1:]) + [path]      # exec'd as one: `ccache /usr/bin/gcc ...`
        _launch_env(lconf, env, ledger_dir)
        if record:
            record["launcher"] = lname
    budget = memory_budget(env, config)
    plan = None
    if budget:
        output = record["out"][0] if record and record["out"] else parsed.primary_output
        plan = _plan(budget, config, env, ledger_dir, tool_name, output, parsed.kind)
        if plan and lconf["memory_factor"] != 1.0:
            plan.estimate = int(plan.estimate * lconf["memory_factor"])
    known = bool(plan and estimates.is_fresh(plan.entry, record and record["argv"], ledger.now()))
    mode = choose_mode(requested_mode(config, env, tool, parsed.kind, budget), host.EXEC_SUPPORTED, known)
    owner = "%s %s" % (tool_name, parsed.primary_output or "")
    if plan:
        k = admission.slots_for(plan.estimate, plan.unit, plan.total)
        plan.reservation = admission.acquire(plan.pool, plan.total, k, plan.unit, config["memory"]["patience"],
                                             owner=owner)
    # After memory: a step waiting for memory must not hold a core. Remote steps need none.
    cpu = None if lconf["remote"] else _cpu_slot(env, owner)
    if record:
        record["mode"] = mode
        record["t0"] = ledger.now()
        if plan:
            record.update(res=plan.reservation.bytes, est=plan.estimate, src=plan.source)
        if plan or cpu:
            record["wait"] = round((plan.reservation.waited if plan else 0) + (cpu.waited if cpu else 0), 6)
    if mode == "exec":
        if record:
            ledger.append(ledger_dir, record, env)    # the end comes from .ninja_log later
        _execute(run_path, prefix + tool_args, env, tool_id or name, record, ledger_dir, exec_=True)
    finished = _execute(run_path, prefix + tool_args, env, tool_id or name, record, ledger_dir,
                        capture=bool(plan))
    retries = config["memory"]["oom_retries"] if plan else 0
    attempt = 0
    while oom.ran_out(finished) and attempt < retries:
        attempt += 1
        if record:
            _finish(record, finished, ledger_dir, env)
            record = dict(record, id="%s-r%d" % (record["id"], attempt), retry=attempt, t0=ledger.now())
            record.pop("oom", None)
        plan.reservation.release()            # then take the whole budget: the retry runs alone
        plan.reservation = admission.acquire(plan.pool, plan.total, plan.total, plan.unit, 0.0,
                                             owner="%s %s (retry)" % (tool_name, parsed.primary_output or ""))
        low = tool["low_memory"]
        retry_args = rewrite.arguments(low, tool_args)
        retry_env = rewrite.environment(low, dict(env))
        if record:
            record.update(res=plan.reservation.bytes, wait=round(plan.reservation.waited, 6),
                          argv=digest.fingerprint("\0".join(retry_args)), low_memory=True)
            if "args" in record:
                record["args"] = retry_args
        finished = _execute(run_path, prefix + retry_args, retry_env, tool_id or name, record, ledger_dir,
                            capture=True)
    if record:
        _finish(record, finished, ledger_dir, env)
    if finished.signal is not None:
        host.die_of_signal(finished.signal)
    return finished.code


def _finish(record: dict, finished, ledger_dir: str, env: dict) -> None:
    """Complete and append the record of a spawned attempt."""
    record.update(rec="step", t1=ledger.now(), exit=finished.code, sig=finished.signal,
                  rss=finished.max_rss, ut=finished.user_time, st=finished.system_time)
    record["dur"] = record["t1"] - record["t0"]
    if oom.ran_out(finished):
        record["oom"] = True
    ledger.append(ledger_dir, record, env)


def _execute(path, full_argv, env, tool, record, ledger_dir, exec_=False, capture=False):
    """exec or spawn the tool; a failure to start it becomes a ShimError (127/126/71)."""
    try:
        if exec_:
            host.exec_program(path, full_argv, env)
        return host.spawn_program(path, full_argv, env, capture_stderr=capture)
    except OSError as e:
        status = _EXEC_ERRORS.get(e.errno, OS_ERROR)
        if record:
            ledger.append(ledger_dir, {"rec": "end", "id": record["id"], "exit": status}, env)
        raise ShimError("tool %r: cannot execute %s: %s" % (tool, path, e.strerror or e), status) from None


def _record(tool: str, prog: str, path: str, parsed, cwd: str, ledger_dir: str,
            tool_args: list, env: dict) -> dict:
    """The ledger record of a step about to run; paths relative to the build dir."""
    base = ledger.build_dir(ledger_dir)
    where = ledger.relative(cwd, base) if cwd != base else "."

    def portable(p):
        if p is None or host.is_absolute(p) or where == ".":
            return ledger.relative(p, base)
        return host.join(where, p)

    t0 = ledger.now()
    record = {"rec": "start", "id": "%x-%d" % (int(t0 * 1e6), host.getpid()),
              "b": env.get("SHIM_BUILD_ID"), "t0": t0, "pid": host.getpid(), "tool": tool,
              "prog": host.program_stem(prog), "kind": parsed.kind, "mode": None, "cwd": where,
              "in": portable(parsed.primary_input), "out": [portable(p) for p in parsed.outputs],
              "argv": digest.fingerprint("\0".join(tool_args))}
    if parsed.kind == "compile":       # for compile_commands.json
        record["exe"] = path
        record["args"] = tool_args
    return record
