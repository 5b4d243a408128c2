"""Admission by the memory really in use (issue 18, item 1): the pure decisions, the roster in
the pool and the usage readings of cgroup v1, v2 and a host without a memory cgroup. The real
thing, in a real memory cgroup beside a neighbour, is tests/livemem_test.py."""

import pytest

from admission_test import Clock, MemoryLocks
from budget_test import limit_clock, runtime as fresh, tree  # noqa: F401 (fixtures)
from shim import admission, budget, host

MIB = 1 << 20
GIB = 1 << 30


def test_an_admitted_step_counts_at_the_larger_of_its_reservation_and_its_size():
    assert admission.unfilled([(256 * MIB, 100 * MIB)]) == 156 * MIB     # may still grow into 156
    assert admission.unfilled([(256 * MIB, 330 * MIB)]) == 0             # past it: all in use already
    assert admission.room(896 * MIB, 500 * MIB, [(256 * MIB, 100 * MIB)]) == 240 * MIB


def test_memory_held_by_a_neighbour_shrinks_what_can_be_admitted_now():
    # 1 GiB cgroup, budget 896 MiB; a neighbour holds 400 MiB, one step of 256 MiB has just started.
    steps = [(256 * MIB, 0)]
    assert not admission.admit_now(896 * MIB, 256 * MIB, 400 * MIB, steps)
    assert admission.admit_now(896 * MIB, 256 * MIB, 400 * MIB, [])           # alone beside it: fits
    assert admission.admit_now(896 * MIB, 256 * MIB, 100 * MIB, steps)        # no neighbour: two fit


def test_without_a_reading_or_with_no_step_beside_it_a_step_is_admitted_as_before():
    assert admission.admit_now(896 * MIB, 256 * MIB, None, [(800 * MIB, 0)])
    assert admission.admit_now(896 * MIB, 2 * GIB, 1 * GIB, [], alone=True)   # the build always progresses


def live(usage_cheap, usage_exact, ceiling=896 * MIB):
    calls = []

    def reader(exact):
        calls.append(exact)
        return usage_exact if exact else usage_cheap
    return (ceiling, reader), calls


def test_a_step_waits_while_the_memory_in_use_leaves_no_room_and_starts_when_it_does(monkeypatch):
    pool = {"locks": {}, "data": bytearray()}
    monkeypatch.setattr(host, "tree_rss", lambda pid: 0)
    first, _ = live(400 * MIB, 400 * MIB)
    a = admission.acquire("", 56, 16, 16 * MIB, locks=MemoryLocks(pool, "a"), clock=Clock(),
                          sleep=lambda s: None, live=first)
    assert admission._roster(pool["data"][admission.ROSTER_BASE:])[0][2] == 16     # a is listed
    usage = {"now": 400 * MIB}
    clock = Clock([(1.0, lambda: usage.update(now=300 * MIB))])     # the neighbour lets go of 100 MiB
    reader = (896 * MIB, lambda exact: usage["now"])
    b = admission.acquire("", 56, 16, 16 * MIB, locks=MemoryLocks(pool, "b"), clock=clock, sleep=clock.sleep,
                          live=reader)
    assert 1.0 <= b.waited < 1.1 and not set(a.slots) & set(b.slots)


def test_the_exact_reading_is_taken_only_when_the_cheap_bound_leaves_no_room(monkeypatch):
    pool = {"locks": {}, "data": bytearray()}
    monkeypatch.setattr(host, "tree_rss", lambda pid: 0)
    roomy, calls = live(100 * MIB, 100 * MIB)
    admission.acquire("", 56, 16, 16 * MIB, locks=MemoryLocks(pool, "a"), clock=Clock(), sleep=lambda s: None,
                      live=roomy)
    assert calls == [False]
    # Page cache makes the cgroup look full; without it there is room beside the listed step.
    tight, calls = live(800 * MIB, 300 * MIB)
    admission.acquire("", 56, 16, 16 * MIB, locks=MemoryLocks(pool, "b"), clock=Clock(), sleep=lambda s: None,
                      live=tight)
    assert calls == [False, True]


def test_a_roster_entry_whose_step_is_gone_is_dropped_and_cleared():
    pool = {"locks": {}, "data": bytearray()}
    gone = MemoryLocks(pool, "gone")
    r = admission.acquire("", 56, 40, 16 * MIB, locks=gone, clock=Clock(), sleep=lambda s: None,
                          live=live(0, 0)[0])
    for i in r.slots:              # died by kill -9: its locks are gone, its entry stayed
        gone.unlock(1 + i)
    full, calls = live(500 * MIB, 100 * MIB)
    b = admission.acquire("", 56, 16, 16 * MIB, locks=MemoryLocks(pool, "b"), clock=Clock(),
                          sleep=lambda s: pytest.fail("waited for a step that is gone"), live=full)
    assert calls == [False, True] and len(b.slots) == 16
    assert [e[2] for e in admission._roster(pool["data"][admission.ROSTER_BASE:])] == [16]


