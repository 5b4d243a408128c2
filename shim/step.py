"""The hot path: one build step from `shim TOOL ARGS...` to the real tool.

In process: find the toolchain (cached), pick the tool, read the arguments
(@files too), apply the rewrite rules, choose exec or spawn. Then exec (shim
becomes the tool: its memory and process are gone, exit status and signals are
the tool's by construction) or spawn and wait (exit code, peak RSS, CPU times;
a signal death is re-raised). Imports are limited to shim/hotpath.py's list.
"""

import errno
import sys

from shim import args as args_mod
from shim import host, pattern, program, rewrite, toolchain
from shim.exit_status import NOT_EXECUTABLE, NOT_FOUND, OS_ERROR, USAGE, ShimError

MAX_DEPTH = 8   # shim running shim this deep is a loop (PATH or tool.X.program pointing back)

# Why exec/posix_spawn failed -> exit status, as a shell would answer.
_EXEC_ERRORS = {errno.ENOENT: NOT_FOUND, errno.ENOTDIR: NOT_FOUND, errno.EACCES: NOT_EXECUTABLE,
                errno.ENOEXEC: NOT_EXECUTABLE, errno.EPERM: NOT_EXECUTABLE, errno.EISDIR: NOT_EXECUTABLE,
                errno.ETXTBSY: NOT_EXECUTABLE, errno.ELOOP: NOT_EXECUTABLE}


def choose_mode(requested: str, exec_supported: bool) -> str:
    """The mode a step really runs in: exec where the platform can, else spawn.

    `auto` spawns for now: it will exec once the step's memory is known (memory admission).
    """
    if requested == "exec" and exec_supported:
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


_NO_RULES = {"program": None, "family": None, "kind": None, "mode": None, "prepend": [], "append": [],
             "drop": [], "drop_patterns": [], "replace": {}, "env_set": {}, "env_unset": [],
             "path_prepend": []}


def requested_mode(config: dict, env: dict, tool: dict, kind: str) -> str:
    """SHIM_MODE, else tool.<id>.mode, else step.<kind>.mode, else defaults.mode."""
    step = config["steps"].get(kind)
    mode = env.get("SHIM_MODE") or tool["mode"] or (step and step["mode"]) or config["mode"]
    if mode not in ("exec", "spawn", "auto"):
        raise ShimError("SHIM_MODE=%s: expected exec, spawn or auto" % mode, USAGE)
    return mode


def _self_ids() -> frozenset:
    try:
        st = host.stat(sys.argv[0])
    except (OSError, ValueError, IndexError):
        return frozenset()
    return frozenset(((st.st_dev, st.st_ino),))


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
    path = program.resolve(prog, tool_id or name, env.get("PATH", ""), cwd, _self_ids())
    mode = choose_mode(requested_mode(config, env, tool, parsed.kind), host.EXEC_SUPPORTED)
    env["SHIM_DEPTH"] = str(depth + 1)
    full_argv = [path] + tool_args
    try:
        if mode == "exec":
            host.exec_program(path, full_argv, env)
        finished = host.spawn_program(path, full_argv, env)
    except OSError as e:
        status = _EXEC_ERRORS.get(e.errno, OS_ERROR)
        raise ShimError("tool %r: cannot execute %s: %s" % (tool_id or name, path, e.strerror or e),
                        status) from None
    if finished.signal is not None:
        host.die_of_signal(finished.signal)
    return finished.code
