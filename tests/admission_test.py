"""Memory admission with real processes: fake tools that allocate and touch N MB."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import SHIM, run_shim, write_tool, write_toml
from shim import admission
from shim.reports import records

MIB = 1 << 20
NINJA = Path(sys.executable).parent / "ninja"
SHIM_FOOTPRINT = 12 * MIB     # what a shim process may add (issue target: a waiting shim <= 12 MiB)


@pytest.fixture
def alloc(tmp_path):
    """`alloc MB SECONDS [OUT]`: touch MB of memory, hold it, create OUT."""
    return write_tool(tmp_path / "tools", "alloc", """
        import sys, time
        block = b"\\x01" * (int(sys.argv[1]) << 20)      # written, so resident
        time.sleep(float(sys.argv[2]))
        if len(sys.argv) > 3:
            open(sys.argv[3], "w").close()
        """, shebang="#!%s -IS" % sys.executable)


def run_sampled(argv, cwd, env):
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    from shim.driver.sampler import Sampler
    sampler = Sampler(proc.pid, interval=0.01)
    sampler.start()
    out, _ = proc.communicate(timeout=300)
    sampler.stop()
    assert sampler.samples > 20
    return proc.returncode, out, sampler.peak


def eight_big_steps(d: Path, alloc: Path, through_shim: bool):
    command = ("shim big 400 0.6 $out" if through_shim else "%s 400 0.6 $out" % alloc)
    lines = ["rule big", "  command = %s" % command] + ["build out%d: big" % i for i in range(8)]
    d.mkdir(exist_ok=True)
    (d / "build.ninja").write_text("\n".join(lines) + "\n")
    write_toml(d / "toolchain.toml", """
        [tool.big]
        program = "%s"
        [step.other]
        memory = "420MiB"          # the prior: what a step of this tool is expected to need
        """ % alloc)


def test_eight_400mb_steps_under_ninja_j8_stay_inside_a_1gib_budget_and_not_without_shim(tmp_path, env, alloc):
    budget = 1 << 30
    eight_big_steps(tmp_path / "plain", alloc, through_shim=False)
    code, out, plain_peak = run_sampled([str(NINJA), "-j8"], tmp_path / "plain", env)
    assert code == 0, out
    assert plain_peak > budget + 8 * SHIM_FOOTPRINT       # ninja alone overshoots the budget

    eight_big_steps(tmp_path / "shim", alloc, through_shim=True)
    env["SHIM_MEMORY_BUDGET"] = "1GiB"
    code, out, shim_peak = run_sampled([str(NINJA), "-j8"], tmp_path / "shim", env)
    assert code == 0, out
    assert all((tmp_path / "shim" / ("out%d" % i)).exists() for i in range(8))
    assert shim_peak <= budget + 8 * SHIM_FOOTPRINT, (shim_peak / MIB, plain_peak / MIB)
    steps = records.load(str(tmp_path / "shim" / ".shim"), which="all")[1]
    unit, total = admission.geometry(budget)
    reserved = admission.slots_for(420 * MIB, unit, total) * unit
    assert len(steps) == 8 and all(s["res"] == reserved for s in steps)
    assert 2 * reserved <= budget < 3 * reserved                       # two at a time fit
    assert sum(1 for s in steps if s["wait"] > 0.3) >= 4           # most of them had to wait


def pool(env, budget=1 << 30):
    unit, total = admission.geometry(budget)
    return admission.pool_path(os.path.join(env["XDG_RUNTIME_DIR"], "shim"), unit), total


def wait_for(path: Path, timeout=20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.01)
    raise AssertionError("%s never appeared" % path)


def test_a_steps_peak_is_that_of_its_whole_process_tree(tmp_path, env, alloc):
    # gcc -pipe runs cc1plus and as together; wait4's ru_maxrss only knows the larger one.
    twin = write_tool(tmp_path / "tools", "twin", '"%s" 150 0.5 & "%s" 150 0.5\nwait\n' % (alloc, alloc))
    env.update(SHIM_MODE="spawn", SHIM_LEDGER=str(tmp_path / "ledger"))
    assert run_shim([twin], env=env).returncode == 0
    (step,) = records.load(str(tmp_path / "ledger"), which="all")[1]
    assert step["rss"] >= 2 * 150 * MIB


def test_the_exec_d_tool_holds_the_reservation_and_frees_it_when_it_ends(tmp_path, env):
    tool = write_tool(tmp_path / "tools", "holder", 'echo $$ > "$1"; sleep "$2"\n')
    env.update(SHIM_MEMORY_BUDGET="1GiB", SHIM_MODE="exec")
    path, total = pool(env)
    proc = subprocess.Popen([str(SHIM), str(tool), str(tmp_path / "pid"), "1"], env=env)
    tool_pid = int(wait_for(tmp_path / "pid"))
    assert tool_pid == proc.pid                  # exec: the tool is the process that held the slots
    held = admission.usage(path, total)
    assert held and all(owner.split()[0] == str(proc.pid) for _, owner in held)
    proc.wait(timeout=20)
    assert admission.usage(path, total) == []


def test_kill_9_frees_the_reservation_at_once(tmp_path, env):
    tool = write_tool(tmp_path / "tools", "holder", 'echo $$ > "$1"; sleep "$2"\n')
    env.update(SHIM_MEMORY_BUDGET="1GiB", SHIM_MODE="exec")
    path, total = pool(env)
    proc = subprocess.Popen([str(SHIM), str(tool), str(tmp_path / "pid"), "30"], env=env)
    wait_for(tmp_path / "pid")
    assert admission.usage(path, total)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert admission.usage(path, total) == []


def test_a_daemon_that_inherited_the_pool_descriptor_does_not_keep_a_slot(tmp_path, env):
    daemonizer = write_tool(tmp_path / "tools", "daemonizer",
                            '( sleep 30 </dev/null >/dev/null 2>&1 & echo $! > "$1" )\nls -l /proc/$$/fd > "$2"\n')
    env.update(SHIM_MEMORY_BUDGET="256MiB", SHIM_MODE="exec", SHIM_LEDGER=str(tmp_path / "ledger"))
    path, total = pool(env, 256 * MIB)
    assert run_shim([daemonizer, tmp_path / "daemon.pid", tmp_path / "fds"], env=env).returncode == 0
    daemon = int(wait_for(tmp_path / "daemon.pid"))
    try:
        os.kill(daemon, 0)                                # the daemon lives on...
        assert os.path.basename(path) in (tmp_path / "fds").read_text()   # ...with the pool fd inherited
        assert admission.usage(path, total) == []         # ...but holds no slot
        write_toml(tmp_path / "toolchain.toml", '[step.other]\nmemory = "256MiB"\n')
        result = run_shim(["run", "true"], cwd=tmp_path, env=env)      # needs the whole budget
        assert result.returncode == 0
        last = records.read(str(tmp_path / "ledger"))[-1]
        assert last["res"] == 256 * MIB and last["wait"] < 0.5
    finally:
        os.kill(daemon, signal.SIGKILL)


def test_a_step_larger_than_the_budget_runs_alone(tmp_path, env):
    sleeper = write_tool(tmp_path / "tools", "sleeper", 'sleep "$1"\n')
    write_toml(tmp_path / "toolchain.toml", """
        [tool.huge]
        program = "%s"
        [tool.huge.low_memory]
        [tool.tiny]
        program = "%s"
        [step.other]
        memory = "64MiB"
        [step.link]
        memory = "4GiB"
        """ % (sleeper, sleeper))
    write_toml(tmp_path / "huge.toml", '[tool.huge]\nkind = "link"\n')
    env.update(SHIM_MEMORY_BUDGET="256MiB", SHIM_LEDGER=str(tmp_path / "ledger"), SHIM_MODE="spawn")
    huge_env = dict(env, SHIM_TOOLCHAIN=str(tmp_path / "huge.toml"))
    big = subprocess.Popen([str(SHIM), "huge", "1.0"], cwd=tmp_path, env=huge_env)
    time.sleep(0.3)
    small = subprocess.Popen([str(SHIM), "tiny", "0.1"], cwd=tmp_path, env=env)
    assert big.wait(timeout=30) == 0 and small.wait(timeout=30) == 0   # nothing is refused
    steps = {s["tool"]: s for s in records.load(str(tmp_path / "ledger"), which="all")[1]}
    assert steps["huge"]["res"] == 256 * MIB and steps["huge"]["est"] == 4 << 30
    assert steps["tiny"]["t0"] >= steps["huge"]["t1"] - 0.01           # it waited for the big one


@pytest.mark.parametrize("patience, bounded", [(0.5, True), (60.0, False)])
def test_a_4_slot_step_is_admitted_in_bounded_time_among_a_stream_of_1_slot_steps(tmp_path, env, patience, bounded):
    sleeper = write_tool(tmp_path / "tools", "sleeper", 'sleep "$1"\n')
    write_toml(tmp_path / "toolchain.toml", """
        [memory]
        patience = %s
        [tool.small]
        program = "%s"
        [tool.large]
        program = "%s"
        kind = "link"
        [step.other]
        memory = "64MiB"
        [step.link]
        memory = "256MiB"
        """ % (patience, sleeper, sleeper))
    env.update(SHIM_MEMORY_BUDGET="256MiB", SHIM_LEDGER=str(tmp_path / "ledger"), SHIM_MODE="spawn")
    stream_seconds = 5.0
    stop = time.monotonic() + stream_seconds
    running = []

    def feed():                      # more 1-slot steps in flight than slots: a queue that never empties
        while time.monotonic() < stop:
            running[:] = [p for p in running if p.poll() is None]
            while len(running) < 8:
                running.append(subprocess.Popen([str(SHIM), "small", "0.3"], cwd=tmp_path, env=env))
            time.sleep(0.02)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(0.4)
    large = subprocess.run([str(SHIM), "large", "0.1"], cwd=tmp_path, env=env, timeout=60)
    feeder.join()
    for p in running:
        p.wait(timeout=30)
    assert large.returncode == 0
    step = [s for s in records.load(str(tmp_path / "ledger"), which="all")[1] if s["tool"] == "large"][0]
    assert step["res"] == 256 * MIB
    if bounded:
        assert step["wait"] <= patience + 0.3 + 1.0, step["wait"]     # patience + one small step + slack
    else:
        assert step["wait"] >= stream_seconds - 1.0, step["wait"]     # without draining it starves


def test_while_a_big_step_drains_a_small_one_that_fits_beside_it_runs_and_a_medium_one_waits(tmp_path, env):
    # 16 slots. `long` holds 8; `big` (11: under 3/4 of the budget, so it does not simply run
    # alone) drains the pool after 0.3 s of patience. `small` (4) fits with everything admitted
    # since the drain began plus big (4 + 11 <= 16): it runs at once, on slots that would
    # otherwise stay idle until long ends. `medium` (8) does not fit beside big (8 + 11 > 16), so
    # it waits behind the drain: big is never starved.
    sleeper = write_tool(tmp_path / "tools", "sleeper", 'sleep "$1"\n')
    tools = {"long": ("archive", "128MiB"), "big": ("link", "176MiB"), "small": ("other", "64MiB"),
             "medium": ("preprocess", "128MiB")}     # priors are per step kind: one kind each
    write_toml(tmp_path / "toolchain.toml", "[memory]\npatience = 0.3\n" + "".join(
        '[tool.%s]\nprogram = "%s"\nkind = "%s"\n[step.%s]\nmemory = "%s"\n'
        % (name, sleeper, kind, kind, size) for name, (kind, size) in tools.items()))
    env.update(SHIM_MEMORY_BUDGET="256MiB", SHIM_LEDGER=str(tmp_path / "ledger"), SHIM_MODE="spawn")

    def start(name, seconds):
        return subprocess.Popen([str(SHIM), name, str(seconds)], cwd=tmp_path, env=env)

    procs = [start("long", 2.5)]
    time.sleep(0.3)
    procs.append(start("big", 0.2))
    time.sleep(1.0)                  # big has drained for ~0.7 s
    procs += [start("small", 0.3), start("medium", 0.2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    steps = {s["tool"]: s for s in records.load(str(tmp_path / "ledger"), which="all")[1]}
    assert {name: steps[name]["res"] for name in tools} == {
        "long": 128 * MIB, "big": 176 * MIB, "small": 64 * MIB, "medium": 128 * MIB}
    assert steps["small"]["wait"] < 0.5, steps["small"]                  # backfilled
    assert steps["small"]["t1"] <= steps["big"]["t0"] + 0.05             # and did not delay big
    assert steps["big"]["t0"] >= steps["long"]["t1"] - 0.05              # big waited for long only
    assert steps["big"]["t0"] - steps["long"]["t1"] < 0.5
    assert steps["medium"]["t0"] >= steps["big"]["t0"] - 0.01            # medium waited behind big


def test_under_shim_build_no_more_tools_run_than_cores_though_more_edges_are_in_flight(tmp_path, env):
    log = tmp_path / "log"
    tool = write_tool(tmp_path / "tools", "busy", """
        printf 'start %%s\\n' "$(date +%%s.%%N)" >> '%s'
        sleep 0.3
        printf 'end %%s\\n' "$(date +%%s.%%N)" >> '%s'
        : > "$1"
        """ % (log, log))
    (tmp_path / "build.ninja").write_text("rule t\n  command = shim run %s $out\n" % tool +
                                          "".join("build o%d: t\n" % i for i in range(12)))
    result = run_shim(["build", "-C", tmp_path, "--budget", "4GiB", "--mode", "exec"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    cores = len(os.sched_getaffinity(0))
    assert "%d edges in flight on %d cores" % (2 * cores, cores) in result.stdout
    events = sorted((float(stamp), 1 if what == "start" else -1)
                    for what, stamp in (line.split() for line in log.read_text().splitlines()))
    level = peak = 0
    for _, delta in events:          # at equal times an end (-1) sorts before a start
        level += delta
        peak = max(peak, level)
    assert peak <= cores
    steps = records.load(str(tmp_path / ".shim"))[1]
    # They queued for a core (how many depends on how fast ninja hands out edges on a busy
    # machine: at least half of those that could not have started at once).
    assert sum(1 for s in steps if s["cpu_wait"] > 0.05) >= (12 - 2 * cores) // 2


def test_auto_mode_measures_unknown_steps_then_execs_them(example, env):
    assert run_shim(["build", "-C", example], env=env).returncode == 0
    first = json.loads(run_shim(["report", "-C", example, "--json"], env=env).stdout)
    assert first["totals"]["by_mode"] == {"spawn": 8}                  # nothing known yet: measure all
    # no history yet: a prior, or (once 3 siblings have finished) what this build measured
    assert all(s["rss"] and s["src"] in ("prior", "default", "build") for s in first["steps"])
    subprocess.run([str(NINJA), "-C", str(example), "-t", "clean"], env=env, stdout=subprocess.DEVNULL)
    assert run_shim(["build", "-C", example], env=env).returncode == 0
    second = json.loads(run_shim(["report", "-C", example, "--json"], env=env).stdout)
    assert second["totals"]["by_mode"] == {"exec": 7, "spawn": 1}      # known now; links always spawn
    assert all(s["src"] == "history" for s in second["steps"])


def test_plain_ninja_under_a_budget_learns_peaks_without_shim_build(example, env):
    """Spawned steps add their peak to the estimates index themselves (Bazel needs this too)."""
    env["SHIM_MEMORY_BUDGET"] = "2GiB"
    for expected in ({"spawn": 8}, {"exec": 7, "spawn": 1}):
        started = time.time()
        result = subprocess.run([str(NINJA), "-C", str(example)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        assert result.returncode == 0, result.stdout
        steps = [s for s in records.load(str(example / ".shim"), which="all")[1] if s["t0"] >= started]
        modes = {}
        for s in steps:
            modes[s["mode"]] = modes.get(s["mode"], 0) + 1
        assert modes == expected
        subprocess.run([str(NINJA), "-C", str(example), "-t", "clean"], env=env, stdout=subprocess.DEVNULL)


# --- the admission logic without processes: an in-memory pool, several owners, a fake clock ----


class MemoryLocks:
    """admission.FileLocks for one "process" *owner*, over a pool shared by all of them: what
    POSIX record locks do (a process may re-take its own lock), without a file."""

    def __init__(self, pool: dict, owner: str):
        self.pool, self.owner = pool, owner

    def try_lock(self, offset, length=1):
        span = range(offset, offset + length)
        if any(self.pool["locks"].get(o) not in (None, self.owner) for o in span):
            return False           # all or nothing, as one lockf over the range
        for o in span:
            self.pool["locks"][o] = self.owner
        return True

    def lock(self, offset):
        assert self.try_lock(offset), "would block: %d is held by %s" % (offset, self.pool["locks"][offset])

    def unlock(self, offset):
        if self.pool["locks"].get(offset) == self.owner:
            del self.pool["locks"][offset]

    def read(self, size, offset):
        return bytes(self.pool["data"][offset:offset + size])

    def write(self, data, offset):
        buf = self.pool["data"]
        buf.extend(b"\0" * max(0, offset + len(data) - len(buf)))
        buf[offset:offset + len(data)] = data


class Clock:
    """A fake monotonic clock whose sleep() moves time on and fires the events now due."""

    def __init__(self, events=()):
        self.t, self.events = 0.0, sorted(events, key=lambda e: e[0])

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds
        while self.events and self.events[0][0] <= self.t:
            self.events.pop(0)[1]()


def held_by(pool, owner):
    return sorted(o - 1 for o, h in pool["locks"].items() if h == owner and 1 <= o <= 64)


def test_a_waiting_big_step_drains_after_its_patience_and_a_small_one_backfills_beside_it():
    pool = {"locks": {}, "data": bytearray()}
    total = 8
    a = admission.acquire("", total, 6, 1, locks=MemoryLocks(pool, "a"), clock=Clock(), sleep=lambda s: None)
    seen = {}

    def small_arrives():        # 1 slot fits beside the drainer's 4: it must not wait
        seen["drain"] = admission._drain_state(MemoryLocks(pool, "c"))
        seen["c"] = admission.acquire("", total, 1, 1, locks=MemoryLocks(pool, "c"), clock=Clock(),
                                      sleep=lambda s: pytest.fail("the small step waited"))

    def medium_probes():        # 4 more would not fit beside the drainer: no backfill
        seen["d"] = admission._backfill(MemoryLocks(pool, "d"), total, 4, 0, [])

    clock = Clock([(2.5, small_arrives), (3.0, medium_probes), (4.0, a.release)])
    b = admission.acquire("", total, 4, 1, patience=2.0, locks=MemoryLocks(pool, "b"), clock=clock,
                          sleep=clock.sleep)
    assert seen["drain"] == (4, 0)                      # b posted its need when its patience ran out
    assert len(seen["c"].slots) == 1 and seen["d"] is False
    assert len(b.slots) == 4 and 4.0 <= b.waited < 4.1  # b started as soon as a's slots were free
    assert admission._drain_state(MemoryLocks(pool, "x")) is None
    assert not set(b.slots) & set(seen["c"].slots)
    assert held_by(pool, "b") == sorted(b.slots)


def test_a_step_wanting_more_than_the_budget_takes_all_of_it_and_runs_alone():
    pool = {"locks": {}, "data": bytearray()}
    r = admission.acquire("", 4, 99, 1, locks=MemoryLocks(pool, "big"), clock=Clock(), sleep=lambda s: None)
    assert len(r.slots) == 4
    other = Clock()

    def sleep(seconds):
        other.sleep(seconds)
        if other.t > 5:
            raise TimeoutError

    with pytest.raises(TimeoutError):        # nothing left: a second step can only wait
        admission.acquire("", 4, 1, 1, patience=0.1, locks=MemoryLocks(pool, "small"), clock=other, sleep=sleep)


def test_a_drain_record_left_by_a_killed_drainer_is_cleared_by_the_next_taker():
    pool = {"locks": {}, "data": bytearray()}
    admission._write_drain(MemoryLocks(pool, "dead"), (3, 1))     # its locks died with it, the bytes stayed
    r = admission.acquire("", 4, 2, 1, locks=MemoryLocks(pool, "next"), clock=Clock(), sleep=lambda s: None)
    assert len(r.slots) == 2 and admission._drain_state(MemoryLocks(pool, "x")) is None


def test_the_pool_s_locks_land_on_their_bytes_whatever_was_done_before(tmp_path):
    # A lock acts at the descriptor's offset: one placed at a stale offset would hold the wrong
    # slot and leave the right one free (checked from another process).
    locks = admission.open_pool(str(tmp_path / "pool-16"))
    assert locks.try_lock(0)                            # the gate, at a fresh descriptor's offset
    assert locks.try_lock(1 + 5, 3)
    locks.write(b"x" * 16, 300)                         # reads and writes move no offset
    locks.read(16, 300)
    locks.unlock(0)
    locks.lock(admission.DRAIN_LOCK)
    assert not locks.held_elsewhere(4098)
    assert locks.try_lock(1 + 9)
    assert _held_elsewhere(tmp_path / "pool-16", range(12)) == [6, 7, 8, 10]
    locks.unlock(admission.DRAIN_LOCK)
    locks.unlock(1 + 6)
    assert _held_elsewhere(tmp_path / "pool-16", list(range(12)) + [admission.DRAIN_LOCK]) == [6, 8, 10]


def _held_elsewhere(pool, offsets) -> list:
    """Which bytes at *offsets* of *pool* another process finds locked (opened there only:
    closing any descriptor of the file here would drop this process's locks)."""
    import fcntl
    offsets = list(offsets)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(str(pool), os.O_RDWR)
            os.write(w, bytes(1 if _locked(fcntl, fd, o) else 0 for o in offsets))
        finally:
            os._exit(0)
    os.close(w)
    held = os.read(r, len(offsets))
    os.close(r)
    os.waitpid(pid, 0)
    return [o for o, h in zip(offsets, held) if h]


def _locked(fcntl, fd: int, offset: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
    except OSError:
        return True
    fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
    return False
