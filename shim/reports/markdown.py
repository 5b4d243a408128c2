"""A build as GitHub-flavoured Markdown, short enough for `$GITHUB_STEP_SUMMARY`.

Pure: report.summary's dict, and optionally compare.compare's dict and compare.estimate_misses'
rows, in; a string out. Tables hold at most MAX_ROWS rows. Every string from the ledger is
escaped, so a path can neither break a table (`|`), start a code span or emphasis, nor smuggle
in HTML: the page is made of Markdown alone, no raw HTML.
"""

from shim.reports import compare, fields, report

MAX_ROWS = 10
TOP = 5                     # steps listed per "top" table of a single build
# Characters that can start inline markup on GitHub: code, emphasis, links and images,
# HTML and entities, strikethrough, table cells, math, @mentions. A backslash before
# ASCII punctuation is always a literal in CommonMark.
SPECIAL = frozenset("\\`*_[]<>|~&$@!")


def escape(text) -> str:
    """*text* as literal Markdown inline content: specials backslash-escaped, line breaks
    and tabs as spaces (a newline would end a table row), other control characters as
    `\\xNN` (fields.printable: an ESC would reach the terminal of whoever cats the file)."""
    text = "" if text is None else str(text)
    text = fields.printable(text.replace("\r", " ").replace("\n", " ").replace("\t", " "))
    return "".join("\\" + c if c in SPECIAL else c for c in text)


def table(head: tuple, rows: list, numeric: tuple = ()) -> list:
    """A GFM table of *rows* (tuples of already-escaped cells) under *head*, as lines;
    columns whose index is in *numeric* are right-aligned. At most MAX_ROWS rows."""
    align = ["---:" if i in numeric else "---" for i in range(len(head))]
    return ["| %s |" % " | ".join(cells) for cells in [head, align] + list(rows[:MAX_ROWS])]


def _seconds(value) -> str:
    return compare.fmt(value, "seconds")


def failure_lines(failures: list) -> list:
    """Lines: the failed steps, at most MAX_ROWS of them, or `No failures.`"""
    if not failures:
        return ["No failures."]
    items = ["- %s (exit %s)" % (escape(compare.step_key(s)), fields.exit_text(s)) for s in failures[:MAX_ROWS]]
    more = ["- … and %d more" % (len(failures) - MAX_ROWS)] if len(failures) > MAX_ROWS else []
    return ["**%d failed:**" % len(failures), ""] + items + more


def _step_rows(steps: list) -> list:
    return [(escape(compare.step_key(s)), escape(s["kind"]), escape(fields.peak_text(s)), _seconds(s["dur"]))
            for s in steps[:TOP]]


def _partial(text: str, count: int, steps: int) -> str:
    """*text*, saying how many steps it covers when not all."""
    return text if count == steps or text == "?" else "%s (%d of %d steps)" % (text, count, steps)


def build_summary(data: dict) -> list:
    """Lines: heading, totals (the sampled build peak first among the memory figures; the
    per-step ones say how many steps they cover), failures, the top TOP steps by peak memory
    (learned peaks of exec'd steps marked) and by duration of one build (*data* as
    report.summary returns it)."""
    t, b = data["totals"], data["build"]
    title = "build %s" % escape(b["id"]) if b else "steps without a `shim build`"
    cpu = None if t["cpu_user"] is None else t["cpu_user"] + t["cpu_system"]
    lines = ["### shim: %s" % title, ""]
    lines += table(("steps", "wall", "CPU", "sampled build peak", "concurrent step peaks", "largest step peak",
                    "failures"),
                   [("%d" % t["steps"], _seconds(t["wall"]), _partial(_seconds(cpu), t["cpu_steps"], t["steps"]),
                     fields.amount(t["sampled_peak"]) if t["sampled_peak"] is not None else "not sampled",
                     _partial(fields.amount(t["peak_memory_in_use"]), t["rss_steps"], t["steps"]),
                     escape(report.largest_text(t)), "%d" % t["failures"])], numeric=(0, 1, 2, 3, 4, 5, 6))
    watched = report.in_use_lines(data)
    if watched:
        lines += [""] + ["- %s" % escape(line) for line in watched]
    lines += [""] + failure_lines(data["failures"])
    head = ("step", "kind", "peak RSS", "duration")
    for title, steps in (("peak memory", data["top_memory"]), ("duration", data["top_duration"])):
        if steps:
            lines += ["", "**Top %d by %s**" % (min(TOP, len(steps)), title), ""]
            lines += table(head, _step_rows(steps), numeric=(2, 3))
            if any(s["rss"] is None and s.get("learned") is not None for s in steps[:TOP]):
                lines += ["", "_%s._" % escape(fields.LEARNED_NOTE)]
    return lines


def comparison(cmp: dict) -> list:
    """Lines: the comparison of compare.compare (*cmp*): totals old -> new, the steps that
    changed most, new and gone steps, and what counted as a change."""
    lines = ["### Compared with the earlier build", ""]
    lines += table(("measure", "old", "new", "change"), compare.total_rows(cmp), numeric=(1, 2, 3))
    for measure, which, title, _unit in compare.SECTIONS:
        rows = compare.step_rows(cmp, measure, which)
        if rows:
            count = cmp[measure]["regressed" if which == "regressions" else "improved"]
            shown = min(len(rows), MAX_ROWS)
            lines += ["", "**%s** (%s%s)" % (title, compare.plural(count, "step"),
                                             ", top %d" % shown if count > shown else ""), ""]
            lines += table(("step", "old", "new", "change"),
                           [(escape(key), old, new, delta) for key, old, new, delta in rows], numeric=(1, 2, 3))
    for label, keys in compare.moved(cmp):
        lines += ["", "%s: %s" % (label, compare.names([escape(k) for k in keys]))]
    return lines + ["", "_%s._" % escape(compare.thresholds_note(cmp))]


def estimates(rows: list) -> list:
    """Lines: steps whose measured peak the memory budget did not expect (compare.estimate_misses)."""
    lines = ["### Estimates vs reality", ""]
    if not rows:
        return lines + [compare.NO_MISSES.capitalize() + "."]
    lines += ["%s peaked beyond what the budget expected%s." % (
        compare.plural(len(rows), "step").capitalize(), ", top %d" % MAX_ROWS if len(rows) > MAX_ROWS else ""), ""]
    cells = [compare.estimate_row_text(r) for r in rows]
    return lines + table(("step", "peak RSS", "reserved", "estimate (source)", "over"),
                         [(escape(key), rss, res, escape(est), over) for rss, res, est, over, key in cells],
                         numeric=(1, 2, 4))


def document(data: dict, cmp: dict = None, misses: list = None) -> str:
    """The whole page: build_summary of *data*, then the comparison and the estimates vs
    reality when given (None leaves a section out; an empty *misses* says all was well)."""
    lines = build_summary(data)
    if cmp is not None:
        lines += [""] + comparison(cmp)
    if misses is not None:
        lines += [""] + estimates(misses)
    return "\n".join(lines) + "\n"
