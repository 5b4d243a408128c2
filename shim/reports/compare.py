"""Comparisons: two builds side by side, and one build's memory estimates against its peaks.

Pure functions over plain data: steps as records.steps_of returns them, the build
record (or None), report.summary's totals. No I/O, no printing: callers (`shim report
--compare/--fail-over`, the HTML and Markdown pages) decide where results go.

Totals that add up what spawned steps measured (CPU, step peaks) compare like with like: when
either build has unmeasured (exec'd) steps, only if both measured the same steps; otherwise
the change is left unknown and says how many steps each side did not measure (a cold build
measured, against a warm one that exec'd, is not "CPU -99 %").

Steps of two builds are matched by step_key. A change counts only if it exceeds both
thresholds, the relative and the absolute one (defaults: 10 % and 50 ms for durations,
10 % and 16 MiB, one admission slot, for peaks): a 3 ms compile that takes 6 ms has
doubled, and a 4 GiB link that grew by 20 MiB has grown, but neither is news.
"""

from typing import Optional

from shim import size
from shim.reports import fields, report

TOP = 10
THRESHOLDS = {"pct": 10.0, "seconds": 0.05, "bytes": 16 << 20}
OVER_RESERVATION = 1.25      # a peak above this many times its reservation: the budget was blind
NO_MISSES = "no measured step peaked beyond what the budget expected"
METRICS = (("duration", "dur", "seconds"), ("memory", "rss", "bytes"))   # (name, step key, threshold)
TOTALS = ("wall", "cpu", "peak_memory_in_use", "sampled_peak", "max_rss", "steps", "failures", "pauses",
          "paused_seconds")
# Totals added up from the steps measured (spawned): the step field each needs.
PER_STEP = {"cpu": "ut", "peak_memory_in_use": "rss", "max_rss": "rss"}


# --- matching steps -----------------------------------------------------------------------


def step_key(step: dict) -> str:
    """The identity of *step* across builds: cargo's unit (package, version, type, target,
    profile: every build script is crate build_script_build) or a go tool's (tool, package,
    GOOS/GOARCH, buildmode: go's $WORK is new every build), else crate and target when a step
    has them (Rust), else its first output, else its input, else its tool.

    The one place that says which steps are "the same": change it here, not in callers.
    """
    if step.get("unit"):
        return step["unit"]
    if step.get("crate"):
        return "%s [%s]" % (step["crate"], step["target"]) if step.get("target") else step["crate"]
    return (step["out"][0] if step.get("out") else None) or step.get("in") or step.get("tool") or "?"


def last_attempts(steps: list) -> dict:
    """{step_key: step}, one step per key: the last attempt (highest `retry`, then latest start),
    so an out-of-memory step re-run alone is compared by the run that counted."""
    chosen = {}
    for s in steps:
        key = step_key(s)
        if key not in chosen or _attempt(s) >= _attempt(chosen[key]):
            chosen[key] = s
    return chosen


def _attempt(step: dict) -> tuple:
    return step.get("retry") or 0, step["t0"]


# --- changes ------------------------------------------------------------------------------


def change(old, new) -> dict:
    """{old, new, delta, pct}: delta and pct are None when either side is unknown; pct is None
    when old is 0 and new is not (no finite percentage), 0.0 when both are 0."""
    known = old is not None and new is not None
    delta = new - old if known else None
    if not known or (old == 0 and new != 0):
        pct = None
    else:
        pct = 0.0 if old == new else 100.0 * delta / old
    return {"old": old, "new": new, "delta": delta, "pct": pct}


def significant(c: dict, pct: float, absolute: float) -> bool:
    """Whether change *c* exceeds both thresholds: more than *pct* percent and more than
    *absolute* (from zero, any growth beyond *absolute* is more than any percentage)."""
    if c["delta"] is None or abs(c["delta"]) <= absolute:
        return False
    return c["pct"] is None or abs(c["pct"]) > pct


