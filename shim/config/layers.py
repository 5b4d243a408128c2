"""Reading, validating and merging toolchain.toml layers (off the hot path).

shim/toolchain.py finds the layers and caches what `build` returns; this module is
imported only on a cache miss and by `shim config`. The tool-rules shape it compiles
tables into belongs to shim/rewrite.py (`rewrite.rules`). Errors name file, line and key:
`toolchain.toml:7: unknown key 'tool.cc.progam' (did you mean 'program'?)`.
"""

import difflib
import sys

from shim import args as args_mod
from shim import budget, host, pattern, rewrite, size
from shim.config import keys
from shim.exit_status import CONFIG, ShimError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

_PLACEHOLDERS = {
    "<kind>": lambda name: name in args_mod.KINDS,
    "<id>": lambda name: bool(name) and all(c.isalnum() or c in "_-.+" for c in name),
    "<platform>": lambda name: keys.platform_name(name) is not None,
    "<name>": lambda name: bool(name) and all(c.isalnum() or c in "_-.+" for c in name),
}


class Layer:
    """One toolchain.toml: where it is, its text (for line numbers) and its data."""

    def __init__(self, role: str, path: str, text: str, data: dict):
        self.role = role    # preset, user, project, env
        self.path = path
        self.text = text
        self.data = data
        self._lines = None

    def where(self, dotted: tuple) -> str:
        if self._lines is None:
            self._lines = KeyLines(self.text)      # once: merging asks for every key's line
        line = self._lines.locate(dotted)
        return "%s:%d" % (self.path, line) if line else self.path


