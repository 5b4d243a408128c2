"""The self-contained HTML report (shim/reports/html.py), parsed here and rendered by headless Chromium."""

import os
import random
import re
import subprocess
from html.parser import HTMLParser

import pytest

from shim import size
from shim.reports import html
from shim.reports import records
from shim.reports import timeline

CHROMIUM = "/usr/bin/chromium"
def needs_chromium(test):
    """An e2e test in headless Chromium; skipped without it."""
    return pytest.mark.e2e(pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                              reason="needs %s (apt-get install chromium)" % CHROMIUM)(test))
HOSTILE = """obj/</title><script>alert("x")</script>&amp;'q'.o"""


def sample_steps(seed: int = 5, n: int = 30) -> list:
    """A build as records.steps_of returns it, with failures, unknown ends and hostile paths."""
    rng = random.Random(seed)
    steps = []
    for i in range(n):
        t0 = 1_700_000_000.0 + rng.uniform(0, 6)
        dur = rng.uniform(0.01, 2)
        mode = rng.choice(["exec", "spawn"])
        unknown = i % 8 == 3
        s = dict.fromkeys(records.STEP_KEYS)
        s.update(id='b"%d<' % i, t0=t0, t1=None if unknown else t0 + dur, dur=None if unknown else dur,
                 tool="cc", prog="/usr/bin/gcc", mode=mode, out=["%s%d" % (HOSTILE, i)] if i % 5 else [],
                 kind=rng.choice(["compile", "link", "archive", "preprocess", "other"]), exit=0,
                 timing="unknown" if unknown else ("measured" if mode == "spawn" else "ninja_log"))
        if mode == "spawn":
            s.update(rss=rng.randint(1, 900) << 20, ut=dur * 0.9, st=0.05)
        steps.append(s)
    steps[2]["exit"] = 2
    steps[6].update(exit=None, sig=11)
    return steps