def build_totals(build: Optional[dict], steps: list) -> dict:
    """The figures two builds are compared by, as `shim report` computes them (report.summary):
    wall, CPU (user + system of spawned steps), peak of memory in use, largest step peak,
    steps, failures; plus `sampled_peak`, the peak `shim build` sampled (None without one)."""
    t = report.summary(steps, build, "", "")["totals"]
    cpu = None if t["cpu_user"] is None else t["cpu_user"] + t["cpu_system"]
    sampled = build.get("peak") if build else None
    return {"wall": t["wall"], "cpu": cpu, "peak_memory_in_use": t["peak_memory_in_use"],
            "sampled_peak": sampled, "max_rss": t["max_rss"], "steps": t["steps"], "failures": t["failures"],
            "pauses": t["pauses"], "paused_seconds": t["paused_seconds"]}


def _like_with_like(c: dict, old_steps: list, new_steps: list, field: str) -> None:
    """Mark total change *c* with the steps each side did not measure (*field* None), and
    leave it unknown unless both sides measured the same steps (by step_key)."""
    sides = [([s for s in steps if s.get(field) is not None], [s for s in steps if s.get(field) is None])
             for steps in (old_steps, new_steps)]
    if not sides[0][1] and not sides[1][1]:
        return
    c["unmeasured"] = {"old": len(sides[0][1]), "new": len(sides[1][1])}
    keys = [tuple({step_key(s) for s in group} for group in side) for side in sides]
    if keys[0] != keys[1]:
        c["delta"] = c["pct"] = None


def _row(key: str, old: dict, new: dict, field: str) -> dict:
    return dict(change(old[field], new[field]), key=key, kind=new["kind"])


def changed_rows(matched: list, field: str, pct: float, absolute: float) -> list:
    """The change of *field* (`dur` or `rss`) of every step in *matched* (key, old step, new
    step) that exceeds the thresholds."""
    rows = (_row(key, old, new, field) for key, old, new in matched)
    return [r for r in rows if significant(r, pct, absolute)]


def metric(rows: list, top: int) -> dict:
    """How many of the changed *rows* regressed and improved, and the *top* of each, the
    largest change first (then by key, so equal changes list the same way every time)."""
    worse = sorted((r for r in rows if r["delta"] > 0), key=lambda r: (-r["delta"], r["key"]))
    better = sorted((r for r in rows if r["delta"] < 0), key=lambda r: (r["delta"], r["key"]))
    return {"regressed": len(worse), "improved": len(better),
            "regressions": worse[:top], "improvements": better[:top]}


def thresholds_of(given: Optional[dict]) -> dict:
    """THRESHOLDS with *given* laid over it; ValueError naming an unknown key or a bad value
    (the caller turns it into its one-line error)."""
    used = dict(THRESHOLDS)
    for key, value in (given or {}).items():
        if key not in THRESHOLDS:
            raise ValueError("unknown threshold %r (expected one of %s)" % (key, ", ".join(THRESHOLDS)))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError("threshold %s must be a number >= 0, got %r" % (key, value))
        used[key] = int(value) if key == "bytes" else value
    return used


def compare(old: tuple, new: tuple, thresholds: Optional[dict] = None, top: int = TOP) -> dict:
    """Build *new* against build *old*, each (build record or None, steps). See SCHEMA.

    *thresholds* ({pct, seconds, bytes}, missing keys from THRESHOLDS) decide which step
    changes count; totals are reported whatever their size. ValueError if *thresholds* is bad.
    """
    used = thresholds_of(thresholds)
    before, after = last_attempts(old[1]), last_attempts(new[1])
    matched = [(key, before[key], after[key]) for key in sorted(before.keys() & after.keys())]
    old_totals, new_totals = build_totals(*old), build_totals(*new)
    result = {"version": 1, "thresholds": used,
              "totals": {name: change(old_totals[name], new_totals[name]) for name in TOTALS}}
    for name, field in PER_STEP.items():
        _like_with_like(result["totals"][name], old[1], new[1], field)
    changed = set()
    for name, field, absolute in METRICS:
        rows = changed_rows(matched, field, used["pct"], used[absolute])
        result[name] = metric(rows, top)
        changed.update(r["key"] for r in rows)
    result.update(matched=len(matched), unchanged=len(matched) - len(changed),
                  new=sorted(after.keys() - before.keys()), gone=sorted(before.keys() - after.keys()))
    return result


# --- the CI gate --------------------------------------------------------------------------

