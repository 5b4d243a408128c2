"""The per-user runtime directory: machine-wide state shared by every shim of one user.

`$XDG_RUNTIME_DIR/shim`, else `/tmp/shim-<uid>`. Created with mode 0700; refused
(OSError) when it is a symlink, not ours, or open to others, since other users
could otherwise plant files (memory slots, markers) that shim trusts.
"""

from shim import host


def path(env: dict) -> str:
    base = env.get("XDG_RUNTIME_DIR")
    if base and host.is_absolute(base):
        return host.join(base, "shim")
    return "/tmp/shim-%d" % host.getuid()


def ensure(env: dict) -> str:
    """The runtime directory, created if needed and checked; OSError if unsafe."""
    d = path(env)
    try:
        host.mkdir(d, 0o700)
    except FileExistsError:
        pass
    problem = host.private_dir_problem(d)
    if problem:
        raise OSError("unsafe runtime directory %s: %s" % (d, problem))
    return d
