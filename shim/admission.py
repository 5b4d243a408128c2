"""Memory admission: a step runs once it holds slots worth its expected peak.

The budget itself (how many bytes, asked for by whom) is `budget()`, the one resolution
every caller uses: steps, `shim build`, `shim doctor`, `shim bazel init`.

The budget is cut into `total` slots of `unit` bytes: byte i+1 of one pool file
in the per-user runtime directory is slot i, byte 0 is the gate. A step takes k
slots with POSIX record locks (lockf), all or nothing, while holding the gate;
if they are not all free it lets go of everything and retries with backoff.
After `patience` seconds it drains instead: it keeps the gate (so no one else is
admitted the ordinary way) and waits until the running steps free enough: a big
step is not starved by a stream of small ones, and this cannot deadlock, since a
step that holds slots never waits. A step wanting more than the budget takes all
of it: it runs alone, and nothing is ever refused.

While a step drains, smaller steps are still admitted beside it (backfill) as long
as everything admitted since the drain began fits in the budget together with the
drainer: a core is not left idle for the length of the step being waited for, and
the drainer still starts once the steps that ran when it began have ended. The
drainer posts its need in the pool file; backfillers count what they took there
(under a lock byte of their own), so the sum is exact.

Why record locks rather than flock (as ../shared/DESIGN.md sketched): they are
owned by the process, survive execve and vanish when it exits (kill -9 too), so
an exec'd tool holds its own reservation; unlike flock they are not inherited
by fork, so a daemon the tool leaves behind (a compiler server, a background
linker) can never keep a slot. A holder's pid and tool are written beside its
slots for `shim doctor`.

The pool file descriptor stays open and inheritable across exec: closing any
descriptor of the file would drop all of the process's locks on it.
"""

import errno
import time

from shim import budget as grammar
from shim import host
from shim.exit_status import USAGE, ShimError
from shim.host import osapi

GATE = 0
DEFAULT_UNIT = 16 << 20     # fine enough that rounding up wastes little (587 MiB -> 592)
MAX_SLOTS = 4096            # so the unit stays 16 MiB up to a 64 GiB limit: slots are bytes 1 to 4096
DRAIN_LOCK = 4097            # serialises backfillers and the drainer's record
DRAIN_AT = 4104              # "need backfilled" of the step draining now, blank when none
OWNER_BASE = 4160            # owner records: 64 bytes per slot from here (a sparse file)
OWNER_SIZE = 64
DRAIN_SIZE = 32
PATIENCE = 2.0               # seconds of fair retrying before draining
ROSTER_BASE = OWNER_BASE + MAX_SLOTS * OWNER_SIZE   # "pid slots" of each admitted step, at its first slot
                                                     # ("pid -slots": admitted on a guess)
ROSTER_SIZE = 16
LIVE_POLL = 0.02             # seconds between looks of a step that waits for memory really in use


def budget_request(env: dict, config: dict, option=None, default=grammar.DEFAULT):
    """(text, origin) of the memory budget asked for: *option* (`--budget`), else
    SHIM_MEMORY_BUDGET, else toolchain.toml memory.budget, else *default* (auto, wherever
    a step runs). The one place that says who wins."""
    if option:
        return str(option), "--budget %s" % option
    if env.get("SHIM_MEMORY_BUDGET"):
        return env["SHIM_MEMORY_BUDGET"], "SHIM_MEMORY_BUDGET=%s" % env["SHIM_MEMORY_BUDGET"]
    configured = ((config or {}).get("memory") or {}).get("budget")
    if configured:
        return configured, "memory.budget %r" % configured
    return default, "memory budget %r (the default)" % default


def budget(env: dict, config: dict, option=None, default=grammar.DEFAULT):
    """Bytes steps are admitted into, or None for none (see budget_request; the grammar
    and the limit are shim/budget.py's); a bad request is a ShimError naming where it
    came from (exit 2)."""
    text, origin = budget_request(env, config, option, default)
    try:
        kind, value = grammar.parse(text)
        if kind == "size" or kind == "off":
            return value
        found = grammar.limit(env)
        return grammar.of(kind, value, *found) if found else None
    except ValueError as e:
        raise ShimError("%s: %s" % (origin, e), USAGE) from None