def gated(comparison: dict) -> tuple:
    """What the gate watches: wall time, and the build's aggregate peak: the peak `shim build`
    sampled of the whole tree when both builds have one, else the concurrent step peaks."""
    sampled = comparison["totals"]["sampled_peak"]
    peak = ("sampled_peak", "sampled build peak") if sampled["old"] is not None and sampled["new"] is not None \
        else ("peak_memory_in_use", "concurrent step peaks")
    return (("wall", "wall", "seconds"), peak + ("bytes",))


def gate(comparison: dict, fail_over_pct: float) -> tuple:
    """(status, one-line message): 1 when wall time or the aggregate peak (gated) grew by more
    than *fail_over_pct* percent, else 0. A measure the old build lacks (no wall, a zero or
    unmeasured peak) cannot be compared: the message says so and it fails nothing, so a first
    run without a baseline passes."""
    over, within, blind = [], [], []
    for name, label, unit in gated(comparison):
        c = comparison["totals"][name]
        if c["pct"] is None:
            blind.append("%s cannot be compared (%s)" % (label, _why_blind(c, unit)))
        else:
            (over if c["pct"] > fail_over_pct else within).append(
                "%s %+.1f%% (%s -> %s)" % (label, c["pct"], fmt(c["old"], unit), fmt(c["new"], unit)))
    if over:
        return 1, "; ".join(["grew more than %g%%: %s" % (fail_over_pct, ", ".join(over))] + within + blind)
    return 0, "; ".join(["OK, within %g%%: %s" % (fail_over_pct, ", ".join(within) or "nothing to compare")]
                        + blind)


def _why_blind(c: dict, unit: str) -> str:
    if c.get("unmeasured") and c["old"] is not None and c["new"] is not None:
        return unmeasured_text(c["unmeasured"])
    if c["old"] is None or c["new"] is None:
        return "unknown in the %s build" % ("old" if c["old"] is None else "new")
    return "0 in the old build, %s now" % fmt(c["new"], unit)


# --- estimates vs reality -----------------------------------------------------------------


def estimate_misses(steps: list, min_bytes: int = THRESHOLDS["bytes"]) -> list:
    """Steps of one build where the memory budget was blind, largest excess first: a measured
    peak (`rss`) above OVER_RESERVATION times the reservation (`res`), or, for an estimate
    from a prior or the default (`src`), above the estimate (`est`). Either excess must also
    be more than *min_bytes* (one slot by default: reservations come in 16 MiB slots).

    Rows: {key, kind, rss, res, est, src, retry, oom, over, reason}; `over` is the excess in
    bytes, `reason` "reservation" or "estimate" (the larger excess when both apply).
    """
    rows = [row for row in (_miss(s, min_bytes) for s in steps) if row]
    return sorted(rows, key=lambda r: (-r["over"], r["key"]))


def _miss(step: dict, min_bytes: int) -> Optional[dict]:
    rss, res, est = step.get("rss"), step.get("res"), step.get("est")
    if rss is None:
        return None                        # exec'd: nothing measured to compare with
    excess = {}
    if res is not None and rss > res * OVER_RESERVATION and rss - res > min_bytes:
        excess["reservation"] = rss - res
    if step.get("src") in ("prior", "default") and est is not None and rss - est > min_bytes:
        excess["estimate"] = rss - est
    if not excess:
        return None
    reason = max(excess, key=lambda k: excess[k])
    return {"key": step_key(step), "kind": step.get("kind"), "rss": rss, "res": res, "est": est,
            "src": step.get("src"), "retry": step.get("retry"), "oom": step.get("oom"),
            "over": excess[reason], "reason": reason}


# --- terminal rendering -------------------------------------------------------------------


def fmt(value, unit: str) -> str:
    """*value* for people, as every report writes it (shim/reports/fields.py): seconds as
    `850ms`/`12.3s`, bytes as sizes, counts as integers; `?` when unknown."""
    if value is None or unit == "seconds":
        return fields.seconds(value)
    return fields.amount(value) if unit == "bytes" else "%d" % value


def unmeasured_text(unmeasured: dict) -> str:
    """`not alike: exec'd steps unmeasured, old 0, new 45`."""
    return "not alike: exec'd steps unmeasured, old %d, new %d" % (unmeasured["old"], unmeasured["new"])


