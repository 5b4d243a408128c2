"""Pause before kill: the watcher that stops the youngest steps while memory runs short.

When the memory really in use (budget.in_use, as admission reads it) is past the high-water mark (memory.pause_at
of the limit less the reserve) and climbing fast enough to pass the limit less the reserve
within HORIZON (or is past that already), the most recently admitted running step is stopped,
with its process tree (SIGSTOP): a stopped step keeps what it holds but takes no more, so the
steps that were admitted first can finish and free theirs. While usage still climbs, the next
youngest is stopped too; once it falls below the low-water mark (memory.resume_at), the
paused steps are resumed (SIGCONT), oldest first, one a tick. The oldest running step is
never paused, and one that becomes the oldest is resumed at once: the build always
progresses, and a step left alone always runs. Pausing costs time; the kernel's OOM killer
costs the step (and a retry from the start).

Who is running comes from the stamps admitted steps write into the pool file
(shim/watcher.py), found through their roster entries (shim/admission.py); the watcher
clears both once their step is gone. The decisions are one pure function, decide(), tested on its own.
Each pause becomes a `pause` record (step id, when, how long) in the step's ledger, and
the watcher writes `usage` samples (in use, marks) there once a second while steps run.

Under `shim build` the driver's sampler calls Watcher.pace(); under plain ninja the first
admitted step starts `python -I -m shim.driver.pauses POOL TOTAL HIGH LOW`, which holds the
pool's WATCH_LOCK while it runs and leaves once no step has run for IDLE seconds.
"""

import fcntl
import os
import signal
import struct
import sys
import time

from shim import admission, budget, host, ledger, watcher

TICK = 0.1          # seconds between two looks at memory
NEAR_TICK = 0.02    # ... once usage is past half the low-water mark: two steps that allocate
                    # at ~2 GB/s went from there past the limit within one 0.1 s tick
IDLE = 2.0          # seconds in which no step ran before a detached watcher leaves
GROWTH = 8 << 20    # bytes usage must climb past the last pause before the next step is paused
HORIZON = 0.25      # seconds: above the mark, a climb that would not pass the limit less the reserve
                    # within this is let run (a pause costs its step's time; two rustcs at ~150 MiB
                    # in a 384 MiB runner sat past the mark for seconds and never near the limit)
WINDOW = 0.1        # seconds of readings the climb is measured over
SAMPLE_EVERY = 1.0  # seconds between usage samples in the ledger
_FLOCK = "hhqqi4x"  # struct flock (Linux): l_type, l_whence, l_start, l_len, l_pid
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)    # Linux >= 3.15; elsewhere stamps stay


def _slot_lock(kind: int, slot: int) -> bytes:
    """A struct flock for the byte of slot *slot* in the pool file (slot i is byte i + 1)."""
    return struct.pack(_FLOCK, kind, os.SEEK_SET, 1 + slot, 1, 0)


def decide(running, used, since, high: int, low: int, soon: int = None, ceiling: int = None):
    """(keys to pause, keys to resume) for *running* [(key, start time, paused)] steps
    when *used* bytes are in use (None: unknown), *since* the bytes in use at the last
    pause while usage stayed above the mark (None: none yet). With *soon* (the bytes in use
    HORIZON from now at the present climb) and *ceiling* (the limit less the reserve), a
    step is paused above the mark only when *soon* reaches the ceiling."""
    if not running:
        return [], []
    order = sorted(running, key=lambda r: r[1])
    paused = [key for key, _, p in order if p]
    if used is None:
        return [], paused                            # blind: let everything run
    resume = [order[0][0]] if order[0][2] else []    # the oldest always runs
    if used >= high:
        urgent = soon is None or ceiling is None or soon >= ceiling
        if urgent and (since is None or used - since >= GROWTH):
            for key, _, p in reversed(order[1:]):
                if not p:
                    return [key], resume
    elif used < low:
        rest = [key for key, _, p in order[1:] if p]
        if rest:
            resume.append(rest[0])
    return [], resume


