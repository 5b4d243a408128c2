"""Reading the ledger back (off the hot path): records -> steps -> builds.

A step is a dict with the fields of shim/reports/fields.py (STEP_KEYS): what every
report consumes. `timing` says where its duration came from: "measured" (spawned: shim
waited), "ninja_log" (exec: the end came from ninja's log), "outputs" (exec, no ninja:
the newest mtime of its outputs) or "unknown".

Exec steps end inside the tool, so their ledger record has only a start: t0, when
the tool started, after the step's waits for memory and a core (`wait`, `cpu_wait`).
Their duration is taken from `.ninja_log` (found in the build dir, or in ninja's
`builddir`), matched by output path, provided the entry's mtime is not older than
when ninja started the command: t0 less the waits (ninja >= 1.12 logs the command's
start there, older ones the output's mtime; NINJA_SLACK allows for a coarse file
clock), so an entry of an earlier build is never used. ninja's duration includes the
waits (shim waited inside the command); they are taken off, so no duration holds one. Outside
ninja (cargo runs rustc), the newest record of an output takes its end from the files
it wrote, when all of them were written after it started; a crate's .rmeta then also
tells when its metadata was ready (`meta`).

ccache (>= 4) appends one entry per compilation to its stats log (`# <source>`, then
the counters it bumped), which toolchains/ccache.toml puts at `<ledger dir>/
ccache-stats.log`. The entries carry no time and no output, only the source as given
on the command line, so they are paired with the ccache steps of the same source
newest with newest: entries of earlier builds, or from before the ledger, fall off
the old end.
"""

import json
import os
import stat

from shim import host, ledger
from shim.reports import fields

STEP_KEYS = fields.NAMES
NINJA_SLACK = 2.0    # seconds a .ninja_log entry's mtime may lie before the step's command started
SESSION_GAP = 30.0   # seconds between steps without a build id that start a new build
CCACHE_STATS_LOG = "ccache-stats.log"   # in the ledger dir: toolchains/ccache.toml sets CCACHE_STATSLOG
_CCACHE_HITS = frozenset(("direct_cache_hit", "preprocessed_cache_hit"))


def _count(v):
    return v is None or (type(v) is int and v >= 0)


# Keys of the ledger that are not step fields (shim/reports/fields.py): the `build` record's.
_LEDGER_ONLY = {"pid": _count, "budget": _count, "steps_budget": _count, "peak": _count, "jobs": _count,
                "runner": lambda v: v is None or type(v) is str,
                # a `usage` sample of the pause watcher (shim/driver/pauses.py)
                "used": _count, "high": _count, "low": _count, "stopped": _count}
_BY_LEDGER_KEY = {f.ledger or f.name: f for f in fields.FIELDS}
# fields.fits as lookups, for what most values are (it was 3/4 of reading a ledger): the exact
# scalar types that fit each field, its enum, and the fields that may be lists of strings.
_PLAIN = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "null": (type(None),)}
_FITS = {key: frozenset(t for name in f.types if name in _PLAIN for t in _PLAIN[name])
         for key, f in _BY_LEDGER_KEY.items()}
_ENUMS = {key: frozenset(f.enum) for key, f in _BY_LEDGER_KEY.items() if f.enum is not None}
_LISTS = frozenset(key for key, f in _BY_LEDGER_KEY.items() if "array" in f.types)


def valid(rec) -> bool:
    """Whether *rec* (parsed JSON) is a record this version can use: a known kind, and every
    known key with a value of its declared type. Anything else is skipped like an unreadable
    line, so the reports, the estimates index and `shim build` never see it."""
    if type(rec) is not dict or rec.get("rec") not in ledger.RECORD_KINDS:
        return False
    if rec["rec"] == "ledger":
        return True
    for key, value in rec.items():
        if key == "argv" and rec["rec"] == "build":
            ok = type(value) is list and all(type(x) is str for x in value)
        elif (type(value) in _FITS.get(key, ()) and value in _ENUMS.get(key, (value,))
              and (type(value) is not float or -1e18 < value < 1e18)):
            continue                                     # (NaN is no number, nor JSON's 1e309)
        elif type(value) is list and key in _LISTS:
            ok = all(type(x) is str for x in value)
        elif key in _BY_LEDGER_KEY:
            ok = fields.fits(_BY_LEDGER_KEY[key], value)
        else:
            ok = _LEDGER_ONLY.get(key, lambda v: True)(value)
        if not ok:
            return False
    return rec["rec"] == "end" or "t0" in rec


