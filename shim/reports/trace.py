"""A build as a Chrome trace (JSON Object Format), for ui.perfetto.dev and chrome://tracing.

One complete ("X") event per step on a thread per lane ("slot N") of one process ("build"),
an instant ("i") event "metadata" on the lane of each rustc step at the moment its crate's
metadata was ready (cargo starts the dependent crates then: pipelining), and a counter
("C") track "memory in use" from timeline.memory_curve. Times are microseconds from the
build's start. Cold path: never imported by a build step.
"""

import json
import os
from typing import Optional

from shim.reports import fields, timeline

PID = 1
COUNTER = "memory in use"
METADATA = "metadata"
MIN_SLICE = 1e-6      # seconds a zero-length step holds its lane (see events)
ARG_KEYS = fields.TRACE_ARGS


def _us(seconds: float) -> int:
    """Seconds as whole trace microseconds. Whole, so that a step ending where the next one in
    its lane starts ends on exactly the same number: Perfetto drops overlapping slices."""
    return round(seconds * 1e6)


def name_of(step: dict) -> str:
    """What a step is called in a report: cargo's unit (its file names are hashes), else its
    first output's base name, else its tool."""
    out = step.get("out") or []
    if step.get("unit"):
        return step["unit"]
    return os.path.basename(out[0]) if out else str(step.get("tool") or step.get("prog") or "step")


def _step_event(step: dict, lane: int, origin: float) -> dict:
    args = {key: step.get(key) for key in ARG_KEYS}
    args["id"] = step.get("id")
    event = {"ph": "X", "name": name_of(step), "cat": step.get("kind") or "other",
             "ts": _us(step["t0"] - origin),
             "dur": _us(timeline.end(step) - origin) - _us(step["t0"] - origin),
             "pid": PID, "tid": lane + 1, "args": args}
    if step.get("t1") is None:
        args["end"] = "unknown"       # drawn as a zero-length slice: we do not know how long
        event["cname"] = "grey"
    if timeline.failed(step):
        args["failed"] = True
        event["cname"] = "terrible"   # the catapult palette's red
    return event


IN_USE = "memory really in use"     # the pause watcher's samples (a second counter track)


def events(steps: list[dict], build: Optional[dict] = None, usage=()) -> dict:
    """The trace of *steps* (and the *build* record, if any) as a JSON-ready dict:
    {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}.

    Metadata events name process PID "build" and each lane's thread "slot N" (tid N;
    timeline.lanes, a zero-length step holding its lane for 1 µs);
    each step is one "X" event (ts/dur in µs from the build start, dur 0 if its end is
    unknown, cname "terrible" and args.failed if it failed); a step with `meta` also has an
    "i" event (thread scope) named "metadata" at that time on its lane; each point of the
    memory curve is one "C" event with args {"bytes": level}; each of the pause watcher's
    *usage* samples one "C" event named IN_USE with args {"bytes", "high", "stopped"}.
    """
    origin, _ = timeline.bounds(steps, build)
    # A zero-length step (unknown end) holds its lane for 1 µs: Perfetto would nest any
    # other slice starting at the same instant on the same thread inside it.
    slots = timeline.lanes(steps, min_duration=MIN_SLICE)
    trace = [{"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": "build"}}]
    for lane in range(max(slots, default=-1) + 1):
        trace.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": lane + 1,
                      "args": {"name": "slot %d" % (lane + 1)}})
        trace.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": lane + 1,
                      "args": {"sort_index": lane + 1}})
    trace.extend(_step_event(s, lane, origin) for s, lane in zip(steps, slots))
    trace.extend({"ph": "i", "s": "t", "name": METADATA, "pid": PID, "tid": lane + 1,
                  "ts": _us(s["meta"] - origin), "args": {"step": s.get("id"), "crate": s.get("crate")}}
                 for s, lane in zip(steps, slots) if s.get("meta") is not None)
    trace.extend({"ph": "C", "name": COUNTER, "pid": PID, "tid": 0, "ts": _us(t - origin),
                  "args": {"bytes": level}} for t, level in timeline.memory_curve(steps))
    trace.extend({"ph": "C", "name": IN_USE, "pid": PID, "tid": 0, "ts": _us(u["t0"] - origin),
                  "args": {"bytes": u["used"], "high": u["high"], "stopped": u.get("stopped") or 0}}
                 for u in usage if u["t0"] >= origin)
    other = {"origin": origin, "steps": len(steps)}
    if build:
        other.update({key: build.get(key) for key in ("id", "exit", "sig", "argv")})
    return {"traceEvents": trace, "displayTimeUnit": "ms", "otherData": other}


def render(steps: list[dict], build: Optional[dict] = None, usage=()) -> str:
    """The trace of *steps* as ASCII JSON text (odd bytes of paths stay escaped)."""
    return json.dumps(events(steps, build, usage), separators=(",", ":")) + "\n"