class FileLocks:
    """The pool's locks and records: POSIX record locks on bytes of one file (the real thing).

    The seam of this module (as ninja's CommandRunner is its build's): acquire() asks an
    object with five of these methods (all but held_elsewhere, the watcher's), so tests drive
    the admission logic with an in-memory table and a fake clock, several "processes" in one
    (tests/admission_test.py)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def try_lock(self, offset: int, length: int = 1) -> bool:
        osapi.lseek(self.fd, offset, 0)
        try:
            osapi.lockf(self.fd, osapi.F_TLOCK, length)
        except OSError:          # EAGAIN/EACCES: another process holds it
            return False
        return True

    def lock(self, offset: int) -> None:
        osapi.lseek(self.fd, offset, 0)
        osapi.lockf(self.fd, osapi.F_LOCK, 1)

    def unlock(self, offset: int) -> None:
        osapi.lseek(self.fd, offset, 0)
        osapi.lockf(self.fd, osapi.F_ULOCK, 1)

    def held_elsewhere(self, offset: int) -> bool:
        """Whether another process holds byte *offset* (a test: nothing is taken)."""
        osapi.lseek(self.fd, offset, 0)
        try:
            osapi.lockf(self.fd, osapi.F_TEST, 1)
        except OSError:
            return True
        return False

    def read(self, size: int, offset: int) -> bytes:
        return osapi.pread(self.fd, size, offset)

    def write(self, data: bytes, offset: int) -> None:
        osapi.pwrite(self.fd, data, offset)


class Reservation:
    """Slots held by this process: released when it exits or calls release()."""

    __slots__ = ("locks", "slots", "unit", "waited", "listed")

    def __init__(self, locks, slots, unit, waited, listed=False):
        self.locks, self.slots, self.unit, self.waited, self.listed = locks, slots, unit, waited, listed

    @property
    def bytes(self) -> int:
        return len(self.slots) * self.unit

    def release(self) -> None:
        if self.listed and self.slots:     # before the slot: while it is held, the entry is ours
            self.locks.write(bytes(ROSTER_SIZE), ROSTER_BASE + self.slots[0] * ROSTER_SIZE)
        for i in self.slots:
            self.locks.unlock(1 + i)
        self.slots = []


# --- live usage (issue 18): what may be admitted now, given the memory really in use --------

def unfilled(steps) -> int:
    """Bytes the admitted *steps* [(reservation, current size)] may still grow into: a step
    counts at the larger of its reservation and its size, and its size is in use already."""
    return sum(max(0, res - size) for res, size in steps)


def room(ceiling: int, in_use: int, steps) -> int:
    """Bytes a new step may take now under *ceiling* (the limit less its reserve): what is not
    in use, less what the admitted *steps* may still grow into. Memory in use that no admitted
    step holds (a neighbour: a database, the runner's agent, another build) shrinks it."""
    return ceiling - in_use - unfilled(steps)


def admit_now(ceiling: int, need: int, in_use, steps, alone: bool = False) -> bool:
    """Whether a step needing *need* bytes may start now. Without a reading (*in_use* None)
    the reservations alone decide, as they did before; a step with no admitted step beside it
    (*alone*) always starts, so a build progresses whatever its neighbours hold."""
    return in_use is None or alone or need <= room(ceiling, in_use, steps)


def _roster(data: bytes):
    """[(slot, pid, slots)] of the roster's entries in *data* (some may be stale: their step
    is gone)."""
    out = []
    end = data.find(b"\n")
    while end >= 0:
        i = end // ROSTER_SIZE
        fields = data[i * ROSTER_SIZE:end].split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].lstrip(b"-").isdigit():
            out.append((i, int(fields[0]), abs(int(fields[1]))))
        end = data.find(b"\n", end + 1)
    return out


