"""The ledger: one JSON line per step, appended by every shim, read by the reports.

Where: `SHIM_LEDGER` (a directory; empty or `off` disables it), else toolchain.toml
`ledger.dir` (relative to the build dir, the directory steps run in), else `.shim/`
in the build dir. Without the first two, a directory is a build dir only if it looks
like one (build.ninja, a Makefile, or a `.shim/` already there): a configure script's
compiler probes (`meson setup` runs `shim gcc --version` in the source tree) leave no
ledger behind. The file is `ledger-v1.jsonl`: a new format gets a new name, so an
old file is simply not read ("starting over", never an error).

Writing is crash-proof and parallel-safe: each record is one `write()` on an
O_APPEND descriptor (the kernel appends it whole, so concurrent steps never
interleave); the file is born with its version line by link(2), so no record ever
precedes it. A line left torn (a full disk, a partial cache restore) swallows the
next record, which its writer sees and writes again on its own line (append_whole).
The file is opened without following a symlink. A reader skips a torn line, unknown record
kinds and lines it cannot parse, and counts them.

The ledger keeps a bounded history: cold code (shim/reports/compact.py) drops old
builds by copying and renaming; a step that wrote to the replaced file after its seal
writes its record again (_after_seal), so no append is lost.

Bookkeeping never breaks a build: if the ledger cannot be written, the step runs
anyway and shim warns once per build (rundir.warn_once), not once per step.

Paths are relative to the build dir where they can be, so a CI cache of `.shim/`
carries the learned memory of the last run to the next machine.
"""

import errno
import time

from shim import host, rundir
from shim.host import osapi

FILENAME = "ledger-v1.jsonl"
VERSION = 1
HEADER = '{"rec": "ledger", "version": 1, "format": "one JSON object per line"}\n'
RECORD_KINDS = ("ledger", "start", "step", "end", "build", "pause", "usage")
_OFF = ("", "0", "off", "no", "false")


def directory(cwd: str, env: dict, config: dict, require_build_dir: bool = True):
    """The ledger directory for steps run in *cwd*, or None when the ledger is off (or,
    with *require_build_dir*, when *cwd* does not look like a build dir)."""
    explicit = env.get("SHIM_LEDGER")
    if explicit is not None:
        if explicit.lower() in _OFF:
            return None
        return explicit if host.is_absolute(explicit) else host.join(cwd, explicit)
    conf = config.get("ledger") or {}
    if conf.get("enabled") is False:
        return None
    d = conf.get("dir")
    if d:
        return d if host.is_absolute(d) else host.join(cwd, d)
    d = host.join(cwd, DIRNAME)
    if not require_build_dir or any(host.exists(host.join(cwd, name)) for name in (DIRNAME,) + BUILD_FILES):
        return d
    return None


DIRNAME = ".shim"
# What makes a directory a build dir, for the default ledger location.
BUILD_FILES = ("build.ninja", "Makefile", "makefile", "GNUmakefile")


def build_dir(ledger_dir: str) -> str:
    """The build dir a ledger directory belongs to (paths in records are relative to it)."""
    return host.dirname(ledger_dir.rstrip("/")) or "."


def relative(path, base: str):
    """*path* relative to *base* when it lies below it; otherwise unchanged."""
    if path and host.is_absolute(path) and path.startswith(base + "/"):
        return path[len(base) + 1:]
    return path


def unsandboxed(path):
    """*path* with Bazel's per-action sandbox removed: actions run in
    OUTPUT_BASE/sandbox/<strategy>/<N>/execroot/<ws>, deleted afterwards; the stable name
    of that directory is OUTPUT_BASE/execroot/<ws>."""
    if not path:
        return path
    i = path.find("/sandbox/")
    if i < 0:
        return path
    parts = path[i + 9:].split("/", 3)
    if len(parts) >= 3 and parts[1].isdigit() and parts[2] == "execroot":
        return path[:i] + "/execroot" + ("/" + parts[3] if len(parts) > 3 else "")
    return path


def transient_exec_root(cwd: str, outputs) -> bool:
    """Whether *cwd* is an exec root made for one action, such as a remote worker's
    `<root>/exec-XXXX` (deleted after it): Bazel names the outputs relative to an exec
    root (bazel-out/...), and only its own stable one is called execroot. Paths relative
    to such a root are the same in every build and on every worker."""
    return "/execroot/" not in cwd + "/" and any(p and p.startswith("bazel-out/") for p in outputs)


def new_id(t0: float) -> str:
    """A record id: start time and pid, plus random bits, since every sandboxed Bazel
    action is pid 2 and two may start in the same microsecond."""
    return "%x-%d-%s" % (int(t0 * 1e6), osapi.getpid(), osapi.urandom(3).hex())


def now() -> float:
    return time.time()


# --- writing (hot path) ------------------------------------------------------------


