"""Keeping the ledger small: the last `ledger.keep_builds` builds, in at most `ledger.max_size`.

Cold code only: `shim build` and `shim cargo` when they finish, and `shim report`, never a
step. The cut is found without parsing JSON: a build ends with its `build` record (a line
that begins `{"rec": "build", `), so the kept part starts just after the build record of the
build before the last N; if that is still more than max_size, at the first build boundary
(else line boundary) that fits. Records without a build id (plain ninja) are kept or cut by
where they lie.

Appenders (every step) take no lock: a compaction must not lose a record written while it
copies. Compactions exclude each other with flock on `ledger-v1.jsonl.lock` (a busy lock
means another is at it: skip). Then:
1. copy the header and the kept part of the file as it is to a temporary file, then whatever
   was appended meanwhile, until the size stops growing (size S), whole lines only (a write
   in progress makes the file longer page by page: half a record copied, the rest behind the
   next record, would lose it);
2. rename the temporary file over the ledger: a step that opens the ledger now gets it;
3. append the seal line (ledger.SEAL) to the old file: one O_APPEND write, so every record
   in the old file is either before it or after it;
4. copy what lies between S and the seal (steps that had the old file open) to the new file.
A record after the seal was written by a step that opened the old file before step 2 and
wrote after step 3; after each write a step compares the ledger path's inode with its
descriptor's (one stat): when they differ it looks for a seal before its record and, if
there is one, appends the record again to the new file (ledger._after_seal). A record is
therefore in the new file exactly once: before S (step 1), between S and the seal (step 4),
or after the seal (rewritten by its writer). A crash between steps 2 and 4 may lose the
records of that window: never a build.
"""

import contextlib
import os

from shim import ledger

KEEP_BUILDS = 20
MAX_SIZE = 64 << 20
BUILD_LINE = b'\n{"rec": "build", '
CHUNK = 1 << 20

# Test seam: called after the last copy, just before the rename (an append then lands in
# the old file after S).
_before_rename = None


def limits(config) -> tuple:
    """(keep_builds, max_size) from toolchain.toml's ledger table (or the defaults)."""
    conf = (config or {}).get("ledger") or {}
    return conf.get("keep_builds") or KEEP_BUILDS, conf.get("max_size") or MAX_SIZE


def maybe(ledger_dir, config) -> int:
    """Compact the ledger in *ledger_dir* if it holds more than the configured bound; the
    bytes dropped (0 when nothing was to do or it could not be done: never raises)."""
    if not ledger_dir:
        return 0
    keep, max_size = limits(config)
    try:
        return compact(ledger_dir, keep, max_size)
    except OSError:
        return 0


def compact(ledger_dir: str, keep: int = KEEP_BUILDS, max_size: int = MAX_SIZE, force: bool = False) -> int:
    """Keep the last *keep* builds in at most *max_size* bytes (*force*: rewrite even when
    nothing is cut, as tests do); returns the bytes dropped."""
    try:
        import fcntl
    except ImportError:           # Windows: no compaction (a file open elsewhere cannot be renamed over)
        return 0
    path = os.path.join(ledger_dir, ledger.FILENAME)
    flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | flags)
    except FileNotFoundError:
        return 0
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000):
            return 0
        lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | flags, 0o644)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0          # another compaction is at it
            return _compact(fd, path, st, keep, max_size, force)
        finally:
            os.close(lock)        # releases the lock
    finally:
        os.close(fd)


def _compact(fd: int, path: str, st, keep: int, max_size: int, force: bool) -> int:
    size = st.st_size
    header = os.pread(fd, len(ledger.HEADER), 0)
    if header != ledger.HEADER.encode():
        return 0                  # another format, or damaged: the reader starts over, leave it
    cut = _cut(fd, size, keep, max_size)
    if cut <= len(header) and not force:
        return 0
    cut = max(cut, len(header))
    tmp = "%s.%s.tmp" % (path, os.urandom(6).hex())
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, st.st_mode & 0o777)
    try:
        try:
            size = _whole_lines(fd, cut, size)
            _write(out, header)
            _copy(fd, out, cut, size)
            while True:                              # catch up with what was appended meanwhile
                now = _whole_lines(fd, size, os.fstat(fd).st_size)
                if now <= size:
                    break
                _copy(fd, out, size, now)
                size = now
        finally:
            os.close(out)
        if _before_rename:
            _before_rename()
        os.rename(tmp, path)
        tmp = None
    finally:
        if tmp:                                      # whatever went wrong, no temporary file stays
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    os.write(fd, b"\n" + ledger.SEAL + b"\n")
    seal = os.lseek(fd, 0, os.SEEK_CUR) - len(ledger.SEAL) - 1
    stragglers = os.pread(fd, seal - size, size).strip(b"\n")
    if stragglers:
        new = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            ledger.append_whole(new, stragglers + b"\n", os.fstat(new).st_size)
        finally:
            os.close(new)
    return cut - len(header)


def _whole_lines(fd: int, start: int, end: int) -> int:
    """The end of the last whole line in [start, end): a write in progress may have made the
    file longer before all of its record is there (the size grows page by page)."""
    while end > start:
        lo = max(start, end - 65536)
        i = os.pread(fd, end - lo, lo).rfind(b"\n")
        if i >= 0:
            return lo + i + 1
        end = lo
    return start


def _cut(fd: int, size: int, keep: int, max_size: int) -> int:
    """Where the kept part of the ledger begins."""
    ends = _build_ends(fd, size)
    cut = ends[-keep - 1] if len(ends) > keep else 0
    if size - cut - len(ledger.HEADER) <= max_size:
        return cut
    floor = size + len(ledger.HEADER) - max_size
    fitting = [e for e in ends if e >= floor]
    if fitting:
        return fitting[0]
    block = os.pread(fd, 1 << 16, floor - 1)      # else the first whole line that fits
    i = block.find(b"\n")
    return floor + i if i >= 0 else size


def _build_ends(fd: int, size: int) -> list:
    """Offsets just after each `build` record line, oldest first (read in chunks)."""
    ends = []
    buf, base, pos = b"", 0, 0
    while pos < size:
        chunk = os.pread(fd, min(CHUNK, size - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        buf += chunk
        i = 0
        while True:
            j = buf.find(BUILD_LINE, i)
            if j < 0:
                rest = max(i, len(buf) - len(BUILD_LINE) + 1)
                break
            k = buf.find(b"\n", j + 1)
            if k < 0:
                rest = j
                break
            ends.append(base + k + 1)
            i = k                # the next build line may begin with this newline
        base += rest
        buf = buf[rest:]
    return ends


def _copy(src: int, dst: int, start: int, end: int) -> None:
    while start < end:
        data = os.pread(src, min(CHUNK, end - start), start)
        if not data:
            return
        _write(dst, data)
        start += len(data)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