def _fits(locks, total: int, unit: int, held: list, live) -> bool:
    """Whether the step holding *held* may start now, given *live* = (ceiling, reader[, mark,
    guessed]): a reader(exact) of the bytes in use (shim/budget.py in_use). First the cheap
    bound (usage with page cache, every roster entry at its full reservation); only when that
    leaves no room, the exact reading: page cache left out, the entries of gone steps dropped
    (and cleared: their first slot is free), each live step's process tree measured. While a
    step admitted on a guess runs, or this one is *guessed*, everything must fit below *mark*
    (the pause mark): a guess may be wrong, and the rest is the pause watcher's time to act."""
    ceiling, reader = live[0], live[1]
    need = len(held) * unit
    usage = reader(False)
    if usage is None:
        return True
    data = locks.read(total * ROSTER_SIZE, ROSTER_BASE)
    if len(live) > 2 and (live[3] or b"-" in data):       # a guess among the steps: keep the margin
        ceiling = live[2]
    try:                                      # every entry's slots, in C: no loop over entries
        listed = sum(map(abs, map(int, data.translate(None, b"\0").split()[1::2])))
    except ValueError:
        listed = total
    if admit_now(ceiling, need, usage, [(listed * unit, 0)]):
        return True
    usage, steps = _exact(locks, unit, held, reader, data)
    return admit_now(ceiling, need, usage, steps, alone=not steps)


def _exact(locks, unit: int, held: list, reader, data: bytes):
    """(bytes in use without page cache, [(reservation, bytes now)] of the other listed steps):
    the entries of gone steps dropped (and cleared: their first slot is free), each live
    step's process tree measured."""
    usage = reader(True)
    mine = set(held)
    steps = []
    for i, pid, k in _roster(data):
        if i in mine:
            continue
        if locks.try_lock(1 + i):            # its first slot is free: the step is gone
            locks.write(bytes(ROSTER_SIZE), ROSTER_BASE + i * ROSTER_SIZE)
            locks.unlock(1 + i)
            continue
        steps.append((k * unit, host.tree_rss(pid)))
    return usage, steps


def room_of(reservation, total: int, live) -> int:
    """Bytes the step holding *reservation* may take now without pressing on the others,
    read exactly (shim/budget.py in_use, each listed step measured), under *live*'s ceiling
    (not the guesses' mark: this is what the step may grow into, not what admits it); None
    without a reading. A runtime with a soft memory limit (Go's GOMEMLIMIT) is given it."""
    if not live or not reservation.slots:
        return None
    locks = reservation.locks
    usage, steps = _exact(locks, reservation.unit, reservation.slots, live[1],
                          locks.read(total * ROSTER_SIZE, ROSTER_BASE))
    if usage is None:
        return None
    return room(live[0], usage, steps)


def _list(locks, held: list, live=()) -> None:
    """Enter the step holding *held* in the roster at its first slot (its slots negative when
    *live* says it was admitted on a guess); entries at its other slots are stale (their
    writers let those slots go) and are cleared, one write per run of consecutive slots.
    A stale entry left at a slot this step holds would count it twice: its lock is held,
    so nobody can tell the entry's step is gone (a 128 MiB phantom held a small runner's
    second rustc back for seconds, BUILD.md)."""
    slots = -len(held) if len(live) > 3 and live[3] else len(held)
    data = ("%d %d" % (host.getpid(), slots)).ljust(ROSTER_SIZE - 1).encode("ascii") + b"\n"
    if held == list(range(held[0], held[0] + len(held))):     # one run, as _take mostly takes: no loop
        locks.write(data + bytes(ROSTER_SIZE * len(held) - len(data)), ROSTER_BASE + held[0] * ROSTER_SIZE)
        return
    start = prev = held[0]
    for i in held[1:] + [-1]:                 # a take that wrapped round is two runs
        if i == prev + 1:
            prev = i
            continue
        locks.write(data + bytes(ROSTER_SIZE * (prev - start + 1) - len(data)), ROSTER_BASE + start * ROSTER_SIZE)
        data = b""
        start = prev = i