def fmt_change(c: dict, unit: str) -> str:
    """A change for people: `+1.2s (+15.0%)`, `-64.0MiB (-12.5%)`, `?` when unknown (saying
    why when the builds measured different steps)."""
    if c["delta"] is None:
        return "? (%s)" % unmeasured_text(c["unmeasured"]) if c.get("unmeasured") else "?"
    text = ("+" if c["delta"] > 0 else "") + fmt(c["delta"], unit)
    return text + ("" if c["pct"] is None else " (%+.1f%%)" % c["pct"])


TOTAL_LABELS = (("wall", "wall", "seconds"), ("cpu", "CPU (spawned steps)", "seconds"),
                ("peak_memory_in_use", "concurrent step peaks", "bytes"),
                ("sampled_peak", "sampled build peak", "bytes"),
                ("max_rss", "largest step peak", "bytes"), ("steps", "steps", "count"),
                ("failures", "failures", "count"), ("pauses", "pauses (before kill)", "count"),
                ("paused_seconds", "time paused", "seconds"))
SECTIONS = (("duration", "regressions", "Slower", "seconds"), ("duration", "improvements", "Faster", "seconds"),
            ("memory", "regressions", "More memory", "bytes"), ("memory", "improvements", "Less memory", "bytes"))


def total_rows(comparison: dict) -> list:
    """[(label, old, new, change)] as text, for every total either build has (the sampled
    peak only when one of them ran under `shim build`, pauses only when one of them paused)."""
    rows = []
    for name, label, unit in TOTAL_LABELS:
        c = comparison["totals"][name]
        if name in ("sampled_peak", "pauses", "paused_seconds") and not c["old"] and not c["new"]:
            continue           # only when one of them ran under `shim build`, or paused a step
        rows.append((label, fmt(c["old"], unit), fmt(c["new"], unit), fmt_change(c, unit)))
    return rows


def step_rows(comparison: dict, measure: str, which: str) -> list:
    """[(key, old, new, change)] as text: the listed regressions or improvements of *measure*."""
    unit = "seconds" if measure == "duration" else "bytes"
    return [(r["key"], fmt(r["old"], unit), fmt(r["new"], unit), fmt_change(r, unit))
            for r in comparison[measure][which]]


def thresholds_note(comparison: dict) -> str:
    """One sentence: what counted as a change, and how many matched steps did not change."""
    t = comparison["thresholds"]
    return ("a step changed only by more than %g%% and more than %s (duration) or %s (peak memory); "
            "%d of %d matched steps unchanged" % (t["pct"], fmt(t["seconds"], "seconds"),
                                                  size.format(t["bytes"]), comparison["unchanged"],
                                                  comparison["matched"]))


def plural(n: int, noun: str) -> str:
    """`1 step`, `2 steps`."""
    return "%d %s%s" % (n, noun, "" if n == 1 else "s")


def names(keys: list, few: int = 3) -> str:
    """`a, b, c and 4 more` (keys as given)."""
    shown = ", ".join(keys[:few])
    return shown + (" and %d more" % (len(keys) - few) if len(keys) > few else "")


def moved(comparison: dict) -> list:
    """[(`N new steps` or `N gone steps`, keys)], only for what there is."""
    return [("%d %s step%s" % (len(keys), label, "" if len(keys) == 1 else "s"), keys)
            for label, keys in (("new", comparison["new"]), ("gone", comparison["gone"])) if keys]


def render(comparison: dict) -> list:
    """The comparison for a terminal, as lines (no newlines), in report.render's style."""
    lines = ["shim report: compared with an earlier build (old -> new)"]
    lines += ["  %-22s %-10s %-10s %s" % row for row in [("", "old", "new", "change")] + total_rows(comparison)]
    for measure, which, title, _ in SECTIONS:
        rows = step_rows(comparison, measure, which)
        if rows:
            count = comparison[measure]["regressed" if which == "regressions" else "improved"]
            lines += ["", "%s: %s%s" % (title, plural(count, "step"),
                                        ", top %d" % len(rows) if count > len(rows) else "")]
            lines += ["  %-10s %-10s %-20s %s" % (old, new, delta, key) for key, old, new, delta in
                      [("step", "old", "new", "change")] + rows]
    gained_lost = moved(comparison)
    lines += [""] if gained_lost else []
    lines += ["%s: %s" % (label, names(keys)) for label, keys in gained_lost]
    lines += ["", "note: " + thresholds_note(comparison)]
    return lines