def read(ledger_dir: str, since=None) -> list:
    """Every record of the ledger in *ledger_dir*; bad lines and unknown kinds skipped. With
    *since* (mark() of an earlier moment), only the records appended after it."""
    if since:
        path = os.path.join(ledger_dir, ledger.FILENAME)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISREG(st.st_mode) and (st.st_ino, st.st_dev) == since[:2] and st.st_size >= since[2]:
                    f.seek(since[2])
                    return _parse(f.read())[0]
        except OSError:
            return []
    return read_counted(ledger_dir)[0]     # compacted since: all of it (within the bound)


def mark(ledger_dir: str):
    """Where the ledger ends now, for read(since=...): (inode, device, size), or None."""
    try:
        st = os.stat(os.path.join(ledger_dir, ledger.FILENAME))
    except OSError:
        return None
    return st.st_ino, st.st_dev, st.st_size


def read_counted(ledger_dir: str):
    """(records, lines skipped): like read(), also counting the lines it could not use."""
    path = os.path.join(ledger_dir, ledger.FILENAME)
    try:
        data = host.read_regular_file(path)     # not a FIFO (a reader would wait forever), nor a link
    except OSError:
        return [], 0
    return _parse(data)


def _parse(data: bytes):
    """(records, lines skipped) of ledger lines *data*, the first of them the version line
    when *data* begins the file."""
    records = []
    skipped = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8", "surrogatepass"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            skipped += 1                 # a torn line, or garbage: skip, never fail
            continue
        if valid(rec):
            records.append(rec)
        else:
            skipped += 1
    if records and records[0].get("rec") == "ledger" and records[0].get("version") != ledger.VERSION:
        return [], 0                     # another format under this name: start over
    return records, skipped


