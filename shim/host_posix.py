"""The operating system as the hot path sees it, on POSIX (Linux, macOS, BSD).

Built on the `posix` and `_signal` builtins instead of `os` and `signal`: importing
`os` costs ~1.4 ms and `signal` ~6 ms (it builds enums) per process, which would
be most of shim's whole per-step budget (BENCHMARKS.md). Defines every name of
shim/host.py's API, as host_windows.py does; shim/host.py chooses.
"""

import _signal
import _thread
import errno
import posix
import sys
import time

from shim.exit_status import Finished

EXEC_SUPPORTED = True
SEP = "/"
PATHSEP = ":"
PLATFORM = {"linux": "linux", "darwin": "darwin"}.get(sys.platform, sys.platform.rstrip("0123456789"))

_ENCODING = sys.getfilesystemencoding()
# Python ignores these at start-up; a tool must get them back as default
# (`yes | head` must kill `yes` with SIGPIPE), as subprocess's restore_signals does.
_RESTORE_DEFAULT = tuple(getattr(_signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(_signal, name))
_FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
_KB = 1 if sys.platform == "darwin" else 1024   # ru_maxrss is bytes on macOS, KiB elsewhere
_PROC_CHILDREN = sys.platform.startswith("linux")   # /proc/PID/task/TID/children
# util-linux's setpriv sets a parent-death signal and execs the tool: one exec (~1 ms), where
# doing it in Python needs ctypes (a 5 to 100 ms import) and fork instead of posix_spawn.
_SETPRIV = "/usr/bin/setpriv" if _PROC_CHILDREN and posix.access("/usr/bin/setpriv", posix.X_OK) else None
HOLD_MAX = 65536    # stderr bytes held back at most: past that they are no dying tool's last words

osapi = posix      # the low-level os functions both platforms share (open, write, link...)
getcwd = posix.getcwd
mkdir = posix.mkdir
stat = posix.stat
lstat = posix.lstat
_UID = posix.getuid()     # shim never changes its ids: each check of a state file's owner asks no syscall
_PID = []                 # every syscall costs ~3 us on a CI VM, and an admitted step asks its pid 4 times
posix.register_at_fork(after_in_child=_PID.clear)


def getpid() -> int:
    if not _PID:
        _PID.append(posix.getpid())
    return _PID[0]


def getuid() -> int:
    return _UID
open_file = posix.open
read = posix.read
write = posix.write
close = posix.close
O_RDONLY = posix.O_RDONLY
O_CLOEXEC = getattr(posix, "O_CLOEXEC", 0)
O_NOFOLLOW = getattr(posix, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(posix, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(posix, "O_NONBLOCK", 0)


def exists(path: str) -> bool:
    """Whether *path* names something (a bad path is no error: it names nothing)."""
    try:
        posix.stat(path)
        return True
    except (OSError, ValueError):
        return False


def arch() -> str:
    """Machine name as uname reports it (x86_64, aarch64, arm64)."""
    return posix.uname().machine


def environ() -> dict:
    """A str copy of the process environment (undecodable bytes kept as surrogates)."""
    enc = _ENCODING
    return {k.decode(enc, "surrogateescape"): v.decode(enc, "surrogateescape")
            for k, v in posix.environ.items()}


def is_absolute(path: str) -> bool:
    return path.startswith("/")


def join(directory: str, name: str) -> str:
    if not directory:
        return name
    return directory + name if directory.endswith("/") else directory + "/" + name


def dirname(path: str) -> str:
    head = path.rpartition("/")[0]
    return head if head or not path.startswith("/") else "/"


def basename(path: str) -> str:
    return path.rpartition("/")[2]


def program_stem(name: str) -> str:
    """The name a tool is known by: basename (no extension to strip on POSIX)."""
    return name.rpartition("/")[2]


def is_executable_file(path: str):
    """stat_result of *path* when it is a regular file someone may execute, else None."""
    try:
        st = posix.stat(path)
    except (OSError, ValueError):
        return None
    if st.st_mode & 0o170000 != 0o100000 or not st.st_mode & 0o111:
        return None
    return st if posix.access(path, posix.X_OK) else None


def program_candidates(name: str):
    """File names to try for *name* in one PATH directory (no PATHEXT on POSIX)."""
    return (name,)


def read_file(path: str) -> bytes:
    """The whole content of *path* (OSError if it cannot be read)."""
    fd = posix.open(path, posix.O_RDONLY | O_CLOEXEC)
    try:
        return _read_all(fd)
    finally:
        posix.close(fd)


def _read_all(fd: int) -> bytes:
    # One read() of 64 KiB takes a whole /proc or /sys file (they hand over all they have at
    # once) and any small regular file; a short read is the end, so no second read asks.
    first = posix.read(fd, 1 << 16)
    if len(first) < 1 << 16:
        return first
    chunks = [first]
    while True:
        chunk = posix.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def read_regular_file(path: str, own: bool = False) -> bytes:
    """The content of *path* if it is a regular file (not a symlink, FIFO, directory or
    device) and, with *own*, ours; else OSError. For state files: opened without blocking
    and then checked, since opening a FIFO for reading waits for a writer forever."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW)
    try:
        st = posix.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000 or (own and st.st_uid != _UID):
            raise OSError(22, "not a regular file" + (" of ours" if own else ""), path)
        return _read_all(fd)
    finally:
        posix.close(fd)


def open_private_dir(path: str) -> int:
    """A descriptor (close-on-exec) of directory *path* if it is a private directory of ours
    (a real directory, not a symlink, closed to others); OSError otherwise. State files are
    then opened relative to it (open_private, read_note, write_note with *dir_fd*)."""
    dfd = posix.open(path or ".", posix.O_RDONLY | O_CLOEXEC | O_NOFOLLOW | _O_DIRECTORY)
    try:
        st = posix.fstat(dfd)
        if st.st_mode & 0o170000 != 0o040000 or st.st_uid != _UID or st.st_mode & 0o077:
            raise OSError(errno.EPERM, "not a private directory of ours", path)
    except BaseException:
        posix.close(dfd)
        raise
    return dfd


def open_private(path: str, flags: int, mode: int = 0o600, dir_fd: int = None) -> int:
    """A descriptor (close-on-exec) for file *path* in a private directory of ours: opened
    relative to the directory once checked (a directory swapped in after the check is not
    followed), never through a symlink, never blocking on a FIFO planted there. OSError
    unless both are ours, the directory closed to others and the file a regular one: root
    must never write into a file another user picked. *dir_fd*: that directory, already
    opened and checked by open_private_dir (the hot path opens it once per step)."""
    dfd = open_private_dir(dirname(path)) if dir_fd is None else dir_fd
    try:
        fd = posix.open(basename(path), flags | O_CLOEXEC | O_NOFOLLOW | _O_NONBLOCK, mode, dir_fd=dfd)
    finally:
        if dir_fd is None:
            posix.close(dfd)
    try:
        st = posix.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000 or st.st_uid != _UID:
            raise OSError(errno.EPERM, "not a regular file of ours", path)
    except BaseException:
        posix.close(fd)
        raise
    return fd


def read_note(path: str, dir_fd: int = None) -> bytes:
    """The note *path* (write_note), relative to *dir_fd* if given; OSError if there is none.
    A note is a symlink whose target is the data: one readlink() reads it, where a file
    takes open, fstat, read and close. Only for a private directory of ours (no one else can
    plant a link there) and for a few hundred bytes (a target holds at most 4095)."""
    if dir_fd is None:
        return posix.readlink(path.encode(_ENCODING, "surrogateescape"))
    return posix.readlink(basename(path).encode(_ENCODING, "surrogateescape"), dir_fd=dir_fd)


def write_note(path: str, data: bytes, dir_fd: int = None, when: float = None) -> None:
    """Atomically make *data* the note *path* (see read_note): a symlink made under a random
    name, renamed over the old one; with *when*, dated then (note_time). OSError if it cannot
    be (too long, no room)."""
    if dir_fd is None:
        dir_fd = open_private_dir(dirname(path))
        try:
            return write_note(path, data, dir_fd, when)
        finally:
            posix.close(dir_fd)
    name = basename(path)
    tmp = "%s.%s.tmp" % (name, posix.urandom(6).hex())
    posix.symlink(data, tmp, dir_fd=dir_fd)
    try:
        if when is not None:
            stamp_note(tmp, when, dir_fd)
        posix.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            posix.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def note_time(path: str, dir_fd: int = None) -> float:
    """When the note *path* was written or last stamped (the link's own mtime: one fstatat,
    no read); OSError if there is none."""
    if dir_fd is None:
        return posix.lstat(path).st_mtime
    return posix.stat(basename(path), dir_fd=dir_fd, follow_symlinks=False).st_mtime


def stamp_note(path: str, when: float, dir_fd: int = None) -> None:
    """Date the note *path* *when* (seconds since the epoch), its data untouched: one utimensat."""
    posix.utime(path if dir_fd is None else basename(path), (when, when), dir_fd=dir_fd, follow_symlinks=False)


def read_own_file(path: str) -> bytes:
    """read_regular_file, ours only: for state another user could plant (a cache naming
    programs to run)."""
    return read_regular_file(path, own=True)


def makedirs(path: str, mode: int = 0o755) -> None:
    """Create directory *path* and its missing parents, each with *mode* (less the umask,
    which can only take bits away: a umask of 000 still gives 0755, never 0777)."""
    try:
        posix.mkdir(path, mode)
    except FileExistsError:
        return
    except FileNotFoundError:
        parent = dirname(path)
        if parent == path or not parent:
            raise
        makedirs(parent, mode)
        try:
            posix.mkdir(path, mode)
        except FileExistsError:
            pass


def replace_file(path: str, data: bytes, mode: int = 0o644) -> None:
    """Give *path* the content *data* atomically: a temporary file beside it (named by
    random bits: every sandboxed Bazel action is pid 2), renamed over it. The temporary
    file is removed whatever goes wrong, so a full disk leaves nothing behind."""
    tmp = "%s.%s.tmp" % (path, posix.urandom(6).hex())
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[posix.write(fd, view):]
        finally:
            posix.close(fd)
        posix.rename(tmp, path)
    except BaseException:
        try:
            posix.unlink(tmp)
        except OSError:
            pass
        raise


def private_dir_problem(path: str):
    """Why directory *path* cannot hold private state, or None: it must be a real
    directory (not a symlink), ours, and closed to group and others."""
    st = posix.lstat(path)
    if st.st_mode & 0o170000 != 0o040000:
        return "not a directory (a symlink?)"
    if st.st_uid != posix.getuid():
        return "owned by uid %d" % st.st_uid
    if st.st_mode & 0o077:
        return "open to other users (mode %o)" % (st.st_mode & 0o777)
    return None


def make_private_dir(path: str):
    """Create directory *path* (mode 0700) or take it as it is if it is ours; None when it
    is fit for private state, else why not. A directory of ours that others may enter is
    closed (chmod 0700): it is ours to fix. Another user's directory, or a symlink, is not."""
    try:
        posix.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        return e.strerror or str(e)
    try:
        problem = private_dir_problem(path)
        if problem and problem.startswith("open to other users"):
            fd = posix.open(path, posix.O_RDONLY | O_CLOEXEC | O_NOFOLLOW | getattr(posix, "O_DIRECTORY", 0))
            try:                          # by descriptor: the name cannot be swapped in between
                posix.fchmod(fd, 0o700)
            finally:
                posix.close(fd)
            problem = private_dir_problem(path)
    except OSError as e:
        return e.strerror or str(e)
    return problem


def raise_oom_score(value: int):
    """Make this process (and so what it execs or spawns next) a likelier victim of the
    kernel's OOM killer: oom_score_adj = *value*, unless already as high. Returns the
    value it had if changed (for restore_oom_score), else None. Never raises: without
    /proc the step simply runs as it would have."""
    try:
        fd = posix.open("/proc/self/oom_score_adj", posix.O_RDWR | O_CLOEXEC)
    except OSError:
        return None
    try:
        current = posix.read(fd, 16).strip()
        if not current.lstrip(b"-").isdigit() or int(current) >= value:
            return None
        posix.write(fd, b"%d" % value)
        return int(current)
    except OSError:
        return None
    finally:
        posix.close(fd)


def restore_oom_score(value: int) -> None:
    """Set this process's oom_score_adj back to *value* (what raise_oom_score returned:
    going back to where it was is allowed without privileges)."""
    try:
        fd = posix.open("/proc/self/oom_score_adj", posix.O_WRONLY | O_CLOEXEC)
    except OSError:
        return
    try:
        posix.write(fd, b"%d" % value)
    except OSError:
        pass
    finally:
        posix.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process *pid* exists (of any user)."""
    try:
        posix.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True          # EPERM: it exists, it is someone else's
    return True


def hold_std_fds() -> None:
    """Fill descriptors 0, 1 and 2, if closed, with /dev/null until exec (close-on-exec):
    a state file opened next would otherwise become the tool's stdout (`echo hi` written
    into the memory pool), while the tool must still find them closed. git and OpenSSH
    do the same (sanitize_stdfds); it costs one open and one close when none is closed."""
    try:
        fd = posix.open("/dev/null", posix.O_RDWR | O_CLOEXEC)
        while fd <= 2:
            fd = posix.open("/dev/null", posix.O_RDWR | O_CLOEXEC)
        posix.close(fd)
    except OSError:
        pass


def flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def exit_now(status: int) -> "NoReturn":
    """Leave at once with *status*, skipping interpreter teardown (~1 ms)."""
    flush_stdio()
    posix._exit(status & 0xFF)


def exec_program(path: str, argv: list, env: dict) -> "NoReturn":
    """Become *path*: the tool inherits pid, fds (reservations) and exit status."""
    flush_stdio()
    for signum in _RESTORE_DEFAULT:
        _signal.signal(signum, _signal.SIG_DFL)
    try:
        posix.execve(path, argv, env)
    except OSError as e:
        if not _shell_script(path, e):
            raise
    posix.execve(_SHELL, [_SHELL, path] + argv[1:], env)


_SHELL = "/bin/sh"
_ENOEXEC = 8     # Linux, macOS and the BSDs alike


def _shell_script(path: str, error: OSError) -> bool:
    """Whether *path*, which the kernel refused to execute (*error*), is a script without a
    `#!` line: execvp (and so sh, env, make) runs those with /bin/sh. A NUL byte in its
    first line means a binary instead (bash's test), which stays an error."""
    if error.errno != _ENOEXEC:
        return False
    try:
        head = _read_small(path)[:80]
    except OSError:
        return False
    return b"\0" not in head.partition(b"\n")[0]


def tree_rss(pid: int, anon: bool = False) -> int:
    """Resident bytes of process *pid* and all its descendants, now (0 if it is gone);
    with *anon*, only their anonymous (private) pages: statm's resident minus shared.

    A compile is several processes at once (gcc -pipe runs cc1plus and as together),
    and wait4's ru_maxrss is only the largest of them: a reservation sized by it
    undercounts (measured: 538 MiB by ru_maxrss, 775 MiB for the tree). A child is
    listed under the thread that started it: cargo starts rustc from its worker threads,
    so every thread's list is read, not only the main thread's. What a step adds to a
    memory cgroup is its anonymous memory: the file pages in each process's RSS (cc1plus's
    and libc's text, ~30 MiB a compile) are in the page cache once, shared by every step,
    and counting them per process made two compiles look too big for a 512 MiB runner.
    """
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            statm = _read_small("/proc/%d/statm" % p).split()
            total += (int(statm[1]) - int(statm[2]) if anon else int(statm[1])) * _PAGE
            for task in posix.listdir("/proc/%d/task" % p):
                todo.extend(int(c) for c in _read_small("/proc/%d/task/%s/children" % (p, task)).split())
        except (OSError, ValueError, IndexError):
            continue
    return total


def _read_small(path: str) -> bytes:
    fd = posix.open(path, posix.O_RDONLY | O_CLOEXEC)
    try:
        return posix.read(fd, 4096)
    finally:
        posix.close(fd)


_PAGE = posix.sysconf("SC_PAGE_SIZE") if hasattr(posix, "sysconf") else 4096


MIN_SAMPLES = 4          # ~20 ms of a tool's life sampled: its tree's peak is seen, not guessed


def _sample(pid: int, box: list) -> None:
    """Thread body: keep box[0] = the largest tree_rss(pid, anon=True) seen until box[1]
    is set. Samples every 5 ms at first, then less often (every 50 ms from ~0.5 s on)."""
    interval = 0.005
    while not box[1]:
        rss = tree_rss(pid, anon=True)
        if rss > box[0]:
            box[0] = rss
        if rss:
            box[2] += 1
        time.sleep(interval)
        interval = min(interval * 1.3, 0.05)


def spawn_program(path: str, argv: list, env: dict, capture_stderr: bool = False,
                  on_start=None, sample_tree: bool = False, die_with_parent: bool = False,
                  watch: bytes = None, hold=None) -> Finished:
    """Run *path* as a child and wait for it, forwarding SIGINT/SIGTERM/SIGHUP to it.

    The child gets the signal dispositions shim was started with, so a tool that
    would have ignored SIGHUP under nohup still does. With *capture_stderr* the
    tool's stderr passes through a pipe: shim copies it to its own stderr as it
    comes and keeps the last 64 KiB (to recognise out-of-memory messages), noting when
    the bytes *watch* first pass (Finished.noticed: rustc's metadata notice). With
    *hold* (a function: the offset in a chunk to hold back from, or -1) the rest of stderr
    from there on is kept in Finished.withheld instead (up to HOLD_MAX bytes), for the
    caller to show or not. With *sample_tree* a thread samples the anonymous memory of the
    tool's whole process tree (what it is charged beyond the shared page cache), and max_rss
    is that peak; wait4's ru_maxrss (which counts file pages) only when the tool ended before
    MIN_SAMPLES samples could be taken, a peak they may have missed. Raises OSError
    when the program cannot be started. *on_start* is called with the pid. With
    *die_with_parent* (Linux; True or "TERM": SIGTERM, "KILL": SIGKILL) the child gets that
    signal if shim dies first, even of kill -9: `shim build`'s ninja must not run on,
    orphaned, after it, and a spawned step's tool must not run on without the reservation
    its shim held (SIGKILL).
    """
    box = [0, False, 0]          # peak, done, samples taken
    child = []
    pending = []
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signum)
        if child:
            try:
                posix.kill(child[0], signum)
            except OSError:
                pass
        else:
            pending.append(signum)

    previous = []
    for signum in _FORWARDED:
        handler = _signal.getsignal(signum)
        if handler is not _signal.SIG_IGN:      # ignored by whoever started us: keep it so
            previous.append((signum, handler))
            _signal.signal(signum, forward)
    flush_stdio()
    tail = b""
    noticed = None
    held = b""
    try:
        actions = ()
        if capture_stderr:
            r, w = posix.pipe()
            actions = ((posix.POSIX_SPAWN_DUP2, w, 2), (posix.POSIX_SPAWN_CLOSE, r))
        try:
            sigdef = _RESTORE_DEFAULT + tuple(s for s, _ in previous)
            try:
                pid = _start(path, argv, env, actions, sigdef, die_with_parent)
            except OSError as e:
                if not _shell_script(path, e):
                    raise
                pid = _start(_SHELL, [_SHELL, path] + argv[1:], env, actions, sigdef, die_with_parent)
        finally:
            if capture_stderr:
                posix.close(w)
        child.append(pid)
        if on_start:
            on_start(pid)
        if sample_tree and _PROC_CHILDREN:
            _thread.start_new_thread(_sample, (pid, box))
        for signum in pending:
            forward(signum, None)
        if capture_stderr:
            try:
                tail, noticed, held = _relay(r, watch, hold)
            finally:
                posix.close(r)
        _, status, usage = posix.wait4(pid, 0)   # EINTR is retried after `forward` runs (PEP 475)
        box[1] = True
    finally:
        for signum, handler in previous:
            _signal.signal(signum, handler)
    if posix.WIFSIGNALED(status):
        code, sig = None, posix.WTERMSIG(status)
    else:
        code, sig = posix.WEXITSTATUS(status), None
    peak = box[0] if box[2] >= MIN_SAMPLES else max(usage.ru_maxrss * _KB, box[0])
    return Finished(code, sig, peak, usage.ru_utime, usage.ru_stime,
                    forwarded[0] if forwarded else None, tail, noticed, held)


def _check_executable(path: str) -> None:
    """OSError as execve(*path*) would raise it, where setpriv would otherwise answer in its
    own words: a missing or non-executable file, a `#!` interpreter that is missing, a file
    that is neither an ELF program, a script nor text (execvp runs text with /bin/sh)."""
    st = posix.stat(path)                           # ENOENT, ENOTDIR, ELOOP...
    if st.st_mode & 0o170000 == 0o040000 or not posix.access(path, posix.X_OK):
        raise OSError(errno.EACCES, posix.strerror(errno.EACCES), path)
    try:
        head = _read_small(path)[:256]
    except OSError:
        return                                      # execute-only: let exec decide
    if head[:2] == b"#!":
        interpreter = head[2:].partition(b"\n")[0].strip().split(b" ")[0]
        if interpreter and not posix.access(interpreter, posix.X_OK):
            raise OSError(errno.ENOENT, posix.strerror(errno.ENOENT), path)
    elif head[:4] == b"\x7fELF":
        if len(head) < 52 or head[4] not in (1, 2) or head[5] not in (1, 2):
            raise OSError(_ENOEXEC, posix.strerror(_ENOEXEC), path)
    elif b"\0" in head.partition(b"\n")[0]:
        raise OSError(_ENOEXEC, posix.strerror(_ENOEXEC), path)


def _start(path: str, argv: list, env: dict, actions, sigdef, die_with_parent) -> int:
    deathsig = "TERM" if die_with_parent is True else die_with_parent
    if deathsig and _SETPRIV and argv[:1] == [path]:
        _check_executable(path)        # as execve would: setpriv's own message is not ours
        return posix.posix_spawn(_SETPRIV, [_SETPRIV, "--pdeathsig", deathsig, "--"] + argv,
                                 env, file_actions=actions, setsigdef=sigdef)
    if deathsig == "TERM" and _PROC_CHILDREN:
        return _fork_exec_dying_with_parent(path, argv, env, sigdef)
    return posix.posix_spawn(path, argv, env, file_actions=actions, setsigdef=sigdef)


def _fork_exec_dying_with_parent(path: str, argv: list, env: dict, sigdef) -> int:
    """fork + prctl(PR_SET_PDEATHSIG, SIGTERM) + execve (posix_spawn cannot set the
    parent-death signal); OSError in the parent if the program cannot be executed."""
    import ctypes    # cold: only `shim build` asks for this
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = posix.getpid()
    r, w = posix.pipe()                    # close-on-exec: an exec that works closes w
    pid = posix.fork()
    if pid == 0:                           # the child: no Python-level cleanup from here on
        try:
            posix.close(r)
            for signum in sigdef:
                _signal.signal(signum, _signal.SIG_DFL)
            prctl(1, _signal.SIGTERM, 0, 0, 0)           # PR_SET_PDEATHSIG
            if posix.getppid() != parent:                # the parent died before prctl
                posix._exit(128 + _signal.SIGTERM)
            posix.execve(path, argv, env)
        except OSError as e:
            posix.write(w, b"%d" % (e.errno or 0))
        except BaseException:
            pass
        posix._exit(127)
    posix.close(w)
    try:
        failure = b""
        while True:
            chunk = posix.read(r, 64)
            if not chunk:
                break
            failure += chunk
    finally:
        posix.close(r)
    if failure:
        posix.waitpid(pid, 0)
        code = int(failure) if failure.isdigit() else 0
        raise OSError(code, posix.strerror(code), path)
    return pid


def _relay(fd: int, watch: bytes = None, hold=None):
    """Copy *fd* to stderr as it comes (a read returns what the tool has written so far:
    cargo must see rustc's lines when rustc writes them) until EOF, but from where *hold*
    says on (see spawn_program); return its last 64 KiB, when *watch* first passed (or
    None) and what was held back."""
    tail = b""
    noticed = None
    held = None
    while True:
        chunk = posix.read(fd, 65536)
        if not chunk:
            return tail, noticed, held or b""
        tail = (tail + chunk)[-65536:]
        if watch and noticed is None and watch in tail[-len(watch) - len(chunk):]:
            noticed = time.time()
        if held is None and hold is not None:
            cut = hold(chunk)
            if cut >= 0:
                held, chunk = chunk[cut:], chunk[:cut]
        elif held is not None:
            held += chunk
            chunk = b""
            if len(held) > HOLD_MAX:              # not a dying tool's last words: let it all out
                held, chunk, hold = None, held, None
        view = memoryview(chunk)
        while view:
            try:
                view = view[posix.write(2, view):]
            except OSError:
                break                     # stderr gone: keep reading so the tool is not blocked


def die_of_signal(signum: int) -> "NoReturn":
    """Terminate shim by *signum*, as the tool was, so the caller sees the same death."""
    flush_stdio()
    try:
        import resource   # already loaded by wait4; a re-raised SIGSEGV must not dump shim's core
        soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ImportError, OSError, ValueError):
        pass
    try:
        _signal.signal(signum, _signal.SIG_DFL)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, (signum,))
    except (OSError, ValueError):
        pass
    posix.kill(posix.getpid(), signum)
    posix._exit(128 + signum)   # only if the signal did not end us (e.g. SIGCHLD-like)