def tree(pid: int) -> list:
    """*pid* and its descendants, parents first."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        found.append(p)
        try:
            for task in os.listdir("/proc/%d/task" % p):
                todo.extend(int(c) for c in host.read_file("/proc/%d/task/%s/children" % (p, task)).split())
        except (OSError, ValueError):
            continue
    return found


def signal_tree(pid: int, signum: int) -> None:
    members = tree(pid)
    for p in (members if signum == signal.SIGSTOP else reversed(members)):
        try:
            os.kill(p, signum)
        except OSError:
            pass


def stopped(pid: int) -> bool:
    try:
        text = host.read_file("/proc/%d/stat" % pid)
        return text[text.rfind(b")") + 2:][:1] in (b"T", b"t")
    except OSError:
        return False


class Step:
    """A running step as its stamp gives it."""

    __slots__ = ("slot", "pid", "t0", "id", "build", "ledger_dir", "paused_at")

    def __init__(self, slot, pid, t0, record_id, build, ledger_dir):
        self.slot, self.pid, self.t0, self.id, self.build, self.ledger_dir = slot, pid, t0, record_id, build, ledger_dir
        self.paused_at = None

    @property
    def key(self):
        return (self.slot, self.pid)


def parse_stamp(slot: int, data: bytes):
    """The Step a stamp describes, or None for a blank or damaged one."""
    head, tab, ledger_dir = data.rstrip(b"\n ").partition(b"\t")
    fields = head.split()
    if not tab or len(fields) != 4 or not fields[0].isdigit():
        return None
    try:
        t0 = float(fields[1])
    except ValueError:
        return None
    text = [f.decode("utf-8", "replace") for f in fields[2:]]
    return Step(slot, int(fields[0]), t0, None if text[0] == "-" else text[0], None if text[1] == "-" else text[1],
                ledger_dir.decode("utf-8", "surrogateescape") or None)


def _pids_of(pid: int) -> set:
    """*pid* and what it is called in the pid namespaces below this one (NSpid)."""
    try:
        for line in host.read_file("/proc/%d/status" % pid).split(b"\n"):
            if line.startswith(b"NSpid:"):
                return {int(p) for p in line.split()[1:]} | {pid}
    except (OSError, ValueError):
        pass
    return {pid}


def marks_of(fractions, env: dict):
    """(high, low, ceiling) in bytes: (pause at, resume at) fractions of the limit less the
    reserve (the limit admission judges by: budget.limit), and that ceiling; None without a
    limit."""
    found = budget.limit(env)
    if found is None:
        return None
    base = budget.of(budget.AUTO, None, *found)
    return int(base * fractions[0]), int(base * fractions[1]), base


def reader_of(env: dict):
    """Bytes of memory really in use where the limit applies, as admission reads them
    (budget.in_use: the cgroup's usage less its inactive page cache, else MemTotal less
    MemAvailable), or None when it cannot be read (no pausing then: today's behaviour)."""
    return lambda: budget.in_use(env)


class Watcher:
    """The pause state of one pool: call tick() every TICK seconds."""

    def __init__(self, pool: str, total: int, high: int, low: int, reader, env: dict, build: str = None,
                 ceiling: int = None):
        self.locks = admission.open_pool(pool)
        self.total, self.high, self.low, self.read_used = total, high, low, reader
        self.ceiling = ceiling         # the limit less the reserve: None pauses at the mark alone
        self.readings = []             # [(time, bytes in use)] of the last WINDOW
        self.near = False        # usage past half the low-water mark at the last look
        self.env, self.build = env, build
        self.steps = {}                # key -> Step seen running
        self.since = None
        self.last_sample = self.last_tree = 0.0
        self.pauses = 0
        self.peak_used = 0
        self.crossed = None            # when usage first passed the high mark
        self.ended = 0                 # entries of ended steps cleared (each one a step that ran)

    def running(self) -> list:
        """The stamped steps that still run: their first slot is held by the process that
        stamped it. The process to signal is the lock's holder as the kernel names it in this
        pid namespace: a step in a sandbox (Bazel's linux-sandbox) stamps a pid of its own
        namespace, which the holder's NSpid lists. A stamp left by a step that ended, on a slot
        another step holds now (not as its first), is no step: its pid is not the holder's.

        The steps are found through the roster (admission's "pid slots" entry of every step
        admitted by live memory, which a watcher needs: at its first slot, as its stamp):
        16 bytes a slot to read, not a stamp's 512 (675 KB a tick in a 21 GiB pool). The
        entry and the stamp of a step that ended are cleared once its slot is free (_clear):
        both outlive an exec'd step, and a runner's pool gathered them on every slot ever
        taken first (361 of 1318 after 500 steps), each costing a lock test every tick here
        and a parse in every admission."""
        roster = self.locks.read(self.total * admission.ROSTER_SIZE, admission.ROSTER_BASE)
        found = {}
        end = roster.find(b"\n")
        while end >= 0:
            slot = end // admission.ROSTER_SIZE
            end = roster.find(b"\n", (slot + 1) * admission.ROSTER_SIZE)
            holder = self._holder(slot)
            if not holder:
                self._clear(slot)
                continue
            step = parse_stamp(slot, self.locks.read(watcher.STAMP_SIZE, watcher.ADMITTED_BASE + slot * watcher.STAMP_SIZE))
            if step is None or (step.pid != holder and step.pid not in _pids_of(holder)):    # (NSpid: sandboxed)
                continue
            step.pid = holder
            if holder not in found or found[holder].t0 < step.t0:     # a retry holds new slots
                found[holder] = step
        return list(found.values())

    def _clear(self, slot: int) -> None:
        """Blank the roster entry and the stamp at *slot* if nobody holds the slot: taken with an
        open-file-description lock, which conflicts with every process's record locks, this
        one's included (a record lock of this process would not: the test harness and `shim
        build` may hold slots where a watcher runs), so no step can take the slot meanwhile."""
        if _OFD_SETLK is None:
            return
        try:
            fcntl.fcntl(self.locks.fd, _OFD_SETLK, _slot_lock(fcntl.F_WRLCK, slot))
        except (OSError, ValueError):       # held, or no OFD locks here: leave it for later
            return
        try:
            self.locks.write(bytes(admission.ROSTER_SIZE), admission.ROSTER_BASE + slot * admission.ROSTER_SIZE)
            self.locks.write(bytes(watcher.STAMP_SIZE), watcher.ADMITTED_BASE + slot * watcher.STAMP_SIZE)
            self.ended += 1
        except OSError:
            pass
        finally:
            fcntl.fcntl(self.locks.fd, _OFD_SETLK, _slot_lock(fcntl.F_UNLCK, slot))

    def _holder(self, slot: int) -> int:
        """The pid holding slot *slot* (0: free, or held from outside this pid namespace)."""
        try:
            kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(self.locks.fd, fcntl.F_GETLK,
                                                                   _slot_lock(fcntl.F_WRLCK, slot)))
        except OSError:
            return 0
        return 0 if kind == fcntl.F_UNLCK else pid

    def active(self) -> bool:
        """Look once (tick); whether a step runs or one ran since the last look: an exec'd step
        that came and went between two looks left its roster entry, cleared at this one. (A
        watcher that waited for a running step alone missed most short compiles: one left
        every ~3 s under a stream of them, and a step had to start the next, BUILD.md.)"""
        ended = self.ended
        return bool(self.tick()) or self.ended != ended

    def pace(self) -> float:
        """Look once (tick); seconds until the next look: sooner near the mark."""
        self.tick()
        return NEAR_TICK if self.near else TICK

    def tick(self, now: float = None) -> int:
        """Look once: pause, resume, record; the number of steps running."""
        now = time.time() if now is None else now
        live = {s.key: s for s in self.running()}
        for key, old in list(self.steps.items()):
            if key not in live:                      # ended, or lost from view: never left stopped
                if old.paused_at is not None:
                    signal_tree(old.pid, signal.SIGCONT)
                self._ended_pause(old, now)
                del self.steps[key]
        for key, step in live.items():
            if key not in self.steps:
                self.steps[key] = step
                if stopped(step.pid):                # left stopped by a watcher that died
                    signal_tree(step.pid, signal.SIGCONT)
        used = self.read_used()
        self.near = used is not None and used >= self.low // 2
        if used is not None:
            self.peak_used = max(self.peak_used, used)
            if used >= self.high and self.crossed is None:
                self.crossed = now
        if used is None or used < self.high:
            self.since = None
        pause, resume = decide([(k, s.t0, s.paused_at is not None) for k, s in self.steps.items()],
                               used, self.since, self.high, self.low, self._soon(now, used), self.ceiling)
        for key in resume:
            step = self.steps[key]
            signal_tree(step.pid, signal.SIGCONT)
            self._ended_pause(step, now)
        for key in pause:
            step = self.steps[key]
            signal_tree(step.pid, signal.SIGSTOP)
            step.paused_at = now
            self.since = used
            self.pauses += 1
        if self.steps and now - self.last_tree >= SAMPLE_EVERY:
            # Belt and braces, once a second (a look at each process costs a /proc read, ~0.15 ms
            # on a cold cache): no process of the oldest step may stay stopped.
            self.last_tree = now
            oldest = min(self.steps.values(), key=lambda s: s.t0)
            if oldest.paused_at is None and any(stopped(p) for p in tree(oldest.pid)):
                signal_tree(oldest.pid, signal.SIGCONT)
        if self.steps and used is not None and (now - self.last_sample >= SAMPLE_EVERY or pause or resume):
            self.last_sample = now
            self._sample(now, used)
        return len(self.steps)

    def _soon(self, now: float, used):
        """Bytes in use HORIZON from *now* if usage goes on climbing as it did over the last
        WINDOW (never less than *used*); None when unknown."""
        if used is None:
            self.readings = []
            return None
        kept = [r for r in self.readings if now - r[0] <= WINDOW]
        self.readings = (kept or self.readings[-1:]) + [(now, used)]     # at least the last look
        t, then = self.readings[0]
        if now - t <= 0:
            return used
        return used + int(max(used - then, 0) * HORIZON / (now - t))

    def _ended_pause(self, step: Step, now: float) -> None:
        if step.paused_at is None:
            return
        if step.ledger_dir and step.id:
            # t1: when it was appended (records.tail reads back by that)
            ledger.append(step.ledger_dir, {"rec": "pause", "id": step.id, "b": step.build, "t0": step.paused_at,
                                            "t1": round(now, 6), "dur": round(now - step.paused_at, 6)}, self.env)
        step.paused_at = None

    def _sample(self, now: float, used: int) -> None:
        places = {(s.ledger_dir, s.build) for s in self.steps.values() if s.ledger_dir}
        for ledger_dir, build in sorted(places, key=str):
            ledger.append(ledger_dir, {"rec": "usage", "b": self.build or build, "t0": round(now, 6), "used": used,
                                       "high": self.high, "low": self.low,
                                       "stopped": sum(1 for s in self.steps.values() if s.paused_at is not None)},
                          self.env)

    def release(self) -> None:
        """Resume every step this watcher paused (it is leaving)."""
        now = time.time()
        for step in self.steps.values():
            if step.paused_at is not None:
                signal_tree(step.pid, signal.SIGCONT)
                self._ended_pause(step, now)