class Elements(HTMLParser):
    """Every element's tag and attributes, and the text of each step rect's <title>."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.found = []
        self.titles = {}
        self._rect = None
        self._in_title = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.found.append((tag, attrs))
        if tag == "rect" and "step" in attrs.get("class", "").split():
            self._rect = attrs["data-id"]
        self._in_title = tag == "title" and self._rect is not None

    def handle_endtag(self, tag):
        if tag == "rect":
            self._rect = None
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.titles[self._rect] = self.titles.get(self._rect, "") + data

    def all(self, tag: str, cls: str = None) -> list:
        return [a for t, a in self.found if t == tag and (cls is None or cls in a.get("class", "").split())]


def chromium_dump(page, tmp_path) -> tuple:
    """(DOM after the page's scripts ran, the page's console messages and errors) from Chromium."""
    profile = tmp_path / ("profile-%s" % page.stem)
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--user-data-dir=%s" % profile, "--enable-logging=stderr", "--v=0", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, errors="replace", timeout=30)
    assert run.returncode == 0, run.stderr[-2000:]
    # Chromium's own complaints (dbus, gpu…) are not the page's: keep console lines and
    # errors that name the page.
    errors = [line for line in run.stderr.splitlines()
              if ":CONSOLE" in line or "Uncaught" in line or ("ERROR:" in line and page.as_uri() in line)]
    return run.stdout, errors


def with_script(page: str, script: str) -> str:
    """*page* with *script* run after its own (as a test driving it would)."""
    return page.replace("</body>", "<script>%s</script></body>" % script)


def test_one_rect_per_step_in_its_lane_marked_failed_or_unknown():
    steps = sample_steps()
    found = Elements(html.render(steps))
    rects = {r["data-id"]: r for r in found.all("rect", "step")}
    assert sorted(rects) == sorted(s["id"] for s in steps)
    ys = [float(r["y"]) for r in rects.values()]
    by_lane = {}
    for r in rects.values():                                     # rects of a lane never overlap
        by_lane.setdefault(r["y"], []).append((float(r["x"]), float(r["x"]) + float(r["width"])))
    for spans in by_lane.values():
        spans.sort()
        assert all(a[1] <= b[0] + 1e-6 for a, b in zip(spans, spans[1:]))
    assert len(set(ys)) >= max(sum(1 for o in steps if o["t1"] and o["t0"] <= s["t0"] < o["t1"])
                               for s in steps)
    for s in steps:
        classes = rects[s["id"]]["class"].split()
        assert ("failed" in classes) is timeline.failed(s)
        assert ("unknown" in classes) is (s["t1"] is None)


def test_a_rustc_steps_metadata_point_is_a_mark_across_its_bar():
    steps = sample_steps()
    crates = [s for s in steps if s["t1"] is not None][:3]
    for s in crates:
        s.update(tool="rustc", crate="c<%s>" % s["id"], meta=s["t0"] + (s["t1"] - s["t0"]) / 2)
    found = Elements(html.render(steps))
    rects = {r["data-id"]: r for r in found.all("rect", "step")}
    marks = {m["data-id"]: m for m in found.all("line", "meta")}
    assert sorted(marks) == sorted(s["id"] for s in crates)
    for s in crates:
        bar, mark = rects[s["id"]], marks[s["id"]]
        middle = float(bar["x"]) + float(bar["width"]) / 2
        assert abs(float(mark["x1"]) - middle) < 0.02 and mark["x1"] == mark["x2"] and mark["y1"] == bar["y"]


def test_every_ledger_string_is_escaped():
    steps = sample_steps()
    page = html.render(steps, title=HOSTILE)
    assert HOSTILE not in page and "<script>alert" not in page
    found = Elements(page)
    assert len(found.all("script")) == 1                         # ours, nothing injected
    for s in steps:
        if s["out"]:
            assert s["out"][0] in found.titles[s["id"]]
    cells = [a["data-v"] for a in found.all("td")]
    assert {s["out"][0] for s in steps if s["out"]} <= set(cells)


def test_the_page_needs_nothing_from_the_network():
    page = html.render(sample_steps())
    found = Elements(page)
    assert not [a for _, a in found.found if {"src", "href"} & set(a)]
    assert not re.search(r"url\(|@import|https?:|<link|<iframe|<img", page)


def test_summary_counts_steps_wall_peak_and_failures():
    steps = sample_steps()
    page = html.render(steps)
    origin, end = timeline.bounds(steps)
    _, top = timeline.peak(timeline.memory_curve(steps))
    measured = sum(s["rss"] is not None for s in steps)
    assert 0 < measured < len(steps)
    for label, value in (("steps", len(steps)), ("wall", html.seconds(end - origin)),
                         ("concurrent step peaks", "%s (%d of %d steps measured)" % (size.format(top), measured,
                                                                                    len(steps))),
                         ("failures", sum(timeline.failed(s) for s in steps))):
        assert "<span>%s <b>%s</b></span>" % (label, value) in page
    assert ">concurrent step peaks %s at " % size.format(top) in page
    assert "sampled build peak" not in page


def test_a_build_of_exec_steps_says_memory_was_not_measured():
    steps = [dict(s, rss=None) for s in sample_steps()]
    assert "No measured memory" in html.render(steps)
    assert "No measured memory" not in html.render(sample_steps())


def test_the_sampled_build_peak_heads_the_page_and_tops_the_memory_curve():
    steps = [dict(s, rss=None) for s in sample_steps()]            # a warm build: every step exec'd
    build = {"id": "b1", "t0": steps[0]["t0"], "t1": None, "exit": 0, "peak": 600 << 20}
    page = html.render(steps, build)
    assert "<span>sampled build peak <b>600.0MiB</b></span>" in page
    assert ">sampled build peak 600.0MiB</text>" in page and "No measured memory" not in page


def test_undecodable_bytes_of_a_path_are_shown_escaped(tmp_path):
    steps = sample_steps()
    steps[1]["out"] = ["obj/caf\udce9.o"]          # how records.read hands back a Latin-1 byte
    page = tmp_path / "report.html"
    page.write_bytes(html.encode(html.render(steps)))
    assert "obj/caf\\udce9.o" in page.read_text(encoding="utf-8")


def test_unknown_exit_is_a_question_mark_and_a_signal_is_named():
    steps = sample_steps()
    unknown = dict(steps[0], exit=None, sig=None)
    rows = html.table([unknown, steps[6]]).split("<tr")[2:]        # after the header row
    exit_column = [re.findall(r"<td[^>]*>(.*?)</td>", row)[6] for row in rows]
    assert exit_column == ["?", "signal %d" % steps[6]["sig"]]


def test_no_steps_still_make_a_page():
    found = Elements(html.render([], None))
    assert found.all("rect", "step") == [] and len(found.all("table")) == 1


@needs_chromium
def test_chromium_renders_the_page_without_console_errors(tmp_path):
    steps = sample_steps()
    page = tmp_path / "report.html"
    page.write_text(html.render(steps, {"id": "b1", "t0": steps[0]["t0"] - 1, "exit": 1}))
    dom, errors = chromium_dump(page, tmp_path)
    assert errors == []
    rects = Elements(dom).all("rect", "step")
    assert sorted(r["data-id"] for r in rects) == sorted(s["id"] for s in steps)


@needs_chromium
def test_the_console_check_sees_a_page_that_breaks(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(html.render(sample_steps()).replace("table.tHead.rows", "table.tHead.rowz"))
    _, errors = chromium_dump(page, tmp_path)
    assert errors and "Uncaught" in " ".join(errors)


@needs_chromium
def test_clicking_a_header_sorts_the_table_and_again_reverses_it(tmp_path):
    steps = sample_steps()
    page = tmp_path / "sorted.html"
    page.write_text(with_script(html.render(steps), """
        var th = document.querySelectorAll('#steps th');
        function order() {
          return Array.prototype.map.call(document.querySelectorAll('#steps tbody tr'),
                                          function (r) { return r.getAttribute('data-id'); }).join('\\n');
        }
        th[3].click(); document.body.setAttribute('data-duration-up', order());
        th[3].click(); document.body.setAttribute('data-duration-down', order());
        th[0].click(); document.body.setAttribute('data-output-up', order());
    """))
    dom, errors = chromium_dump(page, tmp_path)
    assert errors == []
    body = Elements(dom).all("body")[0]
    by_start = sorted(steps, key=lambda s: s["t0"])

    def duration(s):
        return float("-inf") if s["dur"] is None else s["dur"]

    def ids(ordered):
        return "\n".join(s["id"] for s in ordered)

    # the sort is stable: ties keep the order the previous click left
    up = sorted(by_start, key=duration)
    down = sorted(up, key=duration, reverse=True)
    assert body["data-duration-up"] == ids(up)
    assert body["data-duration-down"] == ids(down)
    assert body["data-output-up"] == ids(sorted(down, key=lambda s: s["out"][0] if s["out"] else s["tool"]))


@needs_chromium
def test_chromium_renders_two_builds_one_above_the_other_on_one_time_scale(tmp_path):
    new = sample_steps(seed=7)
    old = [dict(s, id="old-" + s["id"], t0=s["t0"] - 1000, t1=None if s["t1"] is None else s["t1"] - 1000 + s["dur"],
                dur=None if s["dur"] is None else 2 * s["dur"]) for s in new]      # the earlier build: all twice as slow
    page = tmp_path / "compared.html"
    page.write_text(html.render(new, earlier=(None, old), compared=[("wall", "12.0s", "6.0s", "-6.0s (-50.0%)")]))
    dom, errors = chromium_dump(page, tmp_path)
    assert errors == []
    svgs = re.findall(r'<svg class="timeline".*?</svg>', dom, re.S)
    assert len(svgs) == 2
    rects = [{e["data-id"]: float(e["width"]) for e in Elements(svg).all("rect", "step")} for svg in svgs]
    assert set(rects[0]) == {s["id"] for s in old} and set(rects[1]) == {s["id"] for s in new}
    timed = [s for s in new if s["dur"] and s["dur"] * 1000 > 10]
    assert timed and all(abs(rects[0]["old-" + s["id"]] / rects[1][s["id"]] - 2) < 0.05 for s in timed)
    assert "<td>wall</td>" in dom and "-50.0%" in dom