def estimate_row_text(row: dict) -> tuple:
    """(peak, reserved, estimate (source), over, key) of an estimate_misses row, as text."""
    est = "-" if row["est"] is None else "%s (%s)" % (size.format(row["est"]), row["src"] or "?")
    key = row["key"] + (" (retry %d)" % row["retry"] if row["retry"] else "")
    return size.format(row["rss"]), size.format(row["res"]), est, "+" + size.format(row["over"]), key


def render_estimates(rows: list, top: int = TOP) -> list:
    """Estimates vs reality for a terminal, as lines: the *top* rows, or one line if none."""
    if not rows:
        return ["Estimates vs reality: " + NO_MISSES]
    lines = ["Estimates vs reality: %s peaked beyond what the budget expected%s" % (
        plural(len(rows), "step"), ", top %d" % top if len(rows) > top else "")]
    head = ("peak rss", "reserved", "estimate (source)", "over", "output")
    return lines + ["  %-9s %-9s %-18s %-9s %s" % r for r in [head] + [estimate_row_text(r) for r in rows[:top]]]


# --- the JSON schema ----------------------------------------------------------------------


def report_schema() -> dict:
    """The schema of `shim report --json` with its comparison and estimates vs reality filled in."""
    full = dict(report.SCHEMA, properties=dict(report.SCHEMA["properties"]))
    full["properties"]["comparison"] = {k: v for k, v in SCHEMA.items() if k not in ("$schema", "title")}
    full["properties"]["estimate_misses"] = {k: v for k, v in ESTIMATES_SCHEMA.items() if k not in ("$schema", "title")}
    return full


_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
CHANGE_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["old", "new", "delta", "pct"],
    "properties": {"old": _NUM, "new": _NUM, "delta": _NUM, "pct": _NUM,
                   "unmeasured": {"type": "object", "additionalProperties": False, "required": ["old", "new"],
                                  "properties": {"old": {"type": "integer", "minimum": 0},
                                                 "new": {"type": "integer", "minimum": 0}}}},
}
STEP_CHANGE_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["key", "kind", "old", "new", "delta", "pct"],
    "properties": {"key": {"type": "string"}, "kind": {"type": ["string", "null"]},
                   "old": {"type": "number"}, "new": {"type": "number"}, "delta": {"type": "number"},
                   "pct": _NUM},
}
METRIC_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["regressed", "improved", "regressions", "improvements"],
    "properties": {"regressed": {"type": "integer", "minimum": 0}, "improved": {"type": "integer", "minimum": 0},
                   "regressions": {"type": "array", "items": STEP_CHANGE_SCHEMA},
                   "improvements": {"type": "array", "items": STEP_CHANGE_SCHEMA}},
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "shim report --compare --json",
    "type": "object", "additionalProperties": False,
    "required": ["version", "thresholds", "totals", "duration", "memory", "matched", "unchanged", "new", "gone"],
    "properties": {
        "version": {"const": 1},
        "thresholds": {
            "type": "object", "additionalProperties": False, "required": ["pct", "seconds", "bytes"],
            "properties": {"pct": {"type": "number", "minimum": 0}, "seconds": {"type": "number", "minimum": 0},
                           "bytes": {"type": "integer", "minimum": 0}}},
        "totals": {"type": "object", "additionalProperties": False, "required": list(TOTALS),
                   "properties": {name: CHANGE_SCHEMA for name in TOTALS}},
        "duration": METRIC_SCHEMA, "memory": METRIC_SCHEMA,
        "matched": {"type": "integer", "minimum": 0}, "unchanged": {"type": "integer", "minimum": 0},
        "new": {"type": "array", "items": {"type": "string"}},
        "gone": {"type": "array", "items": {"type": "string"}},
    },
}
ESTIMATES_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "shim report: estimates vs reality",
    "type": "array",
    "items": {
        "type": "object", "additionalProperties": False,
        "required": ["key", "kind", "rss", "res", "est", "src", "retry", "oom", "over", "reason"],
        "properties": {"key": {"type": "string"}, "kind": {"type": ["string", "null"]},
                       "rss": {"type": "integer"}, "res": _INT, "est": _INT,
                       "src": {"enum": ["history", "build", "prior", "default", None]}, "retry": _INT,
                       "oom": {"type": ["boolean", "null"]}, "over": {"type": "integer", "minimum": 1},
                       "reason": {"enum": ["reservation", "estimate"]}},
    },
}
