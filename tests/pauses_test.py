"""Pause before kill (shim/driver/pauses.py, shim/watcher.py): the pure decisions, the stamps,
and builds in a real memory cgroup whose steps grow slowly past a far-too-low estimate."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import memcg
from conftest import SHIM
from shim import watcher
from shim.driver import pauses

MIB = 1 << 20
HIGH, LOW = 700 * MIB, 600 * MIB


def test_nothing_is_paused_below_the_high_mark():
    running = [("a", 1.0, False), ("b", 2.0, False), ("c", 3.0, False)]
    assert pauses.decide(running, 650 * MIB, None, HIGH, LOW) == ([], [])


def test_above_the_high_mark_the_most_recently_admitted_running_step_is_paused():
    running = [("b", 2.0, False), ("a", 1.0, False), ("c", 3.0, False)]
    assert pauses.decide(running, 710 * MIB, None, HIGH, LOW) == (["c"], [])


def test_the_next_youngest_is_paused_only_while_usage_keeps_climbing_past_the_last_pause():
    running = [("a", 1.0, False), ("b", 2.0, False), ("c", 3.0, True)]
    assert pauses.decide(running, 712 * MIB, 710 * MIB, HIGH, LOW) == ([], [])
    assert pauses.decide(running, 730 * MIB, 710 * MIB, HIGH, LOW) == (["b"], [])


def test_the_oldest_running_step_is_never_paused():
    running = [("a", 1.0, False), ("b", 2.0, True)]
    assert pauses.decide(running, 900 * MIB, 710 * MIB, HIGH, LOW) == ([], [])
    assert pauses.decide([("a", 1.0, False)], 900 * MIB, None, HIGH, LOW) == ([], [])


def test_a_paused_step_that_became_the_oldest_is_resumed_at_once_even_above_the_mark():
    running = [("b", 2.0, True), ("c", 3.0, True)]
    assert pauses.decide(running, 900 * MIB, 710 * MIB, HIGH, LOW) == ([], ["b"])


def test_below_the_low_mark_paused_steps_are_resumed_oldest_first_one_at_a_time():
    running = [("a", 1.0, False), ("c", 3.0, True), ("b", 2.0, True)]
    assert pauses.decide(running, 590 * MIB, None, HIGH, LOW) == ([], ["b"])
    assert pauses.decide(running, 650 * MIB, None, HIGH, LOW) == ([], [])     # between the marks: stay


def test_above_the_mark_a_climb_that_would_not_reach_the_ceiling_soon_is_let_run():
    running = [("a", 1.0, False), ("b", 2.0, False)]
    ceiling = 900 * MIB
    assert pauses.decide(running, 750 * MIB, None, HIGH, LOW, 800 * MIB, ceiling) == ([], [])     # slow
    assert pauses.decide(running, 750 * MIB, None, HIGH, LOW, 950 * MIB, ceiling) == (["b"], [])   # fast
    assert pauses.decide(running, 910 * MIB, None, HIGH, LOW, 910 * MIB, ceiling) == (["b"], [])   # past it
    assert pauses.decide(running, 650 * MIB, None, HIGH, LOW, 2000 * MIB, ceiling) == ([], [])     # below the mark


def test_the_watcher_projects_usage_from_its_readings_of_the_last_tenth_of_a_second(tmp_path):
    w = pauses.Watcher(str(tmp_path / "pool"), 8, HIGH, LOW, lambda: None, {}, ceiling=900 * MIB)
    assert w._soon(10.0, 700 * MIB) == 700 * MIB                           # one reading: no climb known
    assert w._soon(10.02, 702 * MIB) == 702 * MIB + 25 * MIB               # 100 MiB/s for 0.25 s
    assert w._soon(10.04, 704 * MIB) == 704 * MIB + 25 * MIB
    assert w._soon(10.3, 704 * MIB) == 704 * MIB                           # flat since the last look
    assert w._soon(10.32, 600 * MIB) == 600 * MIB                          # falling: never below now
    assert w._soon(10.34, None) is None and w._soon(10.36, 600 * MIB) == 600 * MIB


def test_when_memory_in_use_cannot_be_read_every_paused_step_is_resumed():
    running = [("a", 1.0, False), ("b", 2.0, True), ("c", 3.0, True)]
    assert pauses.decide(running, None, None, HIGH, LOW) == ([], ["b", "c"])


def test_no_steps_no_decisions():
    assert pauses.decide([], 900 * MIB, None, HIGH, LOW) == ([], [])


def test_marks_come_from_shim_pause_at_then_toolchain_toml_and_off_disables_pausing():
    memory = {"memory": {"pause_at": 0.9, "resume_at": 0.6}}
    assert watcher.marks({}, {}) == (0.8, 0.7)
    assert watcher.marks({}, memory) == (0.9, 0.6)
    assert watcher.marks({"SHIM_PAUSE_AT": "0.85"}, memory) == (0.85, 0.6)
    for off in ("0", "off", "OFF", "false"):
        assert watcher.marks({"SHIM_PAUSE_AT": off}, memory) is None
    assert watcher.marks({}, {"memory": {"pause_at": 0.5, "resume_at": 0.7}})[1] == pytest.approx(0.45)
    assert watcher.marks({}, {"memory": {"pause_at": 0}}) is None


def test_a_bad_shim_pause_at_is_a_one_line_usage_error():
    from shim.exit_status import USAGE, ShimError
    for bad in ("80%", "1.5", "-0.2", "soon"):
        with pytest.raises(ShimError) as e:
            watcher.marks({"SHIM_PAUSE_AT": bad}, {})
        assert e.value.status == USAGE and str(e.value).startswith("SHIM_PAUSE_AT=%s: " % bad)


def test_a_stamp_reads_back_as_the_step_it_describes_and_a_blank_one_as_none():
    data = watcher.stamp(4242, 1700000000.25, "abc-1-ff", None, "/b/.shim")
    assert len(data) == watcher.STAMP_SIZE
    step = pauses.parse_stamp(3, data)
    assert (step.slot, step.pid, step.t0, step.id, step.build, step.ledger_dir) == (
        3, 4242, 1700000000.25, "abc-1-ff", None, "/b/.shim")
    assert pauses.parse_stamp(0, b"\0" * watcher.STAMP_SIZE) is None


def test_stamps_lie_past_the_owner_records_of_every_slot():
    from shim import admission
    assert watcher.ADMITTED_BASE >= admission.OWNER_BASE + admission.MAX_SLOTS * admission.OWNER_SIZE
    assert watcher.WATCH_LOCK not in (admission.GATE, admission.DRAIN_LOCK) and watcher.WATCH_LOCK < admission.DRAIN_AT


def test_the_watcher_reads_memory_in_use_as_admission_does(monkeypatch):
    from shim import budget
    seen = []
    monkeypatch.setattr(budget, "in_use", lambda env, exact=True, root="/": seen.append((env, exact)) or 5)
    env = {"XDG_RUNTIME_DIR": "/nowhere"}
    assert pauses.reader_of(env)() == 5 and seen == [(env, True)]       # exact: page cache left out
    monkeypatch.setattr(budget, "limit", lambda env, root="/": (1 << 30, False))
    assert pauses.marks_of((0.8, 0.7), env) == (int((960 << 20) * 0.8), int((960 << 20) * 0.7), 960 << 20)
    monkeypatch.setattr(budget, "limit", lambda env, root="/": None)
    assert pauses.marks_of((0.8, 0.7), env) is None                     # no limit: no watcher


def test_a_stopped_tree_is_stopped_whole_and_resumed_whole(tmp_path):
    child = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 5
        while len(pauses.tree(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        members = pauses.tree(child.pid)
        assert len(members) == 2 and members[0] == child.pid
        pauses.signal_tree(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while not all(pauses.stopped(p) for p in members) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(pauses.stopped(p) for p in members)
        pauses.signal_tree(child.pid, signal.SIGCONT)
        deadline = time.monotonic() + 5
        while any(pauses.stopped(p) for p in members) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(pauses.stopped(p) for p in members)
    finally:
        for p in reversed(pauses.tree(child.pid)):
            os.kill(p, signal.SIGKILL)
        child.wait()


# Real memory: a 1 GiB cgroup, steps expected at 64 MiB (the prior, far too low) that each climb
# to 300 MiB over 3 s (memcg.write_growing_project): four at once under ninja -j4 need 1.2 GiB,
# more than the limit.
NINJA = Path(sys.executable).parent / "ninja"
LIMIT = 1 << 30
REASON = memcg.available() or (None if shutil.which("gcc") else "gcc is not installed (builds the fake tool)")
realmem = pytest.mark.skipif(REASON is not None, reason="no real memory cgroup: %s" % REASON)


@pytest.fixture(scope="module")
def alloc(tmp_path_factory):
    return memcg.compile_alloc(str(tmp_path_factory.mktemp("alloc")))


def run_in(cg, argv, cwd, env):
    return subprocess.run(cg.wrap(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=180)


@realmem
def test_steps_growing_past_a_far_too_low_estimate_are_oom_killed_without_pausing(tmp_path, env, alloc):
    outs = memcg.write_growing_project(tmp_path, alloc)
    env["SHIM_PAUSE_AT"] = "off"
    with memcg.MemCg(LIMIT) as cg:
        result = run_in(cg, [NINJA, "-j4"], tmp_path, env)
        kills = cg.oom_kills()
    assert kills > 0, result.stdout              # what pausing is for
    assert not memcg.pause_records(tmp_path)
    assert result.returncode == 0 or not all((tmp_path / o).exists() for o in outs)


@realmem
def test_under_plain_ninja_steps_growing_past_their_estimate_are_paused_not_killed(tmp_path, env, alloc):
    outs = memcg.write_growing_project(tmp_path, alloc)
    with memcg.MemCg(LIMIT) as cg:
        result = run_in(cg, [NINJA, "-j4"], tmp_path, env)
        kills = cg.oom_kills()
        deadline = time.monotonic() + 10           # the watcher leaves once no step runs
        while len(cg.pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = cg.pids()
    assert result.returncode == 0, result.stdout
    assert kills == 0, result.stdout
    assert all((tmp_path / o).exists() for o in outs)
    paused = memcg.pause_records(tmp_path)
    assert paused, result.stdout
    steps = memcg.ledger_steps(tmp_path)
    assert all(s["exit"] == 0 and not s.get("retry") for s in steps)
    assert {r["id"] for r in paused} <= {s["id"] for s in steps}
    assert left == [], left                          # the watcher left with the last step
    shown = subprocess.run([SHIM, "report", "-C", tmp_path, "--brief"], env=env, stdout=subprocess.PIPE, text=True)
    assert "paused before kill: %d pause" % len(paused) in shown.stdout, shown.stdout
    assert "memory really in use: peak " in shown.stdout and "crossed it at +" in shown.stdout, shown.stdout


@realmem
def test_under_shim_build_steps_growing_past_their_estimate_are_paused_not_killed(tmp_path, env, alloc):
    outs = memcg.write_growing_project(tmp_path, alloc)
    with memcg.MemCg(LIMIT) as cg:
        result = run_in(cg, [SHIM, "build", "-j4"], tmp_path, env)
        kills = cg.oom_kills()
    assert result.returncode == 0, result.stdout
    assert kills == 0, result.stdout
    assert all((tmp_path / o).exists() for o in outs)
    assert memcg.pause_records(tmp_path), result.stdout
    assert " 0 pauses" not in result.stdout, result.stdout


# --- what the reports make of pauses and usage samples (a ledger written here) -----------------

T0 = 1_700_000_000.0


def paused_ledger(directory: Path) -> str:
    """A ledger of one plain-ninja build of 3 spawned steps: c paused twice, usage sampled."""
    import json
    from shim import ledger
    ledger_dir = directory / ".shim"
    ledger_dir.mkdir(parents=True)
    lines = [ledger.HEADER.rstrip("\n")]
    for i, name in enumerate("abc"):
        lines.append(json.dumps({"rec": "step", "id": name, "b": None, "t0": T0 + i, "t1": T0 + 6 + i, "dur": 6.0,
                                 "pid": 100 + i, "tool": "cc", "prog": "gcc", "kind": "compile", "mode": "spawn",
                                 "cwd": ".", "in": name + ".c", "out": [name + ".o"], "argv": "0" * 16,
                                 "exit": 0, "sig": None, "rss": 300 * MIB, "ut": 1.0, "st": 0.1,
                                 "res": 64 * MIB, "est": 64 * MIB, "src": "prior", "wait": 0.5 if name == "b" else 0}))
    lines += [json.dumps({"rec": "pause", "id": "c", "b": None, "t0": T0 + 3, "dur": 1.5}),
              json.dumps({"rec": "pause", "id": "c", "b": None, "t0": T0 + 5, "dur": 0.5})]
    for t, used, stopped in ((0.5, 100, 0), (3.0, 720, 1), (4.5, 650, 0), (5.0, 730, 1), (5.5, 560, 0)):
        lines.append(json.dumps({"rec": "usage", "b": None, "t0": T0 + t, "used": used * MIB, "high": HIGH,
                                 "low": LOW, "stopped": stopped}))
    (ledger_dir / ledger.FILENAME).write_text("\n".join(lines) + "\n")
    return str(ledger_dir)


def test_pauses_fold_into_their_steps_and_the_report_says_when_usage_crossed_the_mark(tmp_path):
    import jsonschema
    from shim.reports import compare, records, report
    ledger_dir = paused_ledger(tmp_path)
    build, steps = records.load(ledger_dir, str(tmp_path))
    by_id = {s["id"]: s for s in steps}
    assert (by_id["c"]["pauses"], by_id["c"]["paused"]) == (2, 2.0)
    assert by_id["a"]["pauses"] is None
    usage = records.usage_of(ledger_dir, steps, build)
    assert [u["used"] >> 20 for u in usage] == [100, 720, 650, 730, 560]
    data = report.summary(steps, build, str(tmp_path), ledger_dir, 0, usage)
    assert (data["totals"]["pauses"], data["totals"]["paused_steps"], data["totals"]["paused_seconds"]) == (2, 1, 2.0)
    memory = data["memory"]
    assert (memory["high"], memory["low"], memory["peak"]) == (HIGH, LOW, 730 * MIB)
    assert memory["crossed_at"] == 3.0
    assert memory["waited_while_free"] == 1 and memory["waited_while_free_steps"] == ["b.o"]   # 100 MiB in use
    data["estimate_misses"] = []
    jsonschema.validate(data, compare.report_schema())
    text = report.render(data)
    assert "paused before kill: 2 pauses of 1 step, 2.0s stopped in all" in text, text
    assert "crossed it at +3.0s" in text and "high-water mark 700.0MiB" in text, text
    assert "1 step waited for memory while less than the low mark was in use" in text, text


def test_the_html_memory_chart_draws_usage_marks_budget_and_paused_spans(tmp_path):
    from shim.reports import html, records
    ledger_dir = paused_ledger(tmp_path)
    build, steps = records.load(ledger_dir, str(tmp_path))
    usage = records.usage_of(ledger_dir, steps, build)
    page = html.render(steps, dict(id="x", t0=T0, t1=T0 + 9, budget=896 * MIB), usage=usage)
    assert page.count('class="paused"') == 2          # the two samples with a step stopped
    assert 'class="in-use"' in page and 'class="marks"' in page and "budget 896.0MiB" in page
    assert "high-water mark 700.0MiB" in page
    assert 'class="in-use"' not in html.render(steps, build)


def test_the_trace_carries_memory_really_in_use_as_a_counter_and_pauses_in_the_slices_args(tmp_path):
    from shim.reports import records, trace
    ledger_dir = paused_ledger(tmp_path)
    build, steps = records.load(ledger_dir, str(tmp_path))
    events = trace.events(steps, build, records.usage_of(ledger_dir, steps, build))["traceEvents"]
    in_use = [e for e in events if e["name"] == trace.IN_USE]
    assert [e["args"]["bytes"] >> 20 for e in in_use] == [100, 720, 650, 730, 560]
    (c,) = [e for e in events if e["ph"] == "X" and e["args"].get("out") == ["c.o"]]
    assert (c["args"]["pauses"], c["args"]["paused"]) == (2, 2.0)


def test_a_comparison_shows_pauses_only_when_either_build_paused(tmp_path):
    from shim.reports import compare, records
    build, steps = records.load(paused_ledger(tmp_path), str(tmp_path))
    calm = [dict(s, pauses=None, paused=None) for s in steps]
    rows = {r[0]: r[1:] for r in compare.total_rows(compare.compare((None, calm), (build, steps)))}
    assert rows["pauses (before kill)"][:2] == ("0", "2") and "time paused" in rows
    rows = compare.total_rows(compare.compare((None, calm), (None, calm)))
    assert not any(r[0].startswith("pauses") for r in rows)


def test_a_running_step_is_the_holder_of_its_first_slot_and_a_stale_stamp_is_no_step(tmp_path):
    # (A stale stamp taken for a step once stopped every real one: it looked oldest, so it
    # was the one never paused.)
    pool = str(tmp_path / "pool-16")
    w = pauses.Watcher(pool, 8, HIGH, LOW, lambda: None, {})
    _admitted(w.locks, 5, 999999, T0, "gone")
    # A step that ended stamped slot 3, which the step below now holds as its second slot.
    _admitted(w.locks, 3, 999998, T0 - 1, "ended")
    with _running_step(pool, 2, 2, "step", "b1", "/x/.shim") as pid:     # holds slots 2 and 3
        (step,) = w.running()
        assert (step.slot, step.pid, step.id, step.build, step.ledger_dir) == (2, pid, "step", "b1", "/x/.shim")
    assert w.running() == []


def test_the_entry_and_stamp_of_a_step_that_ended_are_cleared_once_its_slot_is_free_and_no_other(tmp_path):
    # Both outlive an exec'd step: a runner's pool gathered them on every slot ever taken
    # first, each costing the watcher a lock test every tick and every admission a parse.
    from shim import admission
    pool = str(tmp_path / "pool-16")
    w = pauses.Watcher(pool, 8, HIGH, LOW, lambda: None, {})

    def stamp_at(slot):
        return w.locks.read(watcher.STAMP_SIZE, watcher.ADMITTED_BASE + slot * watcher.STAMP_SIZE)

    def entry_at(slot):
        return w.locks.read(admission.ROSTER_SIZE, admission.ROSTER_BASE + slot * admission.ROSTER_SIZE)

    for slot, pid in ((0, 999991), (3, 999993), (6, 999996), (7, 999997)):
        _admitted(w.locks, slot, pid, T0, "s%d" % slot)
    _admitted(w.locks, 5, 999995, T0, "x")
    w.locks.write(b"garbage\n", watcher.ADMITTED_BASE + 5 * watcher.STAMP_SIZE)
    assert w.locks.try_lock(1 + 6)        # this process holds slot 6 (as a test or `shim build` may)
    with _running_step(pool, 2, 2, "step") as pid:                      # holds slots 2 and 3
        (step,) = w.running()
        assert step.pid == pid
        assert stamp_at(0) == stamp_at(5) == stamp_at(7) == bytes(watcher.STAMP_SIZE)    # free: cleared
        assert entry_at(0) == entry_at(5) == entry_at(7) == bytes(admission.ROSTER_SIZE)  # ... with their entries
        assert entry_at(2).startswith(b"%d 2" % pid) and entry_at(6).startswith(b"999996 ")
        assert stamp_at(2).startswith(b"%d " % pid)                 # the running step's
        assert stamp_at(3).startswith(b"999993 ")                   # held by the step: kept for now
        assert stamp_at(6).startswith(b"999996 ")                   # held by this process: kept
        assert _held_by_another(pool, 6)                           # ... and its lock still held
    assert w.running() == []
    assert stamp_at(2) == stamp_at(3) == bytes(watcher.STAMP_SIZE)


def test_a_step_that_came_and_went_between_two_looks_counts_as_activity_as_a_running_one_does(tmp_path):
    pool = str(tmp_path / "pool-16")
    w = pauses.Watcher(pool, 8, HIGH, LOW, lambda: None, {})
    assert not w.active()                       # nothing ran
    with _running_step(pool, 2, 1, "short"):
        pass                                    # admitted, then gone before the look (its entry left, as exec'd)
    assert w.active() and w.tick() == 0         # it ran since the last look, though nothing runs
    assert not w.active()                       # and nothing since
    with _running_step(pool, 4, 1, "long"):
        assert w.active()


def test_a_stream_of_short_steps_keeps_one_detached_watcher(tmp_path, env):
    # Each step ends between two of the watcher's looks. One that waited for a running step
    # left every ~3 s under a stream of tiny compiles, and a step had to start the next one.
    def step():
        assert subprocess.run([SHIM, "true"], cwd=tmp_path, env=env).returncode == 0

    step()
    assert _soon(lambda: _watcher_of(tmp_path / "run"))
    first = _watcher_of(tmp_path / "run")
    seen = set()
    deadline = time.monotonic() + 2.5 * pauses.IDLE
    while time.monotonic() < deadline:
        time.sleep(0.3)
        step()
        seen.add(_watcher_of(tmp_path / "run"))
    assert seen == {first}


def _watcher_of(run: Path) -> int:
    """The pid holding the WATCH_LOCK of the one pool under runtime dir *run* (0: none)."""
    import fcntl
    import struct
    pools = list((run / "shim").glob("pool-*"))
    if len(pools) != 1:
        return 0
    fd = os.open(pools[0], os.O_RDWR)
    try:
        asked = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, watcher.WATCH_LOCK, 1, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, asked))
    finally:
        os.close(fd)
    return 0 if kind == fcntl.F_UNLCK else pid


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed (builds the fake tool)")
def test_machine_wide_past_the_mark_a_climb_that_cannot_reach_the_limit_soon_pauses_nothing(tmp_path, env, alloc):
    # Outside any memory cgroup of ours: the limit is this process's (MemTotal here, where no
    # cgroup limits the tests) and memory in use the machine's (or cgroup's) own reading. A mark
    # of 1 % of it is always crossed, but four steps climbing ~130 MB/s together come nowhere
    # near the limit less the reserve within pauses.HORIZON: the watcher looks (its usage
    # samples carry the machine's reading and the 1 % mark) and pauses nothing, where it paused
    # them all in turn when the mark alone decided. Pausing in a real memory cgroup: the tests above.
    from shim import budget
    outs = memcg.write_growing_project(tmp_path, alloc, count=4, mb=48, grow_ms=1500, hold_ms=200)
    for pause_at in ("off", "0.01"):     # measured first: a guess is admitted only below the mark
        subprocess.run([NINJA, "-t", "clean"], cwd=tmp_path, stdout=subprocess.DEVNULL, check=True)
        env["SHIM_PAUSE_AT"] = pause_at
        result = subprocess.run([NINJA, "-j4"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=180)
        assert result.returncode == 0, result.stdout
    assert all((tmp_path / o).exists() for o in outs)
    assert memcg.pause_records(tmp_path) == [], result.stdout
    import json
    from shim import ledger
    lines = (tmp_path / ".shim" / ledger.FILENAME).read_text().splitlines()
    samples = [r for r in map(json.loads, lines) if r.get("rec") == "usage"]
    base = budget.of(budget.AUTO, None, *budget.limit(env))
    assert samples and all(r["high"] == int(base * 0.01) and r["used"] > r["high"] for r in samples), samples


def test_a_paused_step_the_watcher_loses_sight_of_is_continued_and_the_oldest_never_stays_stopped(tmp_path):
    from shim import admission
    pool = str(tmp_path / "pool-16")
    w = pauses.Watcher(pool, 8, 0, 0, lambda: 1 << 30, {})     # every reading is above the high mark
    ready, done = os.pipe(), os.pipe()
    children = []
    for slot in (1, 4):              # two steps, the one at slot 4 admitted later
        pid = os.fork()
        if pid == 0:
            try:
                locks = admission.FileLocks(os.open(pool, os.O_RDWR))
                locks.try_lock(1 + slot, 1)
                _admitted(locks, slot, os.getpid(), T0 + slot, "s%d" % slot)
                os.write(ready[1], b"x")
                os.read(done[0], 1)
            finally:
                os._exit(0)
        children.append(pid)
    try:
        got = b""
        while len(got) < 2:
            got += os.read(ready[0], 2)
        now = time.time()
        w.tick(now)
        assert pauses.stopped(children[1]) or _soon(lambda: pauses.stopped(children[1]))   # the younger one
        assert not pauses.stopped(children[0])
        os.kill(children[0], signal.SIGSTOP)           # stopped by someone: the oldest must run anyway
        _soon(lambda: pauses.stopped(children[0]))
        w.tick(now + pauses.SAMPLE_EVERY)              # (looked for once a second)
        assert _soon(lambda: not pauses.stopped(children[0]))
        w.locks.write(b"\0" * watcher.STAMP_SIZE, watcher.ADMITTED_BASE + 4 * watcher.STAMP_SIZE)   # out of view
        w.tick(now + 2 * pauses.SAMPLE_EVERY)
        assert _soon(lambda: not pauses.stopped(children[1]))
    finally:
        for pid in children:
            os.kill(pid, signal.SIGCONT)
        os.write(done[1], b"xx")
        for pid in children:
            os.waitpid(pid, 0)


def _admitted(locks, slot: int, pid: int, t0: float, record_id: str, build=None, ledger_dir: str = "", slots: int = 1):
    """What an admitted step leaves at its first slot *slot*: its roster entry and its stamp."""
    from shim import admission
    locks.write(("%d %d" % (pid, slots)).ljust(admission.ROSTER_SIZE - 1).encode() + b"\n",
                admission.ROSTER_BASE + slot * admission.ROSTER_SIZE)
    locks.write(watcher.stamp(pid, t0, record_id, build, ledger_dir), watcher.ADMITTED_BASE + slot * watcher.STAMP_SIZE)


@contextlib.contextmanager
def _running_step(pool: str, slot: int, slots: int, record_id: str, build=None, ledger_dir: str = ""):
    """A forked "step" holding *slots* slots of *pool* from *slot*, admitted there, while the
    block runs: its pid."""
    from shim import admission
    ready, done = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            locks = admission.FileLocks(os.open(pool, os.O_RDWR))
            locks.try_lock(1 + slot, slots)
            _admitted(locks, slot, os.getpid(), T0 + 1, record_id, build, ledger_dir, slots)
            os.write(ready[1], b"x")
            os.read(done[0], 1)
        finally:
            os._exit(0)
    os.read(ready[0], 1)
    try:
        yield pid
    finally:
        os.write(done[1], b"x")
        os.waitpid(pid, 0)


def _held_by_another(pool: str, slot: int) -> bool:
    """Whether another process sees slot *slot* of *pool* locked."""
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(pool, os.O_RDWR)
            try:
                import fcntl
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1 + slot)
                os._exit(0)
            except OSError:
                os._exit(1)
        finally:
            os._exit(2)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 1


def _soon(check, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
