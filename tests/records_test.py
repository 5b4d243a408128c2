"""Reading the ledger back (shim/reports/records.py): exec'd steps outside ninja timed by the
files they wrote."""

import os

from shim import ledger
from shim.reports import records

T0 = 1_800_000_000.0


def exec_record(n: int, t0: float, out: list) -> dict:
    return {"rec": "start", "id": "s%d" % n, "b": None, "t0": t0, "pid": 1, "tool": "rustc", "prog": "rustc",
            "kind": "compile", "mode": "exec", "cwd": ".", "in": "src/lib.rs", "out": out,
            "argv": "0123456789abcdef"}


def write(tmp_path, name: str, mtime: float) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return name


def steps(tmp_path, *recs):
    for r in recs:
        ledger.append(str(tmp_path / ".shim"), r, {})
    return {s["id"]: s for s in records.load(str(tmp_path / ".shim"), str(tmp_path), "all")[1]}


def test_an_exec_step_outside_ninja_ends_when_its_last_output_was_written(tmp_path):
    out = [write(tmp_path, "deps/libx.rlib", T0 + 3.0), write(tmp_path, "deps/libx.rmeta", T0 + 1.25),
           write(tmp_path, "deps/x.d", T0 + 0.1)]
    s = steps(tmp_path, exec_record(1, T0, out))["s1"]
    assert (s["timing"], s["t1"], s["dur"]) == ("outputs", T0 + 3.0, 3.0)
    assert s["meta"] == T0 + 1.25                   # the .rmeta: when its metadata was ready
    assert s["exit"] is None                         # a written file does not say how it ended


def test_outputs_older_than_the_step_or_missing_say_nothing_about_it(tmp_path):
    old = [write(tmp_path, "a.rlib", T0 - 60), write(tmp_path, "a.d", T0 + 1)]
    missing = [write(tmp_path, "b.rlib", T0 + 1), "b.d"]
    found = steps(tmp_path, exec_record(1, T0, old), exec_record(2, T0, missing))
    assert all((s["timing"], s["t1"], s["meta"]) == ("unknown", None, None) for s in found.values())


def test_only_the_newest_step_of_an_output_takes_its_time(tmp_path):
    out = [write(tmp_path, "c.rlib", T0 + 100.5)]
    found = steps(tmp_path, exec_record(1, T0, out), exec_record(2, T0 + 100, out))
    assert (found["s1"]["timing"], found["s2"]["timing"]) == ("unknown", "outputs")
    assert found["s2"]["dur"] == 0.5


def test_a_fifo_in_place_of_the_ledger_reads_as_empty_rather_than_waiting_for_a_writer(tmp_path, no_hang):
    (tmp_path / ".shim").mkdir()
    os.mkfifo(tmp_path / ".shim" / ledger.FILENAME)
    assert records.read_counted(str(tmp_path / ".shim")) == ([], 0)


def test_the_fast_checks_of_a_record_agree_with_fields_fits_for_every_key_and_kind_of_value():
    from shim.reports import records as r
    values = ["x", "0123456789abcdef", 0, -1, 5, 1.5, float("nan"), float("inf"), None, True, False, ["a"],
              [1], ["a", None], [], {}, "spawn", "compile", "hit", "history"]
    keys = list(r._BY_LEDGER_KEY) + list(r._LEDGER_ONLY) + ["other"]
    for kind in ("start", "step", "build", "end"):
        for key in keys:
            for value in values:
                rec = {"rec": kind, "t0": 1.0, key: value} if key != "t0" else {"rec": kind, key: value}
                slow = all(r._LEDGER_ONLY.get(k, lambda v: True)(v) if k not in r._BY_LEDGER_KEY
                           else (type(v) is list and all(type(x) is str for x in v))
                           if k == "argv" and kind == "build" else r.fields.fits(r._BY_LEDGER_KEY[k], v)
                           for k, v in rec.items() if k != "rec") and (kind == "end" or "t0" in rec)
                assert r.valid(rec) == slow, (kind, key, value)
