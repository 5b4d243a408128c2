"""`shim report`: what the last build did, from the ledger: a table, JSON, advice.

The JSON form (`--json`) follows SCHEMA (`shim report --schema` prints it); the
terminal form is for people. `--suggest --ram SIZE` turns the observed peaks into
a memory budget and ninja pool depths that would have kept the build under SIZE.
"""

import os

from shim import size
from shim.budget import reserve_for
from shim.reports import fields, timeline

TOP = 10


def summary(steps: list, build, build_dir: str, ledger_dir: str, skipped_lines: int = 0, usage=None) -> dict:
    """Everything the report shows, as plain data (see SCHEMA); *usage*: the pause
    watcher's samples of memory in use while the steps ran (records.usage_of)."""
    known = [s for s in steps if s["t1"] is not None]
    t0 = build["t0"] if build else (min(s["t0"] for s in steps) if steps else None)
    t1 = build["t1"] if build and build.get("t1") else (max(s["t1"] for s in known) if known else None)
    by_kind, by_mode, by_timing = {}, {}, {}
    for s in steps:
        by_kind[s["kind"]] = by_kind.get(s["kind"], 0) + 1
        by_mode[s["mode"]] = by_mode.get(s["mode"], 0) + 1
        by_timing[s["timing"]] = by_timing.get(s["timing"], 0) + 1
    measured = [s for s in steps if s["rss"] is not None]
    learned = [s for s in steps if s.get("learned") is not None]
    cpu = [s for s in steps if s["ut"] is not None]
    failures = [s for s in steps if timeline.failed(s)]
    paused = [s for s in steps if s.get("pauses")]
    curve = timeline.memory_curve(steps)
    peak_at, peak_bytes = timeline.peak(curve) if curve else (None, None)
    return {
        "version": 1,
        "build_dir": build_dir,
        "ledger": ledger_dir,
        "skipped_lines": skipped_lines,
        "build": None if not build else {
            "id": build.get("id"), "t0": build.get("t0"), "t1": build.get("t1"),
            "exit": build.get("exit"), "sig": build.get("sig"), "argv": build.get("argv"),
            "runner": build.get("runner") or "ninja"},      # the build tool: ninja, cargo, go
        "totals": {
            "steps": len(steps),
            "wall": (t1 - t0) if t0 is not None and t1 is not None else None,
            "cpu_user": sum(s["ut"] for s in cpu) if cpu else None,
            "cpu_system": sum(s["st"] or 0 for s in cpu) if cpu else None,
            "cpu_steps": len(cpu),
            "failures": len(failures),
            "max_rss": max(s["rss"] for s in measured) if measured else None,
            "rss_steps": len(measured),
            "max_learned": max(s["learned"] for s in learned) if learned else None,
            "learned_steps": len(learned),
            "peak_memory_in_use": peak_bytes,
            "peak_memory_at": (peak_at - t0) if peak_at is not None and t0 is not None else None,
            "sampled_peak": build.get("peak") if build else None,
            "by_kind": by_kind,
            "by_mode": by_mode,
            "by_timing": by_timing,
            "pauses": sum(s["pauses"] for s in paused),
            "paused_steps": len(paused),
            "paused_seconds": round(sum(s["paused"] or 0 for s in paused), 6),
        },
        "memory": in_use(steps, usage, t0),
        "top_memory": sorted(measured + learned, key=lambda s: -fields.peak(s))[:TOP],
        "top_duration": sorted((s for s in steps if s["dur"] is not None), key=lambda s: -s["dur"])[:TOP],
        "failures": failures,
        "steps": steps,
    }


WAITED = 0.05       # seconds of waiting for memory that count as a wait


