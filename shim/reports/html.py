"""A build as one self-contained HTML page: timeline, memory curve, sortable table of steps.

Everything is inline (SVG, CSS, a few lines of vanilla JS): the page opens offline, from a
file or a CI artifact. Every string from the ledger is escaped. Cold path.
"""

import math
from html import escape   # the standard library's: absolute imports never find this module
from typing import Optional

from shim import size
from shim.reports import fields, timeline

KINDS = {"compile": "#4e79a7", "link": "#f28e2b", "archive": "#59a14f", "preprocess": "#b07aa1",
         "other": "#9c9c9c"}
WIDTH = 1000          # SVG user units; the page scales the drawings to its width
LEFT, RIGHT = 4, 8    # margins inside the SVGs
ROW, GAP = 14, 2      # lane height and the space between lanes
AXIS = 22             # room under the lanes for tick labels
UNKNOWN_WIDTH = 5     # how wide a step of unknown end is drawn: visible, but clearly no bar
MEMORY_HEIGHT = 120

CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 6px}h2{font-size:15px;margin:14px 0 2px}
.summary span{margin-right:18px}.summary b{font-weight:600}
svg{width:100%;height:auto;display:block;margin:6px 0 14px}
.step{stroke:#fff;stroke-width:.5}
.failed{stroke:#d62728;stroke-width:2}
.meta{stroke:#fff;stroke-width:1.5}
.unknown{fill:#fff;stroke:#444;stroke-dasharray:2 1}
.axis line{stroke:#bbb}.axis text,.peak text{font-size:10px;fill:#555}
.memory{fill:#cfe1f2;stroke:#4e79a7}.peak circle{fill:#d62728}
.sampled line{stroke:#d62728;stroke-dasharray:4 3}.sampled text{font-size:10px;fill:#d62728}
.in-use{fill:none;stroke:#222;stroke-width:1.2}.marks rect{fill:#f28e2b;opacity:.15}
.marks line{stroke:#f28e2b;stroke-dasharray:4 3}.marks text,.budget text{font-size:10px;fill:#b35900}
.budget line{stroke:#59a14f}.budget text{fill:#3b7a36}.paused{fill:#d62728;opacity:.18}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
table{border-collapse:collapse;width:100%}
th,td{padding:2px 8px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
th{cursor:pointer;user-select:none;background:#f4f4f4}
th[aria-sort=ascending]::after{content:" \\25b2"}th[aria-sort=descending]::after{content:" \\25bc"}
td.num,th.num{text-align:right}
tr.failed td{background:#fde8e8}
"""

# Sorts the table by the clicked column (data-v holds each cell's sort key); clicking
# the same header again reverses the order.
SCRIPT = """
(function () {
  'use strict';
  var table = document.getElementById('steps');
  var heads = table.tHead.rows[0].cells;
  function key(cell, numeric) {
    var v = cell.getAttribute('data-v');
    return numeric ? (v === '' ? -Infinity : parseFloat(v)) : v;
  }
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener('click', function () {
      var up = th.getAttribute('aria-sort') !== 'ascending';
      var numeric = th.classList.contains('num');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
})();
"""


def _e(value) -> str:
    """*value* as text safe in an element or a double-quoted attribute."""
    return escape("" if value is None else str(value), quote=True)


seconds = fields.seconds


def _tick_step(span: float) -> float:
    """A round interval (1, 2 or 5 times a power of ten) giving at most about eight ticks."""
    raw = span / 8 if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(f * power for f in (1, 2, 5, 10) if f * power >= raw)


def _axis(span: float, scale: float, y: float) -> str:
    step = _tick_step(span)
    parts = ['<g class="axis">']
    n = 0
    while n * step <= span + 1e-9:
        x = LEFT + n * step * scale
        parts.append('<line x1="%.1f" y1="0" x2="%.1f" y2="%.1f"/><text x="%.1f" y="%.1f">%s</text>'
                     % (x, x, y, x + 2, y + 12, "%gs" % round(n * step, 9)))
        n += 1
    parts.append("</g>")
    return "".join(parts)


def _tooltip(step: dict) -> str:
    lines = [", ".join(step.get("out") or []) or str(step.get("tool")),
             "%s %s, %s (%s)" % (step.get("kind"), step.get("mode"), seconds(step.get("dur")),
                                 step.get("timing")),
             "tool %s: %s" % (step.get("tool"), step.get("prog")),
             "peak RSS %s, exit %s" % (fields.amount(step.get("rss")), fields.exit_text(step))]
    return "\n".join(lines)


def timeline_svg(steps: list[dict], origin: float, span: float) -> str:
    """The steps as an inline SVG: one `rect.step[data-id]` per step, in its lane, with a tooltip."""
    scale = (WIDTH - LEFT - RIGHT) / span if span > 0 else 0.0
    slots = timeline.lanes(steps, min_duration=UNKNOWN_WIDTH / scale if scale else 0.0)
    height = (max(slots, default=0) + 1) * (ROW + GAP)
    parts = ['<svg class="timeline" viewBox="0 0 %d %d" role="img" aria-label="timeline">'
             % (WIDTH, height + AXIS), _axis(span, scale, height)]
    for step, lane in zip(steps, slots):
        classes = ["step", "k-" + (step.get("kind") or "other")]
        if step.get("t1") is None:
            classes.append("unknown")
            width = UNKNOWN_WIDTH
        else:
            width = max(1.0, (timeline.end(step) - step["t0"]) * scale)
        if timeline.failed(step):
            classes.append("failed")
        parts.append('<rect class="%s" data-id="%s" x="%.2f" y="%d" width="%.2f" height="%d"'
                     ' fill="%s"><title>%s</title></rect>'
                     % (_e(" ".join(classes)), _e(step.get("id")), LEFT + (step["t0"] - origin) * scale,
                        lane * (ROW + GAP), width, ROW, KINDS.get(step.get("kind"), KINDS["other"]),
                        _e(_tooltip(step))))
        if step.get("meta") is not None:         # rustc: its crate's metadata ready (dependents start)
            x = LEFT + (step["meta"] - origin) * scale
            parts.append('<line class="meta" data-id="%s" x1="%.2f" y1="%d" x2="%.2f" y2="%d">'
                         '<title>metadata of %s ready</title></line>'
                         % (_e(step.get("id")), x, lane * (ROW + GAP), x, lane * (ROW + GAP) + ROW,
                            _e(step.get("crate"))))
    parts.append("</svg>")
    return "".join(parts)


def memory_svg(steps: list[dict], origin: float, span: float, sampled: Optional[int] = None,
               usage=(), budget: Optional[int] = None) -> str:
    """The memory curve as an inline SVG path (a step function: the measured steps' peaks
    added up) with its peak labelled, under a dashed line at the *sampled* build peak
    (`shim build` sampled ninja and everything under it) when there is one; with the pause
    watcher's *usage* samples, the memory really in use as a line, the band between its low
    and high-water marks, and the times steps were paused shaded; the *budget* as a line."""
    curve = timeline.memory_curve(steps)
    t_peak, top = timeline.peak(curve)
    usage = list(usage or ())
    if not top and not sampled and not usage:
        return '<p class="nomemory">No measured memory: exec-mode steps have no peak RSS.</p>'
    scale = (WIDTH - LEFT - RIGHT) / span if span > 0 else 0.0
    base = MEMORY_HEIGHT - AXIS
    watched = [u["used"] for u in usage] + [u["high"] for u in usage[-1:]] + ([budget] if budget and usage else [])
    y_scale = (base - 14) / max([top, sampled or 0] + watched)      # room above the peak for its label

    def x(t: float) -> float:
        return LEFT + (t - origin) * scale

    parts = []
    if top:
        path = ["M%.2f %.2f" % (LEFT, base)]
        for t, level in curve:
            path.append("H%.2f V%.2f" % (x(t), base - level * y_scale))
        path.append("H%.2f V%.2f Z" % (x(origin + span), base))
        px, py = x(t_peak), base - top * y_scale
        anchor = "end" if px > WIDTH / 2 else "start"
        parts.append('<path class="memory" d="%s"/><g class="peak"><circle cx="%.2f" cy="%.2f" r="3"/>'
                     '<text x="%.2f" y="%.2f" text-anchor="%s">concurrent step peaks %s at %s</text></g>'
                     % (" ".join(path), px, py, px + (-5 if anchor == "end" else 5), py + 4, anchor,
                        size.format(top), seconds(t_peak - origin)))
    if sampled:
        y = base - sampled * y_scale
        parts.append('<g class="sampled"><line x1="%d" y1="%.2f" x2="%d" y2="%.2f"/>'
                     '<text x="%d" y="%.2f" text-anchor="end">sampled build peak %s</text></g>'
                     % (LEFT, y, WIDTH - RIGHT, y, WIDTH - RIGHT, y - 3, size.format(sampled)))
    if usage:
        parts.append(_watched(usage, x, base, y_scale, budget))
    return ('<svg class="memory-curve" viewBox="0 0 %d %d" role="img" aria-label="memory in use">%s%s</svg>'
            % (WIDTH, MEMORY_HEIGHT, _axis(span, scale, base), "".join(parts)))


def _watched(usage: list, x, base: float, y_scale: float, budget: Optional[int]) -> str:
    """The pause watcher's part of the memory chart: paused spans, marks, budget, in-use line."""
    parts = []
    for u, after in zip(usage, usage[1:]):
        if u.get("stopped"):
            parts.append('<rect class="paused" x="%.2f" y="0" width="%.2f" height="%.2f"><title>%d step%s paused'
                         '</title></rect>' % (x(u["t0"]), max(1.0, x(after["t0"]) - x(u["t0"])), base,
                                              u["stopped"], "" if u["stopped"] == 1 else "s"))
    high, low = usage[-1]["high"], usage[-1]["low"]
    parts.append('<g class="marks"><rect x="%d" y="%.2f" width="%d" height="%.2f"/><line x1="%d" y1="%.2f" '
                 'x2="%d" y2="%.2f"/><text x="%d" y="%.2f">high-water mark %s (pause above, resume below %s)'
                 '</text></g>' % (LEFT, base - high * y_scale, WIDTH - LEFT - RIGHT, (high - low) * y_scale,
                                  LEFT, base - high * y_scale, WIDTH - RIGHT, base - high * y_scale, LEFT + 2,
                                  base - high * y_scale - 3, size.format(high), size.format(low)))
    if budget:
        y = base - budget * y_scale
        parts.append('<g class="budget"><line x1="%d" y1="%.2f" x2="%d" y2="%.2f"/><text x="%d" y="%.2f" '
                     'text-anchor="middle">budget %s</text></g>'
                     % (LEFT, y, WIDTH - RIGHT, y, WIDTH // 2, y - 3, size.format(budget)))
    points = " ".join("%.2f,%.2f" % (x(u["t0"]), base - u["used"] * y_scale) for u in usage)
    parts.append('<polyline class="in-use" points="%s"><title>memory really in use (peak %s)</title></polyline>'
                 % (points, size.format(max(u["used"] for u in usage))))
    return "".join(parts)


def table(steps: list[dict]) -> str:
    """The steps as a table whose headers sort it (each cell's data-v is its sort key);
    the columns are fields.HTML."""
    columns = [fields.COLUMNS[name] for name in fields.HTML]

    def cell(c, s):
        key = c.key(s)
        return '<td%s data-v="%s">%s</td>' % (' class="num"' if c.numeric else "", _e(key), _e(c.text(s)))

    rows = ['<tr data-id="%s"%s>%s</tr>' % (_e(s.get("id")), ' class="failed"' if timeline.failed(s) else "",
                                            "".join(cell(c, s) for c in columns)) for s in steps]
    return ('<table id="steps"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>'
            % ("".join('<th%s>%s</th>' % (' class="num"' if c.numeric else "", c.header) for c in columns),
               "".join(rows)))


def summary(steps: list[dict], build: Optional[dict], span: float) -> str:
    """The header line: steps, wall time, peak memory, failures (and the build's id and exit)."""
    _, top = timeline.peak(timeline.memory_curve(steps))
    measured = sum(s.get("rss") is not None for s in steps)
    items = [("steps", str(len(steps))), ("wall", seconds(span))]
    if build and build.get("peak") is not None:
        items.append(("sampled build peak", size.format(build["peak"])))
    items += [("concurrent step peaks", (size.format(top) + ("" if measured == len(steps) else
                                                             " (%d of %d steps measured)" % (measured, len(steps))))
               if top else "not measured"),
             ("failures", str(sum(timeline.failed(s) for s in steps)))]
    unknown = sum(s.get("t1") is None for s in steps)
    if unknown:
        items.append(("unknown end", str(unknown)))
    if build:
        items.append(("build", "%s, exit %s" % (build.get("id"), build.get("exit"))))
    legend = "".join('<span><i style="background:%s"></i>%s</span>' % (colour, kind)
                     for kind, colour in KINDS.items())
    return ('<p class="summary">%s</p><p class="legend">%s<span><i style="border:1px'
            ' dashed #444"></i>unknown end</span><span><i style="border:2px solid #d62728"></i>failed'
            '</span></p>' % ("".join('<span>%s <b>%s</b></span>' % (_e(k), _e(v)) for k, v in items),
                             legend))


def render(steps: list[dict], build: Optional[dict] = None, title: str = "shim report",
           earlier: Optional[tuple] = None, compared: tuple = (), usage=()) -> str:
    """The whole page for *steps* and the optional *build* record; the table in start order.

    With *earlier*, (build record, steps) of a build to compare with: its timeline and memory
    curve come first, then this build's, both drawn on one time scale (the longer build's),
    after the *compared* rows (label, old, new, change) of compare.total_rows."""
    steps = sorted(steps, key=lambda s: s["t0"])
    origin, finish = timeline.bounds(steps, build)
    span = shared = finish - origin
    before = ""
    if earlier is not None:
        old_build, old_steps = earlier[0], sorted(earlier[1], key=lambda s: s["t0"])
        old_origin, old_finish = timeline.bounds(old_steps, old_build)
        shared = max(span, old_finish - old_origin)
        before = ('<h2>Compared with the earlier build</h2>%s<h2>Earlier build</h2>%s<h3>Timeline</h3>%s'
                  '<h3>Memory in use</h3>%s<h2>This build</h2>'
                  % (comparison_table(compared), summary(old_steps, old_build, old_finish - old_origin),
                     timeline_svg(old_steps, old_origin, shared),
                     memory_svg(old_steps, old_origin, shared, _sampled(old_build))))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>%s</title>'
            '<style>%s</style></head><body><h1>%s</h1>%s%s<h2>Timeline</h2>%s<h2>Memory in use</h2>%s'
            '<h2>Steps</h2>%s<script>%s</script></body></html>\n'
            % (_e(title), CSS, _e(title), before, summary(steps, build, span),
               timeline_svg(steps, origin, shared),
               memory_svg(steps, origin, shared, _sampled(build), usage, build.get("budget") if build else None),
               table(steps), SCRIPT))


def _sampled(build: Optional[dict]) -> Optional[int]:
    return build.get("peak") if build else None


def comparison_table(rows) -> str:
    """The totals of two builds, old -> new (rows of text as compare.total_rows gives them)."""
    return ('<table class="compared"><thead><tr><th></th><th class="num">old</th><th class="num">new</th>'
            '<th class="num">change</th></tr></thead><tbody>%s</tbody></table>'
            % "".join('<tr><td>%s</td>%s</tr>' % (_e(label), "".join('<td class="num">%s</td>' % _e(v)
                                                                     for v in values))
                      for label, *values in rows))


def encode(page: str) -> bytes:
    """*page* as the bytes of the file: UTF-8, an undecodable byte of a path shown as \\udcXX."""
    return page.encode("utf-8", "backslashreplace")
