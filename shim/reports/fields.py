"""The step record, declared once: every field a step carries from the ledger into the reports.

FIELDS is the one list. From it come the keys of a step (records.STEP_KEYS), the check of
the values read back from the ledger (records), the JSON schema of `shim report --json`
(step_schema, with additionalProperties false, so a field added here and nowhere else
fails the schema test rather than drifting), the arguments of a trace slice (TRACE_ARGS),
and the columns of the terminal and HTML tables (COLUMNS, with one formatting of unknown
values, exit statuses and signals everywhere).

The hot path writes records by key (shim/step.py, shim/ledger.py) and never imports this
module; tests/layout_test.py checks that every key a real build writes is declared here.
"""

from typing import Callable, NamedTuple, Optional, Tuple

from shim import size
from shim.args import KINDS


class Field(NamedTuple):
    name: str                        # key in a step dict (and in the ledger, unless `ledger` says)
    types: Tuple[str, ...]           # JSON types: "string", "number", "integer", "boolean", "array", "null"
    meaning: str
    required: bool = True            # always present in a step (possibly null)
    enum: Optional[tuple] = None     # the only values allowed (None among them if nullable)
    trace: bool = False              # shown in a trace slice's args
    ledger: str = ""                 # the key in the ledger when it differs ("b" for build)
    extra: Optional[dict] = None     # more JSON-schema keywords (minimum, pattern...)


FIELDS = (
    Field("id", ("string",), "record id: start time, pid and random bits"),
    Field("build", ("string", "null"), "SHIM_BUILD_ID of the `shim build` it ran under", ledger="b"),
    Field("t0", ("number",), "start, seconds since the epoch"),
    Field("t1", ("number", "null"), "end, seconds since the epoch (null: unknown)"),
    Field("dur", ("number", "null"), "duration in seconds (null: unknown)", extra={"minimum": 0}),
    Field("tool", ("string",), "tool id of toolchain.toml, or the program's name", trace=True),
    Field("prog", ("string",), "the program's name", trace=True),
    Field("kind", ("string",), "step kind", enum=KINDS),
    Field("mode", ("string",), "how it ran: exec (shim became the tool) or spawn (shim waited)",
          enum=("exec", "spawn"), trace=True),
    Field("cwd", ("string",), "where it ran, relative to the build dir"),
    Field("in", ("string", "null"), "primary input, build-dir relative", trace=True),
    Field("out", ("array",), "outputs, build-dir relative", trace=True),
    Field("exit", ("integer", "null"), "exit status (null: unknown, or killed by a signal)", trace=True,
          extra={"minimum": 0, "maximum": 255}),
    Field("sig", ("integer", "null"), "signal that killed it", trace=True, extra={"minimum": 1}),
    Field("rss", ("integer", "null"), "peak memory in bytes of its process tree (spawned steps)", trace=True),
    Field("ut", ("number", "null"), "user CPU seconds (spawned steps)", trace=True),
    Field("st", ("number", "null"), "system CPU seconds (spawned steps)", trace=True),
    Field("argv", ("string",), "fingerprint of the arguments the tool got", extra={"pattern": "^[0-9a-f]{16}$"}),
    Field("exe", ("string", "null"), "resolved compiler (compile steps, for compile_commands.json)", required=False),
    Field("args", ("array", "null"), "arguments the compiler got (compile steps)", required=False),
    Field("res", ("integer", "null"), "bytes of memory reserved", trace=True),
    Field("wait", ("number", "null"), "seconds waited for the memory", trace=True),
    Field("cpu_wait", ("number", "null"), "seconds waited for a core (`shim build`)", required=False),
    Field("est", ("integer", "null"), "expected peak the reservation was sized by", required=False),
    Field("learned", ("integer", "null"), "a step not measured in this build (exec'd): the peak learned "
          "from its earlier spawned runs (est, when src is history); reports show it marked ~"),
    Field("src", ("string", "null"), "where the estimate came from", required=False,
          enum=("history", "build", "prior", "default", None)),
    Field("oom", ("boolean", "null"), "it ran out of memory", required=False),
    Field("retry", ("integer", "null"), "which retry after running out of memory", required=False),
    Field("low_memory", ("boolean", "null"), "run with the tool's low_memory rewrites", required=False),
    Field("soft_limit", ("integer", "null"), "the soft memory limit its runtime was given: the room it was "
          "admitted into (Go's GOMEMLIMIT)", required=False),
    Field("need", ("integer", "null"), "an OOM-killed attempt: what the step is taken to need next time "
          "(more than the budget it was killed under, or its peak so far if larger)", required=False),
    Field("timing", ("string",), "where the duration came from: measured (spawned), ninja_log, outputs "
          "(the newest mtime of its outputs: exec'd steps outside ninja, e.g. cargo's) or unknown",
          enum=("measured", "ninja_log", "outputs", "unknown"), trace=True),
    Field("launcher", ("string", "null"), "launcher program in front of the tool (ccache, distcc)",
          required=False),
    Field("cache", ("string", "null"), "ccache's answer", required=False, enum=("hit", "miss", "uncached", None)),
    Field("crate", ("string", "null"), "rustc: the crate's name (build_script_build for a build script)",
          required=False, trace=True),
    Field("crate_type", ("string", "null"), "rustc: its crate types, comma-separated (lib, bin, proc-macro...)",
          required=False, trace=True),
    Field("target", ("string", "null"), "rustc: the --target triple (null: the host)", required=False),
    Field("unit", ("string", "null"), "cargo's rustc: package, version, crate type, target and profile "
          "(its memory estimate's key: cargo's file names change with every flag); a go tool: go, the tool, "
          "its package, GOOS/GOARCH and buildmode (go's files lie in a new $WORK every build)",
          required=False, trace=True),
    Field("pkg", ("string", "null"), "a go tool: the import path it builds (the link: its main package)",
          required=False, trace=True),
    Field("pauses", ("integer", "null"), "how often the pause watcher stopped it while memory ran short "
          "(null: never)", required=False, trace=True),
    Field("paused", ("number", "null"), "seconds it spent stopped by the pause watcher (null: never)",
          required=False, trace=True),
    Field("meta", ("number", "null"), "rustc: when the crate's metadata was ready, seconds since the epoch "
          "(cargo starts the crates that depend on it then)", required=False),
)

