"""The per-user runtime directory: machine-wide state shared by every shim of one user.

`$XDG_RUNTIME_DIR/shim`, else `/tmp/shim-<uid>`. Created with mode 0700 and used only
when it is a real directory of ours closed to others (one of ours left open is closed),
since other users could otherwise plant the files shim trusts (memory slots, the
jobserver fifo, markers). When another user got there first (a directory or a symlink
of theirs at /tmp/shim-<uid>), shim does not run without memory admission: it takes
the first of `<usual>.1`, `<usual>.2`, ... that is, or can be made, safely ours. Every
step of ours walks the same list, so all of them agree on the place; shim says so
once per build.
"""

from shim import host

FALLBACKS = 16
_chosen = {}          # usual path -> the directory this process settled on


def path(env: dict) -> str:
    base = env.get("XDG_RUNTIME_DIR")
    if base and host.is_absolute(base):
        return host.join(base, "shim")
    return "/tmp/shim-%d" % host.getuid()


def ensure(env: dict) -> str:
    """The runtime directory, created if needed and checked; OSError if there is none
    safely ours (not even a fallback)."""
    usual = path(env)
    chosen = _chosen.get(usual)
    if chosen:
        return chosen
    problem = host.make_private_dir(usual)
    if problem is None:
        _chosen[usual] = usual
        return usual
    for i in range(1, FALLBACKS + 1):
        candidate = "%s.%d" % (usual, i)
        if host.make_private_dir(candidate) is None:
            _chosen[usual] = candidate
            from shim import ledger       # only now: ledger needs this module
            ledger.warn_once("rundir", "runtime directory %s is not safely yours (%s): using %s"
                             % (usual, problem, candidate), env)
            return candidate
    raise OSError("unsafe runtime directory %s: %s (and %s.1 to .%d are not usable either)"
                  % (usual, problem, usual, FALLBACKS))
