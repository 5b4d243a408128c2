"""The per-user runtime directory: machine-wide state shared by every shim of one user.

`$XDG_RUNTIME_DIR/shim`, else `/tmp/shim-<uid>`. Created with mode 0700 and used only
when it is a real directory of ours closed to others (one of ours left open is closed),
since other users could otherwise plant the files shim trusts (memory slots, the
jobserver fifo, markers). When another user got there first (a directory or a symlink
of theirs at /tmp/shim-<uid>), shim does not run without memory admission: it takes
the first of `<usual>.1`, `<usual>.2`, ... that is, or can be made, safely ours; when
all of those are taken too (or XDG_RUNTIME_DIR names a directory that is missing or not
ours), `$HOME/.cache/shim/run`, where no other user can create anything. Every step of
ours walks the same list, so all of them agree on the place; shim says so once per build.
State files in it are opened through host.open_private: relative to the checked
directory, never through a link.

"Once per build" is a marker file here: warn_once creates `warned-<fingerprint>` (topic,
message, build identity) with O_EXCL, and only the step that created it prints.
"""

import sys


from shim import digest, host
from shim.host import osapi

FALLBACKS = 16
_chosen = {}          # usual path -> the directory this process settled on
_fds = {}             # directory -> its descriptor, opened and checked once per process


def path(env: dict) -> str:
    """Where the runtime directory usually is."""
    base = env.get("XDG_RUNTIME_DIR")
    if base and host.is_absolute(base):
        return host.join(base, "shim")
    return "/tmp/shim-%d" % host.getuid()


def _places(env: dict):
    """The usual places in the order every step tries them."""
    usual = path(env)
    places = [usual]
    tmp = "/tmp/shim-%d" % host.getuid()
    if tmp != usual:
        places.append(tmp)
    home = env.get("HOME")
    if home and host.is_absolute(home) and home != "/":
        places.append(host.join(home, ".cache/shim/run"))
    return places


def ensure(env: dict) -> str:
    """The runtime directory, created if needed and checked; OSError if there is none
    safely ours (not even a fallback)."""
    usual = path(env)
    chosen = _chosen.get(usual)
    if chosen:
        return chosen
    try:          # the usual case, in two system calls: it is there and private; keep it open
        _fds[usual] = host.open_private_dir(usual)
        _chosen[usual] = usual
        return usual
    except OSError:
        pass
    first_problem = None
    for place in _places(env):
        if place.endswith("/.cache/shim/run"):
            try:
                host.makedirs(host.dirname(place), 0o700)
            except OSError:
                pass
        problem = host.make_private_dir(place)
        candidates = [] if problem is None else ["%s.%d" % (place, i) for i in range(1, FALLBACKS + 1)]
        found = place if problem is None else next(
            (c for c in candidates if host.make_private_dir(c) is None), None)
        if found:
            _chosen[usual] = found
            if found != usual:
                warn_once("rundir", "runtime directory %s is not safely yours (%s): using %s"
                          % (usual, first_problem or problem, found), env)
            return found
        first_problem = first_problem or problem
    raise OSError("unsafe runtime directory %s: %s (and no fallback is usable either)" % (usual, first_problem))


def dir_fd(env: dict):
    """(directory, descriptor) of the runtime directory, opened once per process and checked
    (host.open_private_dir): state files are opened relative to it. OSError as ensure()."""
    place = ensure(env)
    fd = _fds.get(place)
    if fd is None and place not in _fds:
        fd = _fds[place] = host.open_private_dir(place)
    return place, fd


def warn_once(topic: str, message: str, env: dict) -> None:
    """Print `shim: warning: MESSAGE` unless this build already printed one about *topic*."""
    try:
        marker = host.join(ensure(env), "warned-" + digest.fingerprint(
            topic + "\0" + message.split(":")[0] + "\0" + build_identity(env)))
        fd = osapi.open(marker, osapi.O_WRONLY | osapi.O_CREAT | osapi.O_EXCL, 0o600)
        osapi.close(fd)
    except FileExistsError:
        return
    except OSError:
        pass                      # cannot remember: warn every time rather than never
    try:
        sys.stderr.write("shim: warning: %s (warned once per build)\n" % message)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):    # stderr closed: sys.stderr is None
        pass


def build_identity(env: dict) -> str:
    """What "this build" is: SHIM_BUILD_ID under `shim build`, else the ninja (or
    other parent) process above us, by pid and start time (pids are reused)."""
    if env.get("SHIM_BUILD_ID"):
        return env["SHIM_BUILD_ID"]
    pid = osapi.getppid()
    first = None
    for _ in range(4):
        try:
            stat = host.read_file("/proc/%d/stat" % pid).decode("utf-8", "replace")
        except OSError:
            break
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        ident = "%d-%s" % (pid, fields[19] if len(fields) > 19 else "")
        first = first or ident
        if comm in ("ninja", "make", "bazel", "java", "cmake", "samu"):
            return ident
        pid = int(fields[1]) if len(fields) > 1 else 0
        if pid <= 1:
            break
    return first or str(osapi.getppid())
