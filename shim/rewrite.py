"""A tool's rewrite rules applied to its arguments and environment.

Rules work on the arguments of the command line one at a time; the contents of
@response files are left alone (the tool gets the original @file, see shim/rsp.py).
Order: drop, then replace, then prepend and append.
"""

from shim import host, pattern


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
