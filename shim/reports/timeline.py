"""A build's steps laid out in time: lanes, memory in use, bounds (shared by the reports).

Pure functions over the steps of shim/reports/records.py (dicts with t0, t1, rss, exit, sig…); no I/O.
A step whose end is unknown (t1 None) is taken as ending where it starts: zero duration.
"""

import heapq
from typing import Optional


def end(step: dict) -> float:
    """When *step* ended: t1, or t0 when the end is unknown (never before t0)."""
    t1 = step.get("t1")
    return step["t0"] if t1 is None else max(step["t0"], t1)


def failed(step: dict) -> bool:
    """True if *step* exited non-zero or died of a signal; an unknown exit is not a failure."""
    return bool(step.get("sig")) or step.get("exit") not in (None, 0)


def bounds(steps: list[dict], build: Optional[dict] = None) -> tuple[float, float]:
    """(start, end) of the build: the earliest of the build record's t0 and every step's t0,
    and the latest step end (or build t1). (0.0, 0.0) when there is nothing at all."""
    starts = [s["t0"] for s in steps]
    ends = [end(s) for s in steps]
    if build:
        if isinstance(build.get("t0"), (int, float)):
            starts.append(build["t0"])
        if isinstance(build.get("t1"), (int, float)):
            ends.append(build["t1"])
    if not starts:
        return 0.0, 0.0
    start = min(starts)
    return start, max(ends + [start])


def lanes(steps: list[dict], min_duration: float = 0.0) -> list[int]:
    """The lane of each step of *steps* (same order): one lane per concurrent slot.

    Steps are taken by start (then by input order); each goes to the lowest lane that is
    free at its start, a lane being free when its previous step ended at or before that
    start. For intervals this greedy order uses the fewest lanes possible: as many as the
    most steps running at one instant. Each step holds its lane for at least *min_duration*
    seconds: a drawing that shows zero-length steps (unknown end) with some width passes
    the time that width stands for, so that such marks do not pile up in one lane.
    """
    order = sorted(range(len(steps)), key=lambda i: steps[i]["t0"])
    result = [0] * len(steps)
    busy = []                 # (end, lane) of the step last put in each occupied lane
    free = []                 # lanes whose step has ended, lowest first
    count = 0
    for i in order:
        t0 = steps[i]["t0"]
        while busy and busy[0][0] <= t0:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, count = count, count + 1
        result[i] = lane
        heapq.heappush(busy, (max(end(steps[i]), t0 + min_duration), lane))
    return result


def memory_curve(steps: list[dict]) -> list[tuple[float, int]]:
    """Memory in use over time, [(t, bytes)]: from t on, until the next point, *bytes* are held.

    Each step adds its peak RSS at its start and gives it back at its end. Steps without an
    RSS (exec-mode steps are not measured) contribute 0, and so do steps with an unknown end
    (they end where they start). Sorted by t, one point per distinct t, and only where the
    level changes; memory in use is 0 before the first point.
    """
    delta = {}
    for s in steps:
        rss = s.get("rss")
        if not rss or s.get("t1") is None:
            continue
        delta[s["t0"]] = delta.get(s["t0"], 0) + rss
        delta[end(s)] = delta.get(end(s), 0) - rss
    curve = []
    level = 0
    for t in sorted(delta):
        if delta[t]:
            level += delta[t]
            curve.append((t, level))
    return curve


def peak(curve: list[tuple[float, int]]) -> tuple[Optional[float], int]:
    """(t, bytes) of the highest point of *curve*, the earliest of equals; (None, 0) if empty."""
    best = (None, 0)
    for t, level in curve:
        if level > best[1]:
            best = (t, level)
    return best