def ninja_log_path(build_dir: str):
    """.ninja_log of the build in *build_dir*: there, or in its `builddir` if build.ninja sets one."""
    candidates = [os.path.join(build_dir, ".ninja_log")]
    try:
        with open(os.path.join(build_dir, "build.ninja"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("builddir") and "=" in line:
                    name, _, value = line.partition("=")
                    if name.strip() == "builddir" and "$" not in value:
                        candidates.append(os.path.join(build_dir, value.strip(), ".ninja_log"))
                    break
    except OSError:
        pass
    for path in reversed(candidates):
        if os.path.exists(path):
            return path
    return None


def read_ninja_log(build_dir: str) -> dict:
    """{output: (start_ms, end_ms, mtime_ns)} from .ninja_log v5+ (the last entry wins)."""
    path = ninja_log_path(build_dir)
    entries = {}
    if not path:
        return entries
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 4:
                continue
            try:
                entries[fields[3]] = (int(fields[0]), int(fields[1]), int(fields[2]))
            except ValueError:
                continue
    return entries


def steps_of(records: list, build_dir: str, ledger_dir: str = None) -> list:
    """Normalised steps from *records*, exec steps timed from .ninja_log where possible,
    ccache steps marked from the stats log in *ledger_dir* (if given)."""
    ends = {r["id"]: r for r in records if r.get("rec") == "end" and "id" in r}
    paused = pauses_of(records)
    log = None
    steps = []
    unlogged = []
    for r in records:
        if r.get("rec") not in ("start", "step") or not isinstance(r.get("t0"), (int, float)):
            continue
        s = {f.name: r.get(f.ledger or f.name) for f in fields.FIELDS}
        s["out"] = list(r.get("out") or [])
        s["learned"] = s["est"] if s["src"] == "history" and s["rss"] is None else None
        s["pauses"], s["paused"] = paused.get(s["id"], (None, None))
        if r["rec"] == "step":
            s["timing"] = "measured"
            if s["dur"] is None and s["t1"] is not None:
                s["dur"] = s["t1"] - s["t0"]
        else:
            s["timing"] = "unknown"
            end = ends.get(r.get("id"))
            if end is not None:
                s["exit"] = end.get("exit")
            elif s["out"]:
                if log is None:
                    log = read_ninja_log(build_dir)
                entry = log.get(s["out"][0])
                waited = (s["wait"] or 0) + (s["cpu_wait"] or 0)
                if entry and entry[2] >= (s["t0"] - waited - NINJA_SLACK) * 1e9:
                    s["dur"] = max(0, entry[1] - entry[0] - waited * 1000) / 1000.0
                    s["t1"] = s["t0"] + s["dur"]
                    s["exit"] = 0              # ninja logs only commands that succeeded
                    s["timing"] = "ninja_log"
                else:
                    unlogged.append(s)
        steps.append(s)
    steps.sort(key=lambda s: s["t0"])
    _time_by_outputs(unlogged, build_dir)
    if ledger_dir:
        mark_cache(steps, read_ccache_stats(os.path.join(ledger_dir, CCACHE_STATS_LOG)), build_dir)
    return steps


def pauses_of(records: list) -> dict:
    """{step id: (times paused, seconds paused)} from the watcher's `pause` records."""
    found = {}
    for r in records:
        if r.get("rec") == "pause" and type(r.get("id")) is str:
            count, seconds = found.get(r["id"], (0, 0.0))
            found[r["id"]] = (count + 1, round(seconds + (r.get("dur") or 0), 6))
    return found


def usage_of(ledger_dir: str, steps: list, build=None) -> list:
    """The pause watcher's `usage` samples (memory in use, marks) taken while *steps* ran,
    oldest first: those of *build* (a record) when given, else of the steps' time span."""
    if not steps:
        return []
    begin = min(s["t0"] - (s["wait"] or 0) for s in steps) - 1.0
    end = max((s["t1"] or s["t0"]) for s in steps) + 1.0
    found = []
    for r in read(ledger_dir):
        if r.get("rec") != "usage" or not isinstance(r.get("used"), int) or not isinstance(r.get("high"), int):
            continue
        if (r.get("b") == build["id"]) if build and build.get("id") else begin <= r["t0"] <= end:
            found.append(r)
    return sorted(found, key=lambda r: r["t0"])


MTIME_SLACK = 0.02   # seconds: file times come from a coarser clock than time.time()


def _time_by_outputs(steps: list, build_dir: str) -> None:
    """Exec'd steps without a ninja log entry end when their last output was written: for
    the newest step of each output (an older one's files have been rewritten since), if
    every output exists and was written after the step started."""
    newest = {}
    for s in steps:
        if s["t0"] >= newest.get(s["out"][0], s)["t0"]:
            newest[s["out"][0]] = s
    for s in newest.values():
        times = {}
        for out in s["out"]:
            try:
                times[out] = os.stat(os.path.join(build_dir, out)).st_mtime
            except OSError:
                break
        if len(times) < len(s["out"]) or min(times.values()) < s["t0"] - MTIME_SLACK:
            continue
        s["t1"] = max(s["t0"], max(times.values()))
        s["dur"] = s["t1"] - s["t0"]
        s["timing"] = "outputs"
        rmeta = [t for out, t in times.items() if out.endswith(".rmeta")]
        if s["meta"] is None and rmeta:
            s["meta"] = max(s["t0"], rmeta[0])


def read_ccache_stats(path: str) -> list:
    """[(source as ccache was given it, result: hit, miss or uncached)] in file order."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return []
            data = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return []
    entries = []
    for line in data.split("\n"):
        if line.startswith("# "):
            entries.append([line[2:], set()])
        elif line and entries:
            entries[-1][1].add(line.strip())
    return [(src, "hit" if ids & _CCACHE_HITS else "miss" if "cache_miss" in ids else "uncached")
            for src, ids in entries if src]


def mark_cache(steps: list, entries: list, build_dir: str) -> None:
    """Set `cache` on ccache steps from stats-log *entries*, paired per source file from
    the newest backwards (a step without an entry keeps None)."""
    ccache = [s for s in steps if s["launcher"] == "ccache" and s["in"]]
    if not ccache or not entries:
        return
    by_source = {}
    for s in ccache:                   # steps are in start order
        by_source.setdefault(os.path.normpath(os.path.join(build_dir, s["in"])), []).append(s)
    cwds = sorted({s["cwd"] or "." for s in ccache})
    logged = {}
    for src, result in entries:        # a relative source is relative to the step's cwd
        for cwd in cwds:
            key = os.path.normpath(os.path.join(build_dir, cwd, src))
            if key in by_source:
                logged.setdefault(key, []).append(result)
                break
    for key, results in logged.items():
        for s, result in zip(reversed(by_source[key]), reversed(results)):
            s["cache"] = result


def builds_of(records: list, steps: list) -> list:
    """[(build record or None, [steps])], oldest first: steps grouped by SHIM_BUILD_ID,
    or, without one (plain ninja), by gaps of more than SESSION_GAP seconds."""
    by_id = {}
    build_records = {r["id"]: r for r in records if r.get("rec") == "build" and "id" in r}
    groups = []
    loose = []
    for s in steps:
        if s["build"]:
            if s["build"] not in by_id:
                by_id[s["build"]] = []
                groups.append((build_records.get(s["build"]), by_id[s["build"]]))
            by_id[s["build"]].append(s)
        else:
            end = max((x["t1"] or x["t0"]) for x in loose) if loose else None
            if loose and s["t0"] - end > SESSION_GAP:
                groups.append((None, loose))
                loose = []
            loose.append(s)
    if loose:
        groups.append((None, loose))
    for build_id, rec in build_records.items():
        if build_id not in by_id:
            groups.append((rec, []))           # a build that ran no step (nothing to do)
    groups.sort(key=lambda g: g[1][0]["t0"] if g[1] else g[0]["t0"])
    return groups


def load_builds(ledger_dir: str, build_dir: str = None, last: int = 0):
    """([(build record or None, steps)] oldest first, only builds that ran steps; lines skipped).
    With *last*, only the last *last* builds, read from the end of the file (tail())."""
    build_dir = build_dir or ledger.build_dir(ledger_dir)
    if last:
        return tail(ledger_dir, build_dir, last)
    records, skipped = read_counted(ledger_dir)
    steps = steps_of(records, build_dir, ledger_dir)
    return [g for g in builds_of(records, steps) if g[1]], skipped


TAIL = 1 << 20     # bytes: the first tail() reads; each further one four times as much


def tail(ledger_dir: str, build_dir: str, count: int = 1):
    """([(build record or None, steps)] of the last *count* builds that ran steps, lines skipped
    in what was read): the end of the ledger, read back until it reaches before their start.

    Records are appended when they happen (a start at its t0, a step or build record at its
    t1), so every record before the part read was appended before the first one in it: if that
    one was appended over a second before the first of the builds started (SESSION_GAP more for
    builds without an id, which are told apart by that gap), nothing before it belongs to them.
    Two builds run at once into one ledger can defeat this (an exec'd step of one, started
    before a record of the other): the report then misses that step."""
    path = os.path.join(ledger_dir, ledger.FILENAME)
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return [], 0
            size = os.fstat(f.fileno()).st_size
            head = f.readline()
            versioned, _ = _parse(head)
            if head.startswith(b'{"rec": "ledger"') and not versioned:
                return [], 0             # another format under this name: start over
            start = len(head) if versioned else 0
            records, skipped, hi, want = [], 0, size, TAIL
            while True:                  # each round parses only what it adds at the front
                lo = max(start, size - want)
                f.seek(lo)
                data = f.read(hi - lo)
                cut = 0 if lo == start else data.find(b"\n") + 1
                more, bad = _parse(data[cut:])
                records, skipped, hi = more + records, skipped + bad, lo + cut
                steps = steps_of(records, build_dir, ledger_dir)
                groups = [g for g in builds_of(records, steps) if g[1]][-count:]
                if lo == start or (groups and _reaches_back(records, groups[0])):
                    return groups, skipped
                want *= 2
    except OSError:
        return [], 0


def _reaches_back(records: list, group) -> bool:
    """Whether *records* (a tail of the ledger) begin early enough to hold all of *group*."""
    first = next((r for r in records if isinstance(r.get("t0"), (int, float))), None)
    if first is None:
        return False
    appended = max(first["t0"], first.get("t1") if isinstance(first.get("t1"), (int, float)) else 0)
    build, steps = group
    begin = min([steps[0]["t0"]] + ([build["t0"]] if build else []))
    return appended < begin - (1.0 if steps[0]["build"] else 1.0 + SESSION_GAP)


def load(ledger_dir: str, build_dir: str = None, which: str = "last"):
    """(build record or None, steps) of the last build, or of every build with which="all"."""
    build, steps, _skipped = load_counted(ledger_dir, build_dir, which)
    return build, steps


def load_counted(ledger_dir: str, build_dir: str = None, which: str = "last"):
    """(build record or None, steps, ledger lines skipped): load(), and what it could not read."""
    build_dir = build_dir or ledger.build_dir(ledger_dir)
    if which != "all":
        with_steps, skipped = tail(ledger_dir, build_dir, 1)
        return with_steps[-1] + (skipped,) if with_steps else (None, [], skipped)
    records, skipped = read_counted(ledger_dir)
    steps = steps_of(records, build_dir, ledger_dir)
    return None, steps, skipped