def for_build(pool: str, total: int, env: dict, config: dict, build: str):
    """The Watcher of `shim build`'s pool, holding its WATCH_LOCK, or None when pausing is
    off or impossible here."""
    fractions = watcher.marks(env, config or {})
    found = marks_of(fractions, env) if fractions and hasattr(signal, "SIGSTOP") else None    # none on Windows
    if found is None:
        return None
    try:
        w = Watcher(pool, total, found[0], found[1], reader_of(env), env, build, found[2])
        if not w.locks.try_lock(watcher.WATCH_LOCK):
            return None
    except OSError:
        return None
    return w


def serve(pool: str, total: int, high_fraction: float, low_fraction: float, env: dict) -> int:
    """The detached watcher's life: hold WATCH_LOCK, look until no step has run for IDLE
    seconds (none running at a look, none ended since the last), resume what it paused, leave."""
    found = marks_of((high_fraction, low_fraction), env)
    if found is None:
        return 0
    w = Watcher(pool, total, found[0], found[1], reader_of(env), env, ceiling=found[2])
    if not w.locks.try_lock(watcher.WATCH_LOCK):
        return 0                           # another one runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        idle_since = time.monotonic()
        while True:
            if w.active():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= IDLE:
                w.locks.unlock(watcher.WATCH_LOCK)
                ended = w.ended
                if (not w.running() and w.ended == ended) or not w.locks.try_lock(watcher.WATCH_LOCK):
                    return 0               # a step stamped after the unlock starts its own watcher
                idle_since = time.monotonic()
            time.sleep(NEAR_TICK if w.near else TICK)
    finally:
        w.release()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        pool, total, high, low = argv[0], int(argv[1]), float(argv[2]), float(argv[3])
    except (IndexError, ValueError):
        sys.stderr.write("usage: python -m shim.driver.pauses POOL TOTAL PAUSE_AT RESUME_AT\n")
        return 2
    return serve(pool, total, high, low, dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
