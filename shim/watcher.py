"""Pause before kill, the hot path's part: an admitted step's stamp in the pool file, and a
watcher (shim/driver/pauses.py) started when none runs.

An admitted step writes one stamp (pid, start time, record id, build, ledger) at a place of
its own in the pool file: ADMITTED_BASE plus STAMP_SIZE times its first slot, which no other
running step holds. Then it tests WATCH_LOCK, a byte the watcher holds while it runs; when
no one holds it, the step starts one, detached (its own session, /dev/null for stdio: ninja
must not wait on a pipe a watcher holds). Two steps starting one at once is harmless: the
second watcher cannot take the lock and leaves. A watcher leaves when no step has run for a
while, after letting go of the lock and looking once more (a step stamps before it tests).

The watcher finds the stamps through the roster (admission's entry of each step admitted
by live memory, at the same first slot) and clears both once their slot is free: an exec'd
step cannot clear its own.

Under `shim build` the driver holds WATCH_LOCK for the whole build (its sampler is the
watcher), so no step starts one. Cost per step: one pwrite and one lock test (~20 us).
"""

import sys

from shim import admission, host
from shim.exit_status import USAGE, ShimError
from shim.host import osapi

WATCH_LOCK = 4098                # held by the one watcher of a pool
# Stamps start past the owner records, leaving room between for other per-step records.
ADMITTED_BASE = admission.OWNER_BASE + admission.MAX_SLOTS * admission.OWNER_SIZE + (64 << 10)
STAMP_SIZE = 512
PAUSE_AT, RESUME_AT = 0.8, 0.7   # memory.pause_at, memory.resume_at: of the limit less the reserve
OFF = ("0", "off", "no", "false", "none")


def marks(env: dict, config: dict):
    """(pause at, resume at) as fractions, or None when pausing is off: SHIM_PAUSE_AT (a
    fraction, or 0/off), else memory.pause_at and memory.resume_at (0: off). A bad
    SHIM_PAUSE_AT is a ShimError (exit 2)."""
    memory = config.get("memory") or {}
    text = env.get("SHIM_PAUSE_AT", "").strip().lower()
    high = memory.get("pause_at", PAUSE_AT)
    if text:
        if text in OFF:
            return None
        try:
            high = float(text)
        except ValueError:
            high = -1.0
        if not 0 < high <= 1:
            raise ShimError("SHIM_PAUSE_AT=%s: expected a fraction of the budget such as 0.8, or off"
                            % env["SHIM_PAUSE_AT"], USAGE)
    if not 0 < high <= 1:
        return None
    return high, min(memory.get("resume_at", RESUME_AT), high - 0.05)


def stamp(pid: int, t0: float, record_id: str, build: str, ledger_dir: str) -> bytes:
    text = "%d %.6f %s %s\t%s" % (pid, t0, record_id or "-", build or "-", ledger_dir or "")
    data = text.encode("utf-8", "surrogateescape")[:STAMP_SIZE - 1]
    return data.ljust(STAMP_SIZE - 1) + b"\n"


def note(plan, record, ledger_dir, env: dict, found) -> None:
    """Stamp the step admitted under *plan* (its ledger *record* in *ledger_dir*, if any) and
    start a watcher of its pool if none runs; *found*: marks() (None: pausing is off)."""
    if found is None or not plan.reservation.slots:
        return
    locks = plan.reservation.locks
    try:
        locks.write(stamp(host.getpid(), record["t0"] if record else 0.0, record and record["id"],
                          record and record["b"], ledger_dir if record else ""),
                    ADMITTED_BASE + plan.reservation.slots[0] * STAMP_SIZE)
        if locks.held_elsewhere(WATCH_LOCK):        # a watcher runs
            return
    except OSError:                # the stamp failed: no pausing then
        return
    _start(plan.pool, plan.total, found, env)


def _start(pool: str, total: int, found, env: dict) -> None:
    """`python -I -m shim.driver.pauses POOL TOTAL HIGH LOW`, detached (double fork, setsid)."""
    fork = getattr(osapi, "fork", None)
    if fork is None:
        return
    argv = [sys.executable, "-I", "-m", "shim.driver.pauses", pool, str(total), repr(found[0]), repr(found[1])]
    try:
        pid = fork()
    except OSError:
        return
    if pid:
        try:
            osapi.waitpid(pid, 0)
        except OSError:
            pass
        return
    try:                              # the first child: a new session, then the watcher
        osapi.setsid()
        if fork():
            osapi._exit(0)
        null = osapi.open("/dev/null", osapi.O_RDWR)
        for fd in (0, 1, 2):
            osapi.dup2(null, fd)
        osapi.closerange(3, 65536)
        osapi.chdir("/")
        osapi.execve(sys.executable, argv, env)
    finally:
        osapi._exit(127)