def in_use(steps: list, usage, t0):
    """What the pause watcher saw (None without samples): the marks, the peak of memory
    really in use, when it first crossed the high mark, and the steps that waited for
    memory while less than the low mark was in use (their estimates were too high);
    times in seconds since *t0*; `samples` [[seconds, bytes]] for the charts."""
    if not usage or t0 is None:
        return None
    top = max(usage, key=lambda u: u["used"])
    crossed = next((u for u in usage if u["used"] >= u["high"]), None)
    free = []
    for s in steps:
        wait = s.get("wait") or 0
        if wait < WAITED:
            continue
        during = [u["used"] for u in usage if s["t0"] - wait <= u["t0"] <= s["t0"]]
        if during and max(during) < usage[-1]["low"]:
            free.append(fields.name_of(s))
    return {"high": usage[-1]["high"], "low": usage[-1]["low"], "peak": top["used"],
            "peak_at": round(top["t0"] - t0, 3), "crossed_at": round(crossed["t0"] - t0, 3) if crossed else None,
            "waited_while_free": len(free), "waited_while_free_steps": free[:TOP],
            "samples": [[round(u["t0"] - t0, 3), u["used"]] for u in usage]}


def in_use_lines(data: dict) -> list:
    """The pause watcher's findings for people (terminal and Markdown alike)."""
    t, m = data["totals"], data.get("memory")
    lines = []
    if t.get("pauses"):
        lines.append("paused before kill: %d pause%s of %d step%s, %s stopped in all" % (
            t["pauses"], "" if t["pauses"] == 1 else "s", t["paused_steps"], "" if t["paused_steps"] == 1 else "s",
            fields.seconds(t["paused_seconds"])))
    if m:
        when = ("crossed it at +%s" % fields.seconds(m["crossed_at"])) if m["crossed_at"] is not None \
            else "never crossed it"
        lines.append("memory really in use: peak %s at +%s; high-water mark %s (pause), low %s (resume): %s"
                     % (fields.amount(m["peak"]), fields.seconds(m["peak_at"]), fields.amount(m["high"]),
                        fields.amount(m["low"]), when))
        if m["waited_while_free"]:
            lines.append("%d step%s waited for memory while less than the low mark was in use (estimates too "
                         "high): %s" % (m["waited_while_free"], "" if m["waited_while_free"] == 1 else "s",
                                        ", ".join(m["waited_while_free_steps"])))
    return lines


def _rows(steps: list) -> list:
    """The steps as table lines, columns fields.TERMINAL (cache only when ccache marked some)."""
    names = [n for n in fields.TERMINAL if n != "cache" or any(s.get("cache") for s in steps)]
    columns = [fields.COLUMNS[n] for n in names]
    widths = [max([len(c.header)] + [len(c.text(s)) for s in steps]) for c in columns[:-1]]
    lines = []
    for row in [[c.header for c in columns]] + [[c.text(s) for c in columns] for s in steps]:
        lines.append("  " + " ".join(t.ljust(w) for t, w in zip(row, widths)) + " " + row[-1])
    return lines


def render(data: dict, list_steps: bool = True) -> str:
    """The terminal report."""
    t = data["totals"]
    b = data["build"]
    head = "build %s" % b["id"] if b else "steps without a `shim build` (grouped by time)"
    if b and (b.get("exit") is not None or b.get("sig") is not None):
        head += ", %s exit %s" % (b.get("runner") or "ninja",
                                  b["exit"] if b.get("sig") is None else "signal %d" % b["sig"])
    lines = ["shim report: %s in %s" % (head, data["build_dir"])]
    cpu = "-" if t["cpu_user"] is None else "%.2fs user + %.2fs sys (%s)" % (
        t["cpu_user"], t["cpu_system"], measured_of(t["cpu_steps"], t["steps"]))
    lines.append("  %d steps, wall %s, CPU %s" % (t["steps"], fields.seconds(t["wall"]), cpu))
    lines.append("  kinds: %s;  modes: %s;  timing: %s" % (
        _counts(t["by_kind"]), _counts(t["by_mode"]), _counts(t["by_timing"])))
    if t.get("sampled_peak") is not None:
        lines.append("  sampled build peak: %s (shim sampled %s and everything under it)"
                     % (fields.amount(t["sampled_peak"]), b.get("runner") or "ninja" if b else "ninja"))
    lines.append("  largest step peak: %s;  concurrent step peaks: %s (their sum at the busiest moment; %s)"
                 % (largest_text(t), fields.amount(t["peak_memory_in_use"]), measured_of(t["rss_steps"], t["steps"])))
    cached = [s["cache"] for s in data["steps"] if s.get("cache")]
    if cached:
        lines.append("  ccache: %s" % _counts({r: cached.count(r) for r in set(cached)}))
    lines += ["  " + line for line in in_use_lines(data)]
    lines.append("  failures: %s" % ("none" if not data["failures"] else
                                      ", ".join("%s (%s)" % (fields.name_of(s), fields.exit_text(s)) for s in data["failures"])))
    if data["top_memory"]:
        lines += ["", "Top %d by peak memory:" % len(data["top_memory"])] + _rows(data["top_memory"])
        if any(s["rss"] is None for s in data["top_memory"]):
            lines.append("  (%s)" % fields.LEARNED_NOTE)
    if data["top_duration"]:
        lines += ["", "Top %d by duration:" % len(data["top_duration"])] + _rows(data["top_duration"])
    if list_steps and data["steps"]:
        lines += ["", "Steps, in start order:"] + _rows(data["steps"])
    if data.get("skipped_lines"):
        lines += ["", "note: %d ledger lines could not be read and were skipped (torn or damaged)"
                  % data["skipped_lines"]]
    if t["by_timing"].get("unknown"):
        lines += ["", "note: %d exec steps have no duration: no matching .ninja_log entry (failed, or not "
                      "run by ninja)" % t["by_timing"]["unknown"]]
    return "\n".join(lines) + "\n"