def geometry(budget: int, unit: int = DEFAULT_UNIT, limit: int = None):
    """(unit, total): slots of at least *unit* bytes, as many as *budget* holds (at most
    MAX_SLOTS). The unit grows with the *limit* (the cgroup's or the machine's), not with
    the budget: every build under one limit, whatever its budget or -j, uses one pool."""
    unit = max(unit, -(-(limit or budget) // MAX_SLOTS))
    return unit, max(1, min(MAX_SLOTS, budget // unit))


def pool_path(run_dir: str, unit: int) -> str:
    """One pool per user and slot size (so per machine or cgroup): builds side by side share
    it, each taking slots below its own total, so together they never reserve more than
    the largest budget among them."""
    return host.join(run_dir, "pool-%d" % (unit >> 20))


def cpu_pool_path(run_dir: str, cores: int) -> str:
    """CPU slots (`shim build` with its jobserver): one per core, machine-wide."""
    return host.join(run_dir, "cpu-%d" % cores)


def slots_for(estimate: int, unit: int, total: int) -> int:
    return max(1, min(total, -(-estimate // unit)))


_OPEN = {}     # path -> FileLocks: one descriptor per pool and process (a close would drop its locks)


def open_pool(path: str, dir_fd=None) -> FileLocks:
    """The pool file *path* (created if needed), its descriptor inheritable across exec:
    the exec'd tool holds the reservation, and closing it would drop every lock on it.
    OSError when it cannot be used: opened only inside a private directory of ours, relative
    to it (host.open_private), not followed if a symlink, not waited on if a FIFO, refused
    unless a regular file of ours. *dir_fd*: its directory, opened and checked already
    (shim/rundir.py dir_fd)."""
    locks = _OPEN.get(path)
    if locks is not None:
        return locks
    try:
        fd = host.open_private(path, osapi.O_RDWR | osapi.O_CREAT, 0o600, dir_fd)
    except OSError as e:
        raise OSError("cannot use %s: %s" % (path, "a symlink (not followed)" if e.errno == errno.ELOOP
                                              else e.strerror or e)) from None
    osapi.set_inheritable(fd, True)     # (os.open's descriptors never are: PEP 446)
    locks = _OPEN[path] = FileLocks(fd)
    return locks


def _release_all(locks, held: list) -> None:
    for i in held:
        locks.unlock(1 + i)
    del held[:]


def _take(locks, total: int, want: int, first: int, held: list) -> None:
    """Add up to *want* free slots to *held*, scanning from slot *first*."""
    if not held and first + want <= total and want > 1 and locks.try_lock(1 + first, want):
        held.extend(range(first, first + want))     # all free: one lock call for the whole run
        return
    mine = set(held)
    goal = len(held) + want
    for n in range(total):
        i = (first + n) % total
        if i in mine or not locks.try_lock(1 + i):
            continue
        held.append(i)
        if len(held) == goal:
            return


def acquire(path: str, total: int, k: int, unit: int, patience: float = PATIENCE,
            owner: str = "", locks=None, clock=time.monotonic, sleep=time.sleep, live=None) -> Reservation:
    """Block until this process holds min(k, total) slots of pool *path* (or of *locks*,
    with *clock* and *sleep*: the test seam). With *live* = (ceiling, reader[, mark, guessed]) the slots are
    kept only when the memory really in use leaves room for them too (_fits): a step that
    waits for it looks again every LIVE_POLL seconds."""
    locks = locks or open_pool(path)
    k = max(1, min(k, total))
    start = clock()
    first = host.getpid() % total
    backoff = 0.002
    held = []
    while True:
        if not locks.try_lock(GATE):          # held: briefly by a taker, or by a drainer
            if _backfill(locks, total, k, first, held, unit, live):
                break
            sleep(backoff)
            backoff = min(backoff * 2, 0.005)
            continue
        if _drain_state(locks) is not None:
            _post_drain(locks, None)          # left by a drainer that was killed
        _take(locks, total, k, first, held)
        short = len(held) == k and live and not _fits(locks, total, unit, held, live)
        if (len(held) < k or short) and clock() - start >= patience:
            _post_drain(locks, (k, 0))
            while len(held) < k or short:     # drain: keep the gate, take all k at once
                _release_all(locks, held)     # (hoarding would leave nothing to backfill)
                sleep(LIVE_POLL if short else 0.005)
                _take(locks, total, k, first, held)
                if live and len(held) == k:
                    locks.lock(DRAIN_LOCK)    # backfillers list themselves under it
                    try:
                        short = not _fits(locks, total, unit, held, live)
                    finally:
                        locks.unlock(DRAIN_LOCK)
            _post_drain(locks, None)
        if len(held) == k and not short:
            if live:
                _list(locks, held, live)      # before the gate opens: the next taker counts it
            locks.unlock(GATE)
            break
        _release_all(locks, held)
        locks.unlock(GATE)
        sleep(LIVE_POLL if short else backoff)
        backoff = min(backoff * 2, 0.005)     # a freed core must not idle long: poll often, it is cheap
    if owner:
        record = ("%d %s" % (host.getpid(), owner))[:OWNER_SIZE - 1].ljust(OWNER_SIZE - 1) + "\n"
        data = record.encode("utf-8", "replace")[:OWNER_SIZE]
        if held == list(range(held[0], held[0] + len(held))):
            locks.write(data * len(held), OWNER_BASE + held[0] * OWNER_SIZE)     # one write for a run
        else:
            for i in held:
                locks.write(data, OWNER_BASE + i * OWNER_SIZE)
    return Reservation(locks, held, unit, clock() - start, bool(live))


def _drain_state(locks):
    """(need, backfilled) posted by the step draining the pool now, or None."""
    fields = locks.read(DRAIN_SIZE, DRAIN_AT).split()
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        return None
    return int(fields[0]), int(fields[1])


def _write_drain(locks, state) -> None:
    text = "" if state is None else "%d %d" % state
    locks.write(text.ljust(DRAIN_SIZE - 1).encode("ascii") + b"\n", DRAIN_AT)


def _post_drain(locks, state) -> None:
    """Set (or with None clear) the drain record, under the backfillers' lock."""
    locks.lock(DRAIN_LOCK)
    try:
        _write_drain(locks, state)
    finally:
        locks.unlock(DRAIN_LOCK)


def _backfill(locks, total: int, k: int, first: int, held: list, unit: int = 0, live=None) -> bool:
    """Take *k* slots beside a draining step if all that was taken since it began, these
    included, still leaves room for it (and, with *live*, the memory in use does); True if taken."""
    locks.lock(DRAIN_LOCK)
    try:
        state = _drain_state(locks)
        if state is None or state[1] + k + state[0] > total:
            return False
        _take(locks, total, k, first, held)
        if len(held) < k or (live and not _fits(locks, total, unit, held, live)):
            _release_all(locks, held)
            return False
        if live:
            _list(locks, held, live)    # under the drain lock: the drainer counts it at once
        _write_drain(locks, (state[0], state[1] + k))
        return True
    finally:
        locks.unlock(DRAIN_LOCK)


def usage(path: str, total: int):
    """[(slot, owner text)] of the slots other processes hold now (for shim doctor)."""
    try:
        fd = osapi.open(path, osapi.O_RDWR)
    except OSError:
        return []
    held = []
    try:
        for i in range(total):
            osapi.lseek(fd, 1 + i, 0)
            try:
                osapi.lockf(fd, osapi.F_TEST, 1)
            except OSError:
                owner = osapi.pread(fd, OWNER_SIZE, OWNER_BASE + i * OWNER_SIZE)
                held.append((i, owner.decode("utf-8", "replace").strip()))
    finally:
        osapi.close(fd)
    return held
