"""A build's steps laid out in time: lanes, memory in use, bounds (shim/reports/timeline.py)."""

import random

import pytest

from shim.reports import records
from shim.reports import timeline


def step(t0, t1, rss=None, **fields) -> dict:
    """A step as records.steps_of makes it, every STEP_KEYS key present."""
    s = dict.fromkeys(records.STEP_KEYS)
    s.update(id="s%r" % t0, t0=t0, t1=t1, dur=None if t1 is None else t1 - t0, rss=rss, out=[],
             kind="compile", mode="spawn" if rss is not None else "exec", timing="measured")
    s.update(fields)
    return s


def random_steps(rng: random.Random, n: int) -> list:
    """Intervals on a coarse grid, so that many steps start exactly where others end."""
    steps = []
    for _ in range(n):
        t0 = 100.0 + rng.randint(0, 40) * 0.5
        t1 = t0 + rng.randint(1, 12) * 0.5
        steps.append(step(t0, t1, rss=rng.choice([None, rng.randint(1, 1 << 30)])))
    return steps


def most_running_at_once(steps: list) -> int:
    """The most steps running at one instant; a step ending at t is not running at t."""
    return max(sum(1 for s in steps if s["t0"] <= t < s["t1"]) for t in (x["t0"] for x in steps))


def level_at(steps: list, t: float) -> int:
    """Memory held at *t* by the steps with a known RSS and end, straight from the definition."""
    return sum(s["rss"] for s in steps if s["rss"] and s["t1"] is not None and s["t0"] <= t < s["t1"])


def curve_at(curve: list, t: float) -> int:
    """The level of the step function *curve* at *t*."""
    held = [level for when, level in curve if when <= t]
    return held[-1] if held else 0


def test_steps_in_one_lane_never_overlap():
    rng = random.Random(20261124)
    for _ in range(200):
        steps = random_steps(rng, rng.randint(1, 30))
        slots = timeline.lanes(steps)
        assert len(slots) == len(steps)
        for lane in set(slots):
            mine = sorted((s for s, n in zip(steps, slots) if n == lane), key=lambda s: s["t0"])
            for before, after in zip(mine, mine[1:]):
                assert before["t1"] <= after["t0"]


def test_lanes_are_as_few_as_the_most_steps_running_at_once():
    rng = random.Random(7)
    for _ in range(200):
        steps = random_steps(rng, rng.randint(1, 30))
        slots = timeline.lanes(steps)
        assert max(slots) + 1 == most_running_at_once(steps)
        assert set(slots) == set(range(max(slots) + 1))


def test_each_step_takes_the_lowest_lane_free_at_its_start():
    rng = random.Random(5)
    for _ in range(200):
        steps = random_steps(rng, rng.randint(1, 30))
        slots = timeline.lanes(steps)
        for s, lane in zip(steps, slots):
            # every lower lane holds a step running at s's start (started before, ends after)
            for lower in range(lane):
                assert any(o["t0"] <= s["t0"] < o["t1"] for o, n in zip(steps, slots) if n == lower)


def test_lanes_are_given_in_the_order_of_the_input_not_of_start():
    steps = [step(5.0, 6.0), step(0.0, 10.0)]
    slots = timeline.lanes(steps)
    assert slots[1] == 0 and slots[0] != slots[1]      # the first to start has lane 0


def test_a_step_of_unknown_end_takes_no_time_in_its_lane():
    steps = [step(0.0, None), step(0.0, 1.0), step(0.5, None)]
    slots = timeline.lanes(steps)
    assert slots[0] == slots[1]          # the unknown one ended where it started
    assert slots[2] != slots[1]          # but the measured one still runs at 0.5
    assert timeline.end(steps[0]) == steps[0]["t0"]


def test_a_minimum_duration_keeps_zero_length_steps_apart():
    steps = [step(0.0, None), step(0.1, None), step(0.3, None), step(0.3, 0.4)]
    width = 0.25
    slots = timeline.lanes(steps, min_duration=width)
    for lane in set(slots):
        mine = sorted(s["t0"] for s, n in zip(steps, slots) if n == lane)
        assert all(b - a >= width for a, b in zip(mine, mine[1:]))
    assert max(slots) + 1 == max(sum(1 for s in steps if s["t0"] <= t < s["t0"] + width)
                                 for t in (x["t0"] for x in steps))


def test_no_steps_no_lanes_no_memory():
    assert timeline.lanes([]) == []
    assert timeline.memory_curve([]) == []
    assert timeline.peak([]) == (None, 0)
    assert timeline.bounds([]) == (0.0, 0.0)


def test_memory_curve_is_the_sum_of_the_rss_of_the_running_steps():
    rng = random.Random(11)
    for _ in range(100):
        steps = random_steps(rng, rng.randint(1, 25))
        curve = timeline.memory_curve(steps)
        times = [t for t, _ in curve]
        assert times == sorted(set(times))                 # sorted, one point per instant
        assert all(a[1] != b[1] for a, b in zip(curve, curve[1:]))
        for t in {s["t0"] for s in steps} | {s["t1"] for s in steps} | {s["t0"] + 0.25 for s in steps}:
            assert curve_at(curve, t) == level_at(steps, t)
        assert (curve[-1][1] if curve else 0) == 0        # everything is given back


def test_steps_without_rss_or_end_contribute_nothing_to_memory():
    measured = [step(0.0, 4.0, rss=100), step(1.0, 2.0, rss=30)]
    unmeasured = [step(0.5, 3.0), step(1.0, None, rss=500), step(2.0, 2.0, rss=70)]
    curve = timeline.memory_curve(measured + unmeasured)
    assert curve == timeline.memory_curve(measured)
    assert [level for _, level in curve] == [level_at(measured, t) for t, _ in curve]


def test_a_step_ending_where_another_starts_does_not_make_a_spike():
    steps = [step(0.0, 1.0, rss=100), step(1.0, 2.0, rss=100)]
    curve = timeline.memory_curve(steps)
    assert steps[0]["t1"] not in [t for t, _ in curve]
    assert timeline.peak(curve)[1] == max(s["rss"] for s in steps)


def test_peak_is_the_earliest_highest_point():
    rng = random.Random(3)
    for _ in range(50):
        curve = timeline.memory_curve(random_steps(rng, 20))
        t, top = timeline.peak(curve)
        if not curve:
            continue
        assert top == max(level for _, level in curve)
        assert t == min(when for when, level in curve if level == top)


def test_bounds_take_the_build_record_and_the_latest_end():
    steps = [step(10.0, 12.0), step(11.0, None), step(11.5, 14.0), step(14.5, None)]
    own = (min(s["t0"] for s in steps), max(s["t1"] or s["t0"] for s in steps))
    assert timeline.bounds(steps) == own
    wider = {"t0": own[0] - 1, "t1": own[1] + 1}
    assert timeline.bounds(steps, wider) == (wider["t0"], wider["t1"])
    assert timeline.bounds(steps, {"t0": None, "t1": None}) == own


@pytest.mark.parametrize("code, sig, failed", [
    (0, None, False), (None, None, False), (1, None, True), (None, 9, True), (0, 15, True),
])
def test_a_step_failed_if_it_exited_non_zero_or_died_of_a_signal(code, sig, failed):
    assert timeline.failed(step(0.0, 1.0, exit=code, sig=sig)) is failed