def read_layer(role: str, path: str) -> Layer:
    """Parse *path*; a syntax error becomes `FILE:LINE:COL: invalid TOML: ...`."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ShimError("cannot read toolchain file %s: %s" % (path, e.strerror or e), CONFIG) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ShimError("%s:%d: invalid TOML: not UTF-8" % (path, line), CONFIG) from None
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ShimError("%s: invalid TOML: arrays or tables nested too deep" % path, CONFIG) from None
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        where = ""
        if message.endswith(")") and "(at line " in message:
            message, _, at = message[:-1].rpartition(" (at ")
            line, _, column = at.replace("line ", "").partition(", column ")
            where = ":%s:%s" % (line, column) if column else ":%s" % line
        elif message.endswith("(at end of document)"):
            message = message.rpartition(" (at ")[0]
            where = ":%d" % (text.count("\n") + 1)
        raise ShimError("%s%s: invalid TOML: %s" % (path, where, message[:1].lower() + message[1:]),
                        CONFIG) from None
    layer = Layer(role, path, text, data)
    validate(layer)
    return layer


# --- the key tree --------------------------------------------------------------------


def _key_tree():
    """{segment: subtree or ("leaf", type)} built from keys.KEYS, with platform.<platform>.*."""
    tree = {}
    for path, typ, _default, _doc in keys.KEYS:
        for prefix in ((), ("platform", "<platform>")):
            if prefix and path == "preset":
                continue
            node = tree
            parts = prefix + tuple(path.split("."))
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = ("leaf", typ, path)
    return tree


_TREE = _key_tree()


def validate(layer: Layer) -> None:
    _validate_node(layer, layer.data, _TREE, ())


def _validate_node(layer, data, tree, path):
    for name, value in data.items():
        here = path + (name,)
        node = tree.get(name)
        if node is None:
            for placeholder, accepts in _PLACEHOLDERS.items():
                if placeholder in tree and accepts(name):
                    node = tree[placeholder]
                    break
        if node is None:
            raise ShimError("%s: %s" % (layer.where(here), _unknown(here, tree)), CONFIG)
        if isinstance(node, tuple):
            problem = _type_problem(node[1], value, node[2])
            if problem:
                raise ShimError("%s: %s: %s" % (layer.where(here), ".".join(here), problem), CONFIG)
        elif not isinstance(value, dict):
            raise ShimError("%s: %s: expected a table, got %s"
                            % (layer.where(here), ".".join(here), _typename(value)), CONFIG)
        else:
            _validate_node(layer, value, node, here)


def _unknown(here: tuple, tree: dict) -> str:
    name = here[-1]
    placeholders = [p for p in tree if p.startswith("<")]
    if placeholders:
        kind = placeholders[0]
        if kind == "<kind>":
            return "unknown step kind %r in '%s' (expected one of: %s)" % (
                name, ".".join(here), ", ".join(args_mod.KINDS))
        if kind == "<platform>":
            return "unknown platform %r in '%s' (expected %s)" % (
                name, ".".join(here), keys.platform_spellings())
        return "invalid name %r in '%s' (use letters, digits, _ - . +)" % (name, ".".join(here))
    choices = sorted(p for p in tree)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    hint = " (did you mean '%s'?)" % close[0] if close else " (known here: %s)" % ", ".join(choices)
    return "unknown key '%s'%s" % (".".join(here), hint)


def _typename(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def _type_problem(typ: str, value, path: str = ""):
    """None if *value* fits *typ* (and the range keys.BOUNDS gives *path*), else what is
    wrong with it."""
    if _has_nul(value):
        return "contains a NUL character"
    problem = _shape_problem(typ, value)
    bounds = keys.BOUNDS.get(path)
    if problem is None and bounds is not None:
        number = size.parse(value) if typ == "size" else value
        if not bounds[0] <= number <= bounds[1]:
            return "%r is out of range (expected %s)" % (value, keys.type_text(path, typ))
    return problem


def _shape_problem(typ: str, value):
    expected = keys.TYPES[typ]
    if typ == "size":
        try:
            size.parse(value)
        except ValueError as e:
            return str(e)
        return None
    if typ == "str":
        ok = isinstance(value, str) and value != ""
    elif typ == "list[str]":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif typ == "table[str]":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    elif typ == "replace":
        ok = isinstance(value, dict) and all(
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
            for v in value.values())
    elif typ == "bool":
        ok = isinstance(value, bool)
    elif typ == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif typ == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    elif typ == "budget":
        try:
            budget.parse(value)
        except ValueError as e:
            return str(e)
        return None
    elif typ == "preset":
        ok = isinstance(value, str) and value in preset_names()
        expected = "one of " + ", ".join(preset_names())
    else:
        ok = isinstance(value, str) and value in keys.ENUMS[typ]
        if isinstance(value, str) and not ok:
            close = difflib.get_close_matches(value, keys.ENUMS[typ], n=1, cutoff=0.5)
            if close:
                return "expected %s, got %r (did you mean %r?)" % (expected, value, close[0])
    if ok:
        return None
    return "expected %s, got %s" % (expected, repr(value) if isinstance(value, str) else _typename(value))


# --- locating a key in the text, for error messages ----------------------------------


def _split_dotted(text: str):
    if '"' not in text and "'" not in text:
        return tuple(part.strip() for part in text.split("."))
    parts, cur, quote = [], [], ""
    for c in text:
        if quote:
            if c == quote:
                quote = ""
            else:
                cur.append(c)
        elif c in "\"'":
            quote = c
        elif c == ".":
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur).strip())
    return tuple(parts)


def _bare_key(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c in "_-.\"' " for c in text)


def _written(text: str):
    """(line number, dotted path, is a header) of every table header and key line in *text*."""
    header = ()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            header = _split_dotted(line.split("#", 1)[0].strip().strip("[]").strip())
            yield lineno, header, True
            continue
        key, eq, _ = line.partition("=")
        if eq and _bare_key(key.strip()):
            yield lineno, header + _split_dotted(key.strip()), False


class KeyLines:
    """Where each key of a TOML text is written, indexed in one pass, so that looking up
    every key of a file is linear in its size (a scan per key was quadratic: 7.8 s for a
    toolchain.toml of 2000 tools, BENCHMARKS.md)."""

    def __init__(self, text: str):
        self.below = {}     # dotted -> first line of a header or key at or below it
        self.keys = {}      # dotted -> first line of a key line with exactly that path
        for lineno, path, is_header in _written(text):
            for n in range(1, len(path) + 1):
                self.below.setdefault(path[:n], lineno)
            if not is_header:
                self.keys.setdefault(path, lineno)

    def locate(self, dotted: tuple):
        """Line number where key *dotted* (or the table or inline table holding it) is
        written: the first header or key at or below it ([tool.cc] for key tool.cc), or key
        line above it (`env.set = {...}` for env.set.X)."""
        lines = [self.keys[dotted[:n]] for n in range(1, len(dotted)) if dotted[:n] in self.keys]
        if dotted in self.below:
            lines.append(self.below[dotted])
        return min(lines) if lines else None


def locate(text: str, dotted: tuple):
    """Line number where key *dotted* (or the table or inline table holding it) is written."""
    return KeyLines(text).locate(dotted)


# --- presets, merging, compiling -----------------------------------------------------


def preset_dir():
    """toolchains/ as installed (shim/toolchains) or in a source checkout (../toolchains)."""
    import os
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (os.path.join(package, "toolchains"), os.path.join(os.path.dirname(package), "toolchains")):
        if os.path.isfile(os.path.join(d, "gcc.toml")):
            return d
    return None


def preset_names():
    import os
    d = preset_dir()
    return sorted(n[:-5] for n in os.listdir(d) if n.endswith(".toml")) if d else []


def choose_preset(env_path: str):
    """(preset name, reason): gcc when gcc is on PATH, else clang when clang is, else gcc."""
    from shim import program
    for name, prog in (("gcc", "gcc"), ("clang", "clang")):
        found = program.find_on_path(prog, env_path)
        if found:
            return name, "%s found at %s" % (prog, found)
    return "gcc", "neither gcc nor clang found on PATH; gcc is the fallback"


def merge(layers):
    """(merged data, {dotted key: Origin}) of *layers*, later layers winning.

    Tables merge key by key; any other value (lists too) replaces the earlier one.
    `platform.<os>` and then `platform.<os>-<arch>` tables are applied on top of the
    merged base, so a platform-specific setting wins over a general one; an architecture
    alias applies as its canonical name (linux-amd64 as linux-x86_64), in the file's order.
    """
    merged, origins = {}, {}
    for layer in layers:
        _merge_into(merged, origins, {k: v for k, v in layer.data.items() if k != "platform"}, (), layer)
    for plat in (host.PLATFORM, this_platform()):
        for layer in layers:
            for name, table in layer.data.get("platform", {}).items():
                if table and keys.platform_name(name) == plat:
                    _merge_into(merged, origins, table, (), layer, ("platform", name))
    return merged, origins


def this_platform() -> str:
    """`os-arch` of this machine, the architecture in canonical spelling (as uname says it
    when shim has no name for it)."""
    return "%s-%s" % (host.PLATFORM, keys.arch_name(host.arch()) or host.arch())


def _merge_into(dst, origins, src, path, layer, written_under=()):
    for name, value in src.items():
        here = path + (name,)
        if isinstance(value, dict):
            _merge_into(dst.setdefault(name, {}), origins, value, here, layer, written_under)
        else:
            if isinstance(dst.get(name), dict):      # a value replacing a table: forget its keys
                for key in [k for k in origins if k[:len(here)] == here]:
                    del origins[key]
            dst[name] = value
            origins[here] = Origin(layer, written_under + here)


class Origin:
    """Where a merged value was written: its layer, and `file:line` on demand (str()). Found
    only when asked (an error, `shim config show --origin`): locating every key of a large
    toolchain.toml on each cache miss was a third of its cost (BENCHMARKS.md)."""

    __slots__ = ("layer", "dotted")

    def __init__(self, layer, dotted: tuple):
        self.layer, self.dotted = layer, dotted

    def __str__(self) -> str:
        return self.layer.where(self.dotted)


def compile_config(merged: dict, base_dirs: dict) -> dict:
    """The runtime form the hot path reads (plain data, marshal-able)."""
    steps = {}
    for kind, table in merged.get("step", {}).items():
        steps[kind] = {"mode": table.get("mode"), "launcher": table.get("launcher"),
                       "memory": size.parse(table["memory"]) if "memory" in table else None}
    tools = {}
    names = {}
    name_patterns = []
    for tool_id, t in sorted(merged.get("tool", {}).items()):
        a = t.get("args", {})
        e = t.get("env", {})
        base = base_dirs.get(("tool", tool_id, "program"), "")
        prog = t.get("program")
        if prog and "/" in prog and not host.is_absolute(prog) and base:
            prog = host.join(base, prog)
        path_base = base_dirs.get(("tool", tool_id, "env", "path_prepend"), "")
        low = t.get("low_memory", {})
        tools[tool_id] = dict(rewrite.rules(a, e, path_base), program=prog, launcher=t.get("launcher"),
                              family=t.get("family"), kind=t.get("kind"), mode=t.get("mode"),
                              memory=size.parse(t["memory"]) if "memory" in t else None,
                              low_memory=rewrite.rules(low.get("args"), low.get("env")))
        for name in t.get("names", []):
            if pattern.is_pattern(name):
                name_patterns.append((name, tool_id))
            else:
                names.setdefault(name, tool_id)
    ledger = merged.get("ledger", {})
    memory = merged.get("memory", {})
    launchers = {name: {"remote": bool(table.get("remote", False)),
                        "memory_factor": float(table.get("memory_factor", 1.0)),
                        "jobs": table.get("jobs"),
                        "env_set": dict(table.get("env", {}).get("set", {}))}
                 for name, table in merged.get("launcher", {}).items()}
    return {
        "launchers": launchers,
        "ledger": {"enabled": ledger.get("enabled", True), "dir": ledger.get("dir"),
                   "keep_builds": int(ledger.get("keep_builds", 20)),
                   "max_size": size.parse(ledger.get("max_size", "64MiB"))},
        "memory": {"budget": str(memory["budget"]) if "budget" in memory else None,
                   "unit": size.parse(memory.get("unit", "16MiB")),
                   "patience": float(memory.get("patience", 2.0)),
                   "oom_retries": int(memory.get("oom_retries", 1)),
                   "pause_at": float(memory.get("pause_at", 0.8)),
                   "resume_at": float(memory.get("resume_at", 0.7)),
                   "oom_score_adj": int(memory.get("oom_score_adj", 500))},
        "preset": merged.get("preset"),
        "mode": merged.get("defaults", {}).get("mode"),
        "steps": steps,
        "tools": tools,
        "names": names,
        "name_patterns": name_patterns,
    }


def load_layers(found, env_path: str):
    """Read *found* [(role, path)] and the preset they ask for; returns (layers, preset reason)."""
    import os
    user_layers = [read_layer(role, path) for role, path in found]
    preset = None
    for layer in user_layers:
        preset = layer.data.get("preset", preset)
    if preset:
        reason = "preset = %r in toolchain.toml" % preset
    else:
        preset, reason = choose_preset(env_path)
    presets = []
    while preset and preset not in [os.path.basename(p.path)[:-5] for p in presets]:
        layer = read_layer("preset", os.path.join(preset_dir(), preset + ".toml"))
        presets.insert(0, layer)       # a preset naming another is layered on top of it
        preset = layer.data.get("preset")
    return presets + user_layers, reason


def build(found, env_path: str):
    """(runtime config, list of files it depends on) for discovered layers *found*."""
    import os
    layers, reason = load_layers(found, env_path)
    merged, origins = merge(layers)
    merged["preset"] = [layer for layer in layers if layer.role == "preset"][-1].path.rsplit("/", 1)[-1][:-5]
    dirs = {layer.path: os.path.dirname(os.path.abspath(layer.path)) for layer in layers}
    base_dirs = {key: dirs[origin.layer.path] for key, origin in origins.items()   # relative paths' base
                 if key[-1] in ("program", "path_prepend")}
    config = compile_config(merged, base_dirs)
    config["preset_reason"] = reason
    config["files"] = [(layer.role, layer.path) for layer in layers]
    return config, [layer.path for layer in layers]


# --- showing ---------------------------------------------------------------------------


def dump_toml(merged: dict, origins: dict = None) -> str:
    """*merged* as TOML text; with *origins*, each value is followed by `# file:line`."""
    out = []
    _dump_table(out, merged, (), origins)
    return "\n".join(out).strip() + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return '"%s"' % escaped
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join("%s = %s" % (_toml_key(k), _toml_value(v)) for k, v in value.items()) + " }"
    return _toml_value(str(value))


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else _toml_value(key)


def _dump_table(out, table, path, origins):
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict) or _inline(path + (k,))]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict) and not _inline(path + (k,))]
    if scalars and path:
        out.append("")
        out.append("[%s]" % ".".join(_toml_key(p) for p in path))
    for k, v in scalars:
        line = "%s = %s" % (_toml_key(k), _toml_value(v))
        if origins is not None:
            where = str(origins.get(path + (k,)) or "") or _origin_below(origins, path + (k,))
            if where:
                line += "  # " + where
        out.append(line)
    for k, v in tables:
        _dump_table(out, v, path + (k,), origins)


def _inline(path: tuple) -> bool:
    """Tables shown inline: the value tables (env.set, args.replace)."""
    return len(path) >= 2 and path[-2:] in (("env", "set"), ("args", "replace"))


def _origin_below(origins, path):
    found = sorted({str(w) for k, w in origins.items() if k[:len(path)] == path})
    return ", ".join(found)
