"""A tool's rewrite rules applied to its arguments and environment.

Rules work on the arguments of the command line one at a time; the contents of
@response files are left alone (the tool gets the original @file, see shim/rsp.py).
Order: drop, then replace, then prepend and append.

This module owns the shape of a set of rules (what `rules` returns): shim/config/layers.py
compiles each tool's `args`/`env` tables (and its `low_memory` ones) with it, and a
program no tool claims gets EMPTY.
"""

from shim import host, pattern


def rules(args: dict = None, env: dict = None, path_base: str = "") -> dict:
    """Rules from a tool's `args` and `env` tables as toolchain.toml writes them; relative
    `env.path_prepend` entries are taken relative to *path_base*."""
    args, env = args or {}, env or {}
    drop = args.get("drop", [])
    return {
        "prepend": list(args.get("prepend", [])), "append": list(args.get("append", [])),
        "drop": [d for d in drop if not pattern.is_pattern(d)],
        "drop_patterns": [d for d in drop if pattern.is_pattern(d)],
        "replace": {k: ([v] if isinstance(v, str) else list(v)) for k, v in args.get("replace", {}).items()},
        "env_set": dict(env.get("set", {})), "env_unset": list(env.get("unset", [])),
        "path_prepend": [p if host.is_absolute(p) or not path_base else host.join(path_base, p)
                         for p in env.get("path_prepend", [])],
    }


EMPTY = rules()


def arguments(tool: dict, args) -> list:
    drop = tool["drop"]
    drop_patterns = tool["drop_patterns"]
    replace = tool["replace"]
    if not (drop or drop_patterns or replace):
        kept = list(args)
    else:
        kept = []
        for arg in args:
            if arg in drop or any(pattern.match(arg, p) for p in drop_patterns):
                continue
            swap = replace.get(arg)
            if swap is None:
                kept.append(arg)
            else:
                kept.extend(swap)
    return tool["prepend"] + kept + tool["append"]


def environment(tool: dict, env: dict) -> dict:
    """*env* changed in place by the tool's env.unset, env.set and env.path_prepend."""
    for name in tool["env_unset"]:
        env.pop(name, None)
    env.update(tool["env_set"])
    if tool["path_prepend"]:
        rest = env.get("PATH")
        env["PATH"] = host.PATHSEP.join(tool["path_prepend"] + ([rest] if rest else []))
    return env