def measured_of(count: int, steps: int) -> str:
    """`all 48 steps measured`, `3 of 48 steps measured, the rest exec'd`."""
    if count == steps:
        return "all %d steps measured" % steps if steps != 1 else "the step measured"
    return "%d of %d steps measured, the rest exec'd" % (count, steps)


def largest_text(totals: dict) -> str:
    """The largest measured step peak, and the largest learned one when larger: `34.3MiB
    measured, ~512.0MiB learned`."""
    text = fields.amount(totals["max_rss"])
    learned = totals.get("max_learned")
    if learned is not None and (totals["max_rss"] is None or learned > totals["max_rss"]):
        text += " measured, %s%s learned" % (fields.LEARNED, fields.amount(learned))
    return text


def _counts(counts: dict) -> str:
    return ", ".join("%s %d" % kv for kv in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


# --- --suggest ------------------------------------------------------------------------


def suggest(steps: list, ram: int, cores: int = None) -> dict:
    """A budget and pool depths that keep *steps* under *ram*, with the reasoning."""
    cores = cores or os.cpu_count() or 1
    reserve = reserve_for(ram, machine=True)        # RAM: the system lives there too
    budget = ram - reserve
    reasons = ["RAM %s minus a reserve of %s for the system leaves a budget of %s."
               % (size.format(ram), size.format(reserve), size.format(budget))]
    measured = [s for s in steps if s["rss"] is not None]
    unmeasured = len(steps) - len(measured)
    if unmeasured:
        reasons.append("%d of %d steps ran in exec mode and have no measured peak; run once with "
                       "`shim build --mode spawn` (or auto) to measure them." % (unmeasured, len(steps)))
    pools = {}
    for kind in sorted({s["kind"] for s in measured}):
        peaks = sorted(s["rss"] for s in measured if s["kind"] == kind)
        top = peaks[-1]
        heaviest = max((s for s in measured if s["kind"] == kind), key=lambda s: s["rss"])
        depth = max(1, min(cores, budget // top)) if top else cores
        pools[kind] = {"depth": depth, "max_rss": top, "step": fields.name_of(heaviest), "count": len(peaks)}
        reasons.append("%s steps (%d measured) peak at %s (%s): %d fit in the budget at once%s."
                       % (kind, len(peaks), size.format(top), fields.name_of(heaviest), budget // top if top else 0,
                          " (capped at %d cores)" % cores if top and budget // top > cores else ""))
    overall = max((s["rss"] for s in measured), default=0)
    jobs = max(1, min(cores, budget // overall)) if overall else cores
    if measured:
        reasons.append("With one pool for everything, -j%d keeps even the heaviest steps under the budget; "
                       "`shim build --budget %s` admits steps by their measured peaks instead, so light "
                       "steps are not held back by heavy ones." % (jobs, size.format(budget)))
    return {"ram": ram, "budget": budget, "reserve": reserve, "jobs": jobs, "pools": pools,
            "unmeasured_steps": unmeasured, "reasons": reasons}


def render_suggestion(s: dict) -> str:
    lines = ["Suggestion for %s of RAM:" % size.format(s["ram"]),
             "  shim build --budget %s" % size.format(s["budget"]),
             "  or static: ninja -j%d, with pools (pool NAME / depth = N in build.ninja):" % s["jobs"]]
    for kind, p in s["pools"].items():
        lines.append("    %-10s depth = %d   (peak %s)" % (kind, p["depth"], size.format(p["max_rss"])))
    lines += ["", "Why:"] + ["  - " + r for r in s["reasons"]]
    return "\n".join(lines) + "\n"


# --- the JSON schema ----------------------------------------------------------------------

_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
STEP_SCHEMA = fields.step_schema()
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "shim report --json",
    "type": "object",
    "required": ["version", "build_dir", "ledger", "skipped_lines", "build", "totals", "memory", "top_memory",
                 "top_duration", "failures", "steps"],
    "properties": {
        "version": {"const": 1},
        "build_dir": {"type": "string"}, "ledger": {"type": "string"},
        "skipped_lines": {"type": "integer", "minimum": 0},
        "build": {"type": ["object", "null"], "required": ["id", "t0", "t1", "exit", "sig", "argv"]},
        "totals": {
            "type": "object",
            "required": ["steps", "wall", "cpu_user", "cpu_system", "cpu_steps", "failures", "max_rss",
                         "rss_steps", "max_learned", "learned_steps", "peak_memory_in_use", "peak_memory_at",
                         "sampled_peak", "by_kind", "by_mode", "by_timing", "pauses", "paused_steps",
                         "paused_seconds"],
            "properties": {
                "steps": {"type": "integer", "minimum": 0}, "wall": _NUM, "cpu_user": _NUM,
                "cpu_system": _NUM, "cpu_steps": {"type": "integer"},
                "failures": {"type": "integer"}, "max_rss": _INT, "rss_steps": {"type": "integer"},
                "max_learned": _INT, "learned_steps": {"type": "integer", "minimum": 0},
                "peak_memory_in_use": _INT, "peak_memory_at": _NUM, "sampled_peak": _INT,
                "by_kind": {"type": "object", "additionalProperties": {"type": "integer"}},
                "by_mode": {"type": "object", "additionalProperties": {"type": "integer"}},
                "by_timing": {"type": "object", "additionalProperties": {"type": "integer"}},
                "pauses": {"type": "integer", "minimum": 0}, "paused_steps": {"type": "integer", "minimum": 0},
                "paused_seconds": {"type": "number", "minimum": 0},
            },
            "additionalProperties": False,
        },
        "memory": {                                  # what the pause watcher saw; null without it
            "type": ["object", "null"], "additionalProperties": False,
            "required": ["high", "low", "peak", "peak_at", "crossed_at", "waited_while_free",
                         "waited_while_free_steps", "samples"],
            "properties": {
                "high": {"type": "integer", "description": "high-water mark: steps are paused above it"},
                "low": {"type": "integer", "description": "low-water mark: paused steps resume below it"},
                "peak": {"type": "integer", "description": "peak of memory really in use, sampled"},
                "peak_at": {"type": "number"},
                "crossed_at": {"type": ["number", "null"],
                               "description": "seconds into the build when usage first crossed the high mark"},
                "waited_while_free": {"type": "integer", "minimum": 0,
                                      "description": "steps that waited for memory while usage was below "
                                                     "the low mark (estimates too high)"},
                "waited_while_free_steps": {"type": "array", "maxItems": TOP, "items": {"type": "string"}},
                "samples": {"type": "array", "items": {"type": "array", "items": {"type": "number"},
                                                       "minItems": 2, "maxItems": 2}},
            }},
        "top_memory": {"type": "array", "maxItems": TOP, "items": STEP_SCHEMA},
        "top_duration": {"type": "array", "maxItems": TOP, "items": STEP_SCHEMA},
        "failures": {"type": "array", "items": STEP_SCHEMA},
        "steps": {"type": "array", "items": STEP_SCHEMA},
        "suggestion": {"type": "object"},
        "comparison": {"type": "object"},            # shim/reports/compare.py SCHEMA (with --compare)
        "estimate_misses": {"type": "array"},        # compare.ESTIMATES_SCHEMA
    },
    "additionalProperties": False,
}