def test_a_step_whose_take_wraps_round_clears_the_stale_entries_under_all_its_slots(monkeypatch):
    # 18 slots of 16 MiB (a 288 MiB budget), steps of 8. "a" (first slot 0) dies with its entry
    # listed; "b" starts at slot 14 and wraps round to 0..3: a's entry sits under a slot b holds,
    # so nobody can see that a is gone. Left there, "c" would count b twice and wait.
    pool = {"locks": {}, "data": bytearray()}
    monkeypatch.setattr(host, "tree_rss", lambda pid: 0)
    monkeypatch.setattr(host, "getpid", lambda: 18 * 100)
    a = admission.acquire("", 18, 8, 16 * MIB, locks=MemoryLocks(pool, "a"), clock=Clock(), sleep=lambda s: None,
                          live=live(0, 0)[0])
    assert a.slots == list(range(8))
    for i in a.slots:              # killed: its locks are gone, its entry stayed
        MemoryLocks(pool, "a").unlock(1 + i)
    monkeypatch.setattr(host, "getpid", lambda: 18 * 100 + 14)
    b = admission.acquire("", 18, 8, 16 * MIB, locks=MemoryLocks(pool, "b"), clock=Clock(), sleep=lambda s: None,
                          live=live(0, 0)[0])
    assert b.slots == [14, 15, 16, 17, 0, 1, 2, 3]
    assert [(e[0], e[2]) for e in admission._roster(pool["data"][admission.ROSTER_BASE:])] == [(14, 8)]
    monkeypatch.setattr(host, "getpid", lambda: 18 * 100 + 4)
    c = admission.acquire("", 18, 8, 16 * MIB, locks=MemoryLocks(pool, "c"), clock=Clock(),
                          sleep=lambda s: pytest.fail("counted b twice"), live=live(400 * MIB, 50 * MIB, 352 * MIB)[0])
    assert c.slots == list(range(4, 12))


def test_a_released_reservation_leaves_the_roster():
    pool = {"locks": {}, "data": bytearray()}
    r = admission.acquire("", 8, 2, MIB, locks=MemoryLocks(pool, "a"), clock=Clock(), sleep=lambda s: None,
                          live=live(0, 0)[0])
    r.release()
    assert admission._roster(pool["data"][admission.ROSTER_BASE:]) == []


# --- the readings ------------------------------------------------------------------------

MEMINFO = "MemTotal:       4194304 kB\nMemFree:         1000000 kB\nMemAvailable:    3145728 kB\n"


def test_in_a_v1_cgroup_in_use_is_its_usage_less_inactive_page_cache(tmp_path, fresh):
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO, "proc/self/cgroup": "4:memory:/ci/job\n",
        "proc/self/mountinfo": "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        "sys/fs/cgroup/memory/ci/job/memory.limit_in_bytes": "%d\n" % GIB,
        "sys/fs/cgroup/memory/ci/job/memory.usage_in_bytes": "%d\n" % (700 * MIB),
        "sys/fs/cgroup/memory/ci/job/memory.stat": "cache 1\ninactive_file 5\ntotal_inactive_file %d\n" % (200 * MIB),
        "sys/fs/cgroup/memory/ci/memory.limit_in_bytes": "9223372036854771712\n",
    })
    assert budget.limit(fresh, root) == (GIB, False)
    assert budget.in_use(fresh, exact=False, root=root) == 700 * MIB
    assert budget.in_use(fresh, root=root) == 500 * MIB


def test_in_a_v2_cgroup_in_use_is_memory_current_less_inactive_file(tmp_path, fresh):
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO, "proc/self/cgroup": "0::/ci/job\n",
        "proc/self/mountinfo": "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "sys/fs/cgroup/ci/memory.max": "%d\n" % GIB,       # the parent's limit binds: its usage is read
        "sys/fs/cgroup/ci/memory.current": "%d\n" % (600 * MIB),
        "sys/fs/cgroup/ci/memory.stat": "anon 5\ninactive_file %d\nactive_file 7\n" % (100 * MIB),
        "sys/fs/cgroup/ci/job/memory.max": "max\n", "sys/fs/cgroup/ci/job/memory.high": "max\n",
    })
    assert budget.limit(fresh, root) == (GIB, False)
    assert budget.in_use(fresh, root=root) == 500 * MIB


def test_without_a_memory_cgroup_in_use_is_memtotal_less_memavailable(tmp_path, fresh):
    root = tree(tmp_path, {"proc/meminfo": MEMINFO, "proc/self/cgroup": "", "proc/self/mountinfo": ""})
    assert budget.limit(fresh, root) == (4 * GIB, True)
    assert budget.in_use(fresh, root=root) == 1 * GIB


