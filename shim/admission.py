"""Memory admission: a step runs once it holds slots worth its expected peak.

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

import time

from shim import host
from shim.host import osapi

GATE = 0
OWNER_BASE = 4096            # owner records: 64 bytes per slot from here
OWNER_SIZE = 64
DEFAULT_UNIT = 16 << 20     # fine enough that rounding up wastes little (587 MiB -> 592)
MAX_SLOTS = 1024
DRAIN_LOCK = 2047            # serialises backfillers and the drainer's record
DRAIN_AT = 2048              # "need backfilled" of the step draining now, blank when none
DRAIN_SIZE = 32
PATIENCE = 2.0               # seconds of fair retrying before draining


class Reservation:
    """Slots held by this process: released when it exits or calls release()."""

    __slots__ = ("fd", "slots", "unit", "waited")

    def __init__(self, fd, slots, unit, waited):
        self.fd, self.slots, self.unit, self.waited = fd, slots, unit, waited

    @property
    def bytes(self) -> int:
        return len(self.slots) * self.unit

    def release(self) -> None:
        for i in self.slots:
            _lock(self.fd, 1 + i, osapi.F_ULOCK)
        self.slots = []


def geometry(budget: int, unit: int = DEFAULT_UNIT):
    """(unit, total): slots of at least *unit* bytes, at most MAX_SLOTS of them."""
    unit = max(unit, -(-budget // MAX_SLOTS))
    return unit, max(1, budget // unit)


def pool_path(run_dir: str, unit: int, total: int) -> str:
    """One pool per (unit, total): builds with the same budget share it machine-wide."""
    return host.join(run_dir, "pool-%d-%d" % (unit >> 20, total))


def cpu_pool_path(run_dir: str, cores: int) -> str:
    """CPU slots (`shim build` with its jobserver): one per core, machine-wide."""
    return host.join(run_dir, "cpu-%d" % cores)


def slots_for(estimate: int, unit: int, total: int) -> int:
    return max(1, min(total, -(-estimate // unit)))


def _lock(fd: int, offset: int, cmd) -> None:
    osapi.lseek(fd, offset, 0)
    osapi.lockf(fd, cmd, 1)


def _take(fd: int, total: int, want: int, first: int, held: list) -> None:
    """Add up to *want* free slots to *held*, scanning from slot *first*."""
    mine = set(held)
    goal = len(held) + want
    for n in range(total):
        i = (first + n) % total
        if i in mine:
            continue
        try:
            _lock(fd, 1 + i, osapi.F_TLOCK)
        except OSError:          # EAGAIN/EACCES: another process holds it
            continue
        held.append(i)
        if len(held) == goal:
            return


def acquire(path: str, total: int, k: int, unit: int, patience: float = PATIENCE,
            owner: str = "") -> Reservation:
    """Block until this process holds min(k, total) slots of pool *path*."""
    fd = osapi.open(path, osapi.O_RDWR | osapi.O_CREAT, 0o600)
    osapi.set_inheritable(fd, True)
    k = max(1, min(k, total))
    start = time.monotonic()
    first = host.getpid() % total
    backoff = 0.002
    held = []
    while True:
        try:
            _lock(fd, GATE, osapi.F_TLOCK)
        except OSError:                       # held: briefly by a taker, or by a drainer
            if _backfill(fd, total, k, first, held):
                break
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.005)
            continue
        if _drain_state(fd) is not None:
            _post_drain(fd, None)             # left by a drainer that was killed
        _take(fd, total, k, first, held)
        if len(held) < k and time.monotonic() - start >= patience:
            _post_drain(fd, (k, 0))
            while len(held) < k:              # drain: keep the gate, take all k at once
                for i in held:                # (hoarding would leave nothing to backfill)
                    _lock(fd, 1 + i, osapi.F_ULOCK)
                held = []
                time.sleep(0.005)
                _take(fd, total, k, first, held)
            _post_drain(fd, None)
        if len(held) == k:
            _lock(fd, GATE, osapi.F_ULOCK)
            break
        for i in held:
            _lock(fd, 1 + i, osapi.F_ULOCK)
        held = []
        _lock(fd, GATE, osapi.F_ULOCK)
        time.sleep(backoff)
        backoff = min(backoff * 2, 0.005)     # a freed core must not idle long: poll often, it is cheap
    if owner:
        record = ("%d %s" % (host.getpid(), owner))[:OWNER_SIZE - 1].ljust(OWNER_SIZE - 1) + "\n"
        data = record.encode("utf-8", "replace")[:OWNER_SIZE]
        for i in held:
            osapi.pwrite(fd, data, OWNER_BASE + i * OWNER_SIZE)
    return Reservation(fd, held, unit, time.monotonic() - start)


def _drain_state(fd: int):
    """(need, backfilled) posted by the step draining the pool now, or None."""
    fields = osapi.pread(fd, DRAIN_SIZE, DRAIN_AT).split()
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        return None
    return int(fields[0]), int(fields[1])


def _write_drain(fd: int, state) -> None:
    text = "" if state is None else "%d %d" % state
    osapi.pwrite(fd, text.ljust(DRAIN_SIZE - 1).encode("ascii") + b"\n", DRAIN_AT)


def _post_drain(fd: int, state) -> None:
    """Set (or with None clear) the drain record, under the backfillers' lock."""
    _lock(fd, DRAIN_LOCK, osapi.F_LOCK)
    try:
        _write_drain(fd, state)
    finally:
        _lock(fd, DRAIN_LOCK, osapi.F_ULOCK)


def _backfill(fd: int, total: int, k: int, first: int, held: list) -> bool:
    """Take *k* slots beside a draining step if all that was taken since it began, these
    included, still leaves room for it; True if taken."""
    _lock(fd, DRAIN_LOCK, osapi.F_LOCK)
    try:
        state = _drain_state(fd)
        if state is None or state[1] + k + state[0] > total:
            return False
        _take(fd, total, k, first, held)
        if len(held) < k:
            for i in held:
                _lock(fd, 1 + i, osapi.F_ULOCK)
            del held[:]
            return False
        _write_drain(fd, (state[0], state[1] + k))
        return True
    finally:
        _lock(fd, DRAIN_LOCK, osapi.F_ULOCK)


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