NAMES = tuple(f.name for f in FIELDS)
BY_NAME = {f.name: f for f in FIELDS}
TRACE_ARGS = tuple(f.name for f in FIELDS if f.trace)

_PYTHON = {"string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,), "array": (list,),
           "null": (type(None),)}


def fits(field: Field, value) -> bool:
    """Whether *value* (read back from the ledger) has one of *field*'s JSON types."""
    if isinstance(value, bool) and "boolean" not in field.types:
        return False                  # JSON true is not a number
    if isinstance(value, float) and not -1e18 < value < 1e18:
        return False                  # NaN, or JSON's 1e309 (inf): no time or size is that large
    if not any(isinstance(value, _PYTHON[t]) for t in field.types):
        return False
    if isinstance(value, list):
        return all(isinstance(x, str) for x in value)
    return field.enum is None or value in field.enum


def step_schema() -> dict:
    """The JSON schema of one step of `shim report --json`."""
    props = {}
    for f in FIELDS:
        prop = {"type": list(f.types)} if len(f.types) > 1 else {"type": f.types[0]}
        if "array" in f.types:
            prop["items"] = {"type": "string"}
        if f.enum is not None:
            prop = {"enum": list(f.enum) + ([None] if "null" in f.types and None not in f.enum else [])}
        prop.update(f.extra or {})
        prop["description"] = f.meaning
        props[f.name] = prop
    return {"type": "object", "required": [f.name for f in FIELDS if f.required], "properties": props,
            "additionalProperties": False}