@pytest.mark.parametrize("damage", ["garbage\n", ""])
def test_a_usage_that_cannot_be_read_means_no_reading(tmp_path, fresh, damage):
    root = tree(tmp_path, {
        "proc/meminfo": MEMINFO, "proc/self/cgroup": "0::/job\n",
        "proc/self/mountinfo": "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "sys/fs/cgroup/job/memory.max": "%d\n" % GIB, "sys/fs/cgroup/job/memory.current": damage,
    })
    assert budget.in_use(fresh, root=root) is None


def test_without_any_limit_there_is_no_reading(tmp_path, fresh):
    root = tree(tmp_path, {"proc/meminfo": "", "proc/self/cgroup": "", "proc/self/mountinfo": ""})
    assert budget.limit(fresh, root) is None
    assert budget.in_use(fresh, root=root) is None


def test_a_step_is_in_the_roster_before_the_gate_lets_the_next_step_look():
    pool = {"locks": {}, "data": bytearray()}
    seen = []

    class Watched(MemoryLocks):
        def unlock(self, offset):
            if offset == admission.GATE:
                seen.append(admission._roster(pool["data"][admission.ROSTER_BASE:]))
            super().unlock(offset)

    admission.acquire("", 8, 2, MIB, locks=Watched(pool, "a"), clock=Clock(), sleep=lambda s: None,
                      live=live(0, 0)[0])
    assert seen and seen[-1] and seen[-1][0][2] == 2


@pytest.mark.parametrize("pause_at, config, expected", [
    ("", {}, int(960 * MIB * 0.8)),                       # the pause mark of the budget
    ("0.9", {}, int(960 * MIB * 0.9)),                    # SHIM_PAUSE_AT moves the mark
    ("", {"memory": {"pause_at": 0.6}}, int(960 * MIB * 0.6)),
    ("off", {}, 960 * MIB),                               # no pausing: no mark to keep below
])
def test_a_guess_is_admitted_below_the_pause_mark_and_a_measured_step_up_to_the_budget(monkeypatch, pause_at,
                                                                                       config, expected):
    from shim import step, watcher
    monkeypatch.setattr(budget, "limit", lambda env, root="/": (GIB, False))
    env = {"SHIM_PAUSE_AT": pause_at} if pause_at else {}
    for guessed in (True, False):
        ceiling, _, mark, flag = step._live(env, watcher.marks(env, config), guessed)
        assert (ceiling, mark, flag) == (960 * MIB, expected, guessed)
    assert budget.of(budget.AUTO, None, GIB, False) == 960 * MIB     # the budget of a 1 GiB limit


def test_while_a_step_admitted_on_a_guess_runs_every_step_must_fit_below_the_mark(monkeypatch):
    # 1 GiB: budget 960 MiB, mark 768; a neighbour holds 425 MiB. A cold step (a 192 MiB guess)
    # runs, 45 MiB so far; the next one is known from its siblings at 336 MiB.
    pool = {"locks": {}, "data": bytearray()}
    monkeypatch.setattr(host, "tree_rss", lambda pid: 45 * MIB)
    usage = {"now": 425 * MIB}
    live_of = lambda guessed: (960 * MIB, lambda exact: usage["now"], 768 * MIB, guessed)   # noqa: E731
    cold = admission.acquire("", 60, 12, 16 * MIB, locks=MemoryLocks(pool, "cold"), clock=Clock(),
                             sleep=lambda s: None, live=live_of(True))
    assert admission._roster(pool["data"][admission.ROSTER_BASE:])[0][2] == 12   # listed, as a guess
    assert b" -12" in bytes(pool["data"][admission.ROSTER_BASE:admission.ROSTER_BASE + 60 * admission.ROSTER_SIZE])
    usage["now"] = 470 * MIB
    held = [i for i in range(60) if i not in cold.slots][:21]      # 21 slots: 336 MiB
    other = MemoryLocks(pool, "known")
    for i in held:
        other.try_lock(1 + i)
    # 470 + (192 - 45) + 336 = 953 MiB: under the budget, over the mark: it waits.
    assert not admission._fits(other, 60, 16 * MIB, held, live_of(False))
    cold.release()
    # The same step beside a measured one of the same size: the whole budget.
    known = admission.acquire("", 60, 12, 16 * MIB, locks=MemoryLocks(pool, "measured"), clock=Clock(),
                              sleep=lambda s: None, live=live_of(False))
    assert b"-" not in bytes(pool["data"][admission.ROSTER_BASE:admission.ROSTER_BASE + 60 * admission.ROSTER_SIZE])
    assert admission._fits(other, 60, 16 * MIB, held, live_of(False))
