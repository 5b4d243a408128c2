"""The operating system as the hot path sees it, on Windows.

Defines every name of shim/host.py's API, as host_posix.py does. Windows has no
exec: `os.execv` there starts a new process and ends the caller, so the parent
(ninja) would see shim's exit at once, not the tool's. Every step is therefore spawned (EXEC_SUPPORTED is False and
shim/step.py turns exec into spawn). Not run in this project's CI; the choosing
logic is unit-tested on POSIX (paths use ntpath, so they can be).
"""

import ntpath
import os
import subprocess
import sys
import time

from shim.exit_status import Finished

EXEC_SUPPORTED = False
SEP = "\\"
PATHSEP = ";"
PLATFORM = "windows"

osapi = os
getcwd = os.getcwd
mkdir = os.mkdir
stat = os.stat
lstat = os.lstat
getpid = os.getpid
open_file = os.open
read = os.read
write = os.write
close = os.close
O_RDONLY = os.O_RDONLY | getattr(os, "O_BINARY", 0)
O_CLOEXEC = getattr(os, "O_NOINHERIT", 0)
O_NOFOLLOW = 0


def getuid() -> int:
    return 0


def exists(path: str) -> bool:
    """Whether *path* names something (a bad path is no error: it names nothing)."""
    try:
        os.stat(path)
        return True
    except (OSError, ValueError):
        return False


def arch() -> str:
    return os.environ.get("PROCESSOR_ARCHITECTURE", "").lower() or "unknown"


def environ() -> dict:
    return dict(os.environ)


def is_absolute(path: str) -> bool:
    return ntpath.isabs(path)


def join(directory: str, name: str) -> str:
    return ntpath.join(directory, name)


def dirname(path: str) -> str:
    return ntpath.dirname(path)


def basename(path: str) -> str:
    return ntpath.basename(path)


def program_stem(name: str) -> str:
    """`C:\\VC\\cl.exe` -> `cl`: tools are known without their extension."""
    base = ntpath.basename(name)
    stem, ext = ntpath.splitext(base)
    return stem if ext.lower() in (".exe", ".bat", ".cmd", ".com") else base


def is_executable_file(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if os.path.isfile(path) else None


def program_candidates(name: str):
    if ntpath.splitext(name)[1]:
        return (name,)
    exts = os.environ.get("PATHEXT", ".COM;.EXE;.BAT;.CMD").split(";")
    return tuple(name + ext.lower() for ext in exts if ext)


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_own_file(path: str) -> bytes:
    """Windows: files under the user's profile are private by their ACL."""
    return read_file(path)


def open_private_dir(path: str):
    """Windows: no descriptors of directories; None once *path* is checked (per-user profile
    dirs), and every *dir_fd* below is None: files are opened by their path."""
    problem = private_dir_problem(path)
    if problem:
        raise OSError(13, problem, path)
    return None


def open_private(path: str, flags: int, mode: int = 0o600, dir_fd=None) -> int:
    """A descriptor for *path* (no symlinks or owners to check for: per-user profile dirs)."""
    return os.open(path, flags | O_CLOEXEC, mode)


def read_note(path: str, dir_fd=None) -> bytes:
    """Windows: a note is a small file (symlinks need a privilege)."""
    return read_file(path)


def write_note(path: str, data: bytes, dir_fd=None, when: float = None) -> None:
    replace_file(path, data, 0o600)
    if when is not None:
        stamp_note(path, when)


def note_time(path: str, dir_fd=None) -> float:
    return os.stat(path).st_mtime


def stamp_note(path: str, when: float, dir_fd=None) -> None:
    os.utime(path, (when, when))


def read_regular_file(path: str, own: bool = False) -> bytes:
    """Windows: no FIFOs in the file system; a directory fails to open."""
    return read_file(path)


def makedirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, exist_ok=True)


def replace_file(path: str, data: bytes, mode: int = 0o644) -> None:
    """Atomically give *path* the content *data*; the temporary file never stays behind."""
    tmp = "%s.%s.tmp" % (path, os.urandom(6).hex())
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def make_private_dir(path: str):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        return e.strerror or str(e)
    return private_dir_problem(path)


def raise_oom_score(value: int):
    """Windows has no OOM killer to steer."""
    return None


def restore_oom_score(value: int) -> None:
    pass


def pid_alive(pid: int) -> bool:
    import ctypes
    handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)   # QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    ctypes.windll.kernel32.CloseHandle(handle)
    return True


def private_dir_problem(path: str):
    """Windows: a per-user directory is private by its ACL; only refuse a non-directory."""
    return None if os.path.isdir(path) and not os.path.islink(path) else "not a directory"


def hold_std_fds() -> None:
    """Nothing to do: Windows handles are not numbered from 0 as POSIX descriptors are."""


def flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def exit_now(status: int):
    flush_stdio()
    os._exit(status & 0xFF)


def exec_program(path: str, argv: list, env: dict):
    raise OSError("exec is not supported on Windows")


def spawn_program(path: str, argv: list, env: dict, capture_stderr: bool = False,
                  on_start=None, sample_tree: bool = False, die_with_parent: bool = False,
                  watch: bytes = None, hold=None) -> Finished:
    flush_stdio()
    proc = subprocess.Popen(argv, executable=path, env=env,
                            stderr=subprocess.PIPE if capture_stderr else None)
    if on_start:
        on_start(proc.pid)
    tail = b""
    noticed = None
    held = b""
    try:
        if capture_stderr:
            # read1: what the tool has written so far, not a full 64 KiB (cargo must see rustc's
            # lines as they come); from where *hold* says on, kept back (host_posix.spawn_program)
            for chunk in iter(lambda: proc.stderr.read1(65536), b""):
                if watch and noticed is None and watch in tail[-len(watch):] + chunk:
                    noticed = time.time()
                tail = (tail + chunk)[-65536:]
                if hold and not held:
                    cut = hold(chunk)
                    if cut >= 0:
                        held, chunk = chunk[cut:], chunk[:cut]
                elif held:
                    held, chunk = held + chunk, b""
                    if len(held) > 65536:            # host_posix.HOLD_MAX
                        held, chunk, hold = b"", held, None
                sys.stderr.buffer.write(chunk)
                sys.stderr.buffer.flush()
        code = proc.wait()
    except KeyboardInterrupt:
        code = proc.wait()
    return Finished(code & 0xFF, None, None, None, None, None, tail, noticed, held)


def die_of_signal(signum: int):
    exit_now(128 + signum)


def tree_rss(pid: int, anon: bool = False) -> int:
    """Windows: not measured (no /proc); spawned steps still report their own peak."""
    return 0