# --- how values look to people: one formatting everywhere -----------------------------------

# Control characters (C0, DEL, C1: ESC starts a terminal escape sequence, CR rewrites the
# line) as `\xNN`; an undecodable byte of a path (read back as a lone surrogate) as well.
_UNPRINTABLE = {c: "\\x%02x" % c for c in list(range(0x20)) + list(range(0x7f, 0xa0))}
_UNPRINTABLE.update({0xdc80 + b: "\\x%02x" % (0x80 + b) for b in range(0x80)})


def printable(text, keep: str = "") -> str:
    """*text* safe to show on a terminal or in Markdown: every control character but those
    in *keep* escaped as `\\xNN` (shim report's terminal and Markdown output, file names
    from the ledger above all). JSON and HTML have their own escaping."""
    text = "" if text is None else str(text)
    return text.translate({c: e for c, e in _UNPRINTABLE.items() if chr(c) not in keep} if keep else _UNPRINTABLE)


def seconds(value) -> str:
    """A duration: `850ms`, `12.3s`; `?` when unknown."""
    if value is None:
        return "?"
    return "%dms" % round(value * 1000) if abs(value) < 0.9995 else "%.1fs" % value


def amount(value) -> str:
    """Bytes: `1.5GiB`; `?` when unknown (exec'd steps are not measured)."""
    return "?" if value is None else size.format(value)


LEARNED = "~"          # marks a peak learned from earlier runs, not measured in this build
LEARNED_NOTE = "~ learned: a peak from the step's earlier spawned runs (exec'd steps are not measured)"


def peak(step: dict) -> Optional[int]:
    """A step's peak memory: measured (rss), else learned, else None."""
    rss = step.get("rss")
    return rss if rss is not None else step.get("learned")


def peak_text(step: dict) -> str:
    """`1.5GiB` measured, `~1.5GiB` learned, `?` unknown."""
    if step.get("rss") is None and step.get("learned") is not None:
        return LEARNED + size.format(step["learned"])
    return amount(step.get("rss"))


def exit_text(step: dict) -> str:
    """How a step ended: `0`, `2`, `signal 9`; `?` when unknown."""
    if step.get("sig"):
        return "signal %d" % step["sig"]
    return "?" if step.get("exit") is None else str(step["exit"])


def name_of(step: dict) -> str:
    """What a step is called in a table: cargo's unit (`serde 1.0.152 build-script debug`:
    its file names are hashes), else its first output, else its input, else its tool."""
    return step.get("unit") or (step.get("out") or [None])[0] or step.get("in") or str(step.get("tool") or "step")


def cpu(step: dict) -> Optional[float]:
    times = [t for t in (step.get("ut"), step.get("st")) if t is not None]
    return sum(times) if times else None


class Column(NamedTuple):
    header: str
    text: Callable[[dict], str]
    key: Callable[[dict], object]     # what the HTML table sorts by
    numeric: bool = False


COLUMNS = {
    "output": Column("output", name_of, name_of),
    "kind": Column("kind", lambda s: s.get("kind") or "?", lambda s: s.get("kind")),
    "mode": Column("mode", lambda s: s.get("mode") or "?", lambda s: s.get("mode")),
    "dur": Column("duration", lambda s: seconds(s.get("dur")), lambda s: s.get("dur"), True),
    "rss": Column("peak RSS", peak_text, peak, True),
    "cpu": Column("CPU", lambda s: seconds(cpu(s)), cpu, True),
    "exit": Column("exit", exit_text, lambda s: s.get("exit") if not s.get("sig") else 128 + s["sig"], True),
    "timing": Column("timing", lambda s: s.get("timing") or "?", lambda s: s.get("timing")),
    "cache": Column("cache", lambda s: s.get("cache") or "-", lambda s: s.get("cache")),
}
TERMINAL = ("dur", "rss", "kind", "mode", "exit", "cache", "output")
HTML = ("output", "kind", "mode", "dur", "rss", "cpu", "exit", "timing")