def encode(record: dict) -> str:
    """*record* as one line of JSON (str, int, float, bool, None, lists of those)."""
    return "{" + ", ".join('"%s": %s' % (k, _value(v)) for k, v in record.items()) + "}"


def _value(v) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, float):
        return "%.6f" % v if v == v and v not in (float("inf"), float("-inf")) else "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return _string(str(v))


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(s: str) -> str:
    if s.isprintable() and '"' not in s and "\\" not in s:
        return '"%s"' % s
    out = []
    for c in s:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c < " " or c == "\x7f" or "\ud800" <= c <= "\udfff":
            out.append("\\u%04x" % ord(c))    # undecodable bytes survive as lone surrogates
        else:
            out.append(c)
    return '"%s"' % "".join(out)


def append(ledger_dir: str, record: dict, env: dict, _again: int = 3) -> bool:
    """Append *record*; False (after warning once per build) if it could not be written."""
    data = (encode(record) + "\n").encode("utf-8", "surrogatepass")
    path = host.join(ledger_dir, FILENAME)
    # O_NONBLOCK: a FIFO in its place must not hold the step (it is then refused below).
    flags = osapi.O_RDWR | osapi.O_APPEND | osapi.O_NONBLOCK | host.O_CLOEXEC | host.O_NOFOLLOW
    try:
        try:
            fd = osapi.open(path, flags)
        except FileNotFoundError:
            _create(ledger_dir, path)
            fd = osapi.open(path, flags)
        try:
            st = osapi.fstat(fd)
            if st.st_mode & 0o170000 != 0o100000:
                raise OSError(22, "not a regular file")
            retired = _after_seal(fd, path, st, append_whole(fd, data, st.st_size))
        finally:
            osapi.close(fd)
        if retired and _again:
            return append(ledger_dir, record, env, _again - 1)   # to the file that replaced it
        return True
    except OSError as e:
        reason = "a symlink (not followed)" if e.errno == errno.ELOOP else e.strerror or e
        rundir.warn_once(ledger_dir, "cannot write the ledger in %s: %s; steps still run but are not recorded"
                         % (ledger_dir, reason), env)
        return False


def append_whole(fd: int, data: bytes, size: int) -> int:
    """Append *data*, whole lines, on *fd* (O_APPEND), a file seen *size* bytes long; the length
    of the last write (OSError if one was short: a full disk). If the file ended in a torn
    line, that line swallowed *data*'s first line, which is written again. A last byte other
    than a newline is only a hint: it may be a record still being written (a stat can see a
    write that spans pages half done), so putting a newline first would leave an empty line;
    the byte before our own write is sure, writes to one file being serialized."""
    torn = size and osapi.pread(fd, 1, size - 1) != b"\n"
    if osapi.write(fd, data) != len(data):
        raise OSError(28, "short write (disk full?)")
    if not torn:
        return len(data)
    start = osapi.lseek(fd, 0, 1) - len(data)       # O_APPEND: the offset is the end of our write
    if start <= 0 or osapi.pread(fd, 1, start - 1) == b"\n":
        return len(data)
    line = data[:data.find(b"\n") + 1]
    if osapi.write(fd, line) != len(line):
        raise OSError(28, "short write (disk full?)")
    return len(line)


# Written by a compaction (shim/reports/compact.py) at the end of the file it has just
# replaced: what lies before it was copied, what lies after it was not.
SEAL = b'{"rec": "sealed"}'


def _after_seal(fd: int, path: str, st, n: int) -> bool:
    """Whether the *n* bytes just written on *fd* went to a ledger file that a compaction had
    already sealed, so that they are not in the file that replaced it. Costs one stat while
    the file is still the ledger (its seal, if one comes, then lands after the record)."""
    try:
        now = osapi.stat(path)
    except OSError:
        return False
    if now.st_ino == st.st_ino and now.st_dev == st.st_dev:
        return False
    start = osapi.lseek(fd, 0, 1) - n          # O_APPEND: the offset is the end of our write
    end = start
    while end > 0:                             # from the record backwards: the seal is near, if there
        lo = max(0, end - 65536)
        if SEAL in osapi.pread(fd, min(start, end + len(SEAL)) - lo, lo):
            return True
        end = lo
    return False


def _create(ledger_dir: str, path: str) -> None:
    """Make the ledger file appear with its version line already in it."""
    host.makedirs(ledger_dir)
    tmp = "%s.%s.tmp" % (path, new_id(time.time()))
    fd = osapi.open(tmp, osapi.O_WRONLY | osapi.O_CREAT | osapi.O_EXCL | host.O_CLOEXEC, 0o644)
    try:
        try:
            osapi.write(fd, HEADER.encode())
        finally:
            osapi.close(fd)
        osapi.link(tmp, path)
    except FileExistsError:
        pass                      # another step created it first: fine
    finally:
        osapi.unlink(tmp)
