"""rustc's arguments, and the cargo build a rustc call belongs to.

What a rustc invocation builds and into which files, read from its arguments as rustc
reads them: every option that takes a value is in OPTIONS with the role of its value
(data, as args.py's gcc table), and one scan fills a Crate. args.py calls `scan` for the
`rustc` family and keeps the Crate in ParsedArgs.crate.

Step kinds: a crate that runs the linker (bin, dylib, cdylib, proc-macro, a --test
harness) is `link`; lib, rlib, staticlib and metadata only (`cargo check`) are `compile`.
A call that only asks rustc something (-vV, --print without a crate to build, cargo's
`- --crate-name ___` probe of the target's file names) is a probe: shim runs it straight
through, with no admission and no record.

Cargo runs each rustc in its package's directory (a registry crate's source, perhaps
read-only), so a cargo step's build dir comes from its --out-dir instead (cargo_build):
the target dir is the nearest directory above it holding cargo's CACHEDIR.TAG, and the
build dir is the workspace beside it (the target dir's parent, when that holds a
Cargo.toml), else the target dir itself. `shim cargo` applies build_dir_of_target to the
target dir `cargo metadata` names, so both find the same ledger and toolchain.toml.
"""

from shim import host

# Options that take a value -> what shim keeps of it (its role; "": nothing). Long options take
# `--opt value` or `--opt=value`, short ones `-X value` or `-Xvalue` (rustc's getopts).
# Sorted; tests/rustc_test.py checks the order.
OPTIONS = (
    ("--allow", ""),
    ("--cap-lints", ""),
    ("--cfg", ""),
    ("--check-cfg", ""),
    ("--codegen", "codegen"),
    ("--color", ""),
    ("--crate-name", "name"),
    ("--crate-type", "type"),
    ("--deny", ""),
    ("--diagnostic-width", ""),
    ("--edition", "edition"),
    ("--emit", "emit"),
    ("--env-set", ""),
    ("--error-format", ""),
    ("--explain", "query"),
    ("--extern", ""),
    ("--forbid", ""),
    ("--force-warn", ""),
    ("--json", ""),
    ("--out-dir", "out_dir"),
    ("--print", "print"),
    ("--remap-path-prefix", ""),
    ("--sysroot", ""),
    ("--target", "target"),
    ("--warn", ""),
    ("-A", ""),
    ("-C", "codegen"),
    ("-D", ""),
    ("-F", ""),
    ("-L", ""),
    ("-W", ""),
    ("-Z", ""),
    ("-l", ""),
    ("-o", "out"),
)
_ROLES = dict(OPTIONS)
# Roles whose value is kept as it is, in the Crate attribute of that name.
_KEPT_AS_IS = frozenset(("name", "out", "out_dir", "target", "edition"))

# Flags that make the call a question (version, help), not a build.
QUERIES = frozenset(("-V", "--version", "-vV", "-Vv", "-h", "--help"))
# --print values that rustc answers while it builds the crate; any other --print makes it
# answer and stop without building.
PRINTS_WHILE_BUILDING = frozenset(("native-static-libs", "link-args"))
# Crate types whose build runs the linker.
LINKED = frozenset(("bin", "dylib", "cdylib", "proc-macro"))
# --emit kinds -> file extension (link depends on the crate type).
EMIT_EXTENSIONS = {"dep-info": "d", "metadata": "rmeta", "asm": "s", "llvm-ir": "ll", "llvm-bc": "bc",
                   "obj": "o", "mir": "mir"}
BUILD_SCRIPT = "build_script_build"    # cargo's crate name for every build.rs
PROBE_CRATE = "___"                     # cargo's crate name for its target-info probe
CARGO_MARKER = "CACHEDIR.TAG"           # cargo writes it at the top of every target dir
# What rustc writes on stderr (--json=artifacts) once a crate's metadata is ready: cargo
# starts the crates that depend on it then (pipelining).
METADATA_NOTICE = b'"emit":"metadata"'


class Crate:
    """What one rustc invocation builds, as its arguments say."""

    __slots__ = ("name", "types", "emit", "out", "out_dir", "extra", "target", "edition", "codegen_units",
                 "prints", "test", "query", "inputs")

    def __init__(self):
        self.name = self.out = self.out_dir = self.target = self.edition = self.codegen_units = None
        self.extra = ""              # -C extra-filename (cargo's hash)
        self.types = []              # --crate-type, in order (repeated and comma lists)
        self.emit = {}               # --emit kind -> explicit path or None, in order
        self.prints = []
        self.test = self.query = False
        self.inputs = []

    def __repr__(self):
        return "Crate(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)


def scan(args) -> Crate:
    """The Crate of *args* (rustc's arguments, @files already expanded)."""
    c = Crate()
    i, n = 0, len(args)
    while i < n:
        arg = args[i]
        i += 1
        if arg[:1] != "-" or arg == "-":
            c.inputs.append(arg)              # a source file, or `-`: the source on stdin
            continue
        if arg[:2] == "--":
            name, eq, value = arg.partition("=")
            role = _ROLES.get(name)
            if role is None:
                if arg in QUERIES:
                    c.query = True
                elif arg == "--test":
                    c.test = True
                continue
            if not eq:
                value = args[i] if i < n else ""
                i += 1
        else:
            role = _ROLES.get(arg[:2])
            if role is None:
                if arg in QUERIES:
                    c.query = True
                continue                      # -g, -O, -v
            value = arg[2:]
            if not value:
                value = args[i] if i < n else ""
                i += 1
        if role:
            _take(c, role, value)
    if not c.types and not c.test:
        c.types = ["bin"]                     # rustc's default (unless the source says otherwise)
    if not c.emit:
        c.emit = {"link": None}
    if c.name is None:
        source = c.inputs[0] if c.inputs and c.inputs[0] != "-" else ""
        c.name = _stem(source).replace("-", "_") if source else "rust_out"
    return c


def _take(c: Crate, role: str, value: str) -> None:
    if role in _KEPT_AS_IS:
        setattr(c, role, value)
    elif role == "type":
        c.types.extend(t for t in value.split(",") if t and t not in c.types)
    elif role == "emit":
        for item in value.split(","):
            kind, eq, path = item.partition("=")
            if kind:
                c.emit[kind] = path if eq else None
    elif role == "codegen":
        key, _, setting = value.partition("=")
        if key == "extra-filename":
            c.extra = setting
        elif key == "codegen-units":
            c.codegen_units = setting
    elif role == "print":
        c.prints.append(value)
    elif role == "query":
        c.query = True


def is_probe(c: Crate) -> bool:
    """Whether the call only asks rustc something (run straight through, not recorded)."""
    if c.query or not c.inputs or c.name == PROBE_CRATE:
        return True
    return any(p.partition("=")[0] not in PRINTS_WHILE_BUILDING for p in c.prints)


def kind(c: Crate) -> str:
    """`link` when the crate runs the linker, else `compile` (metadata only is compile)."""
    if "link" in c.emit and (c.test or LINKED.intersection(c.types)):
        return "link"
    return "compile"


def _stem(path: str) -> str:
    base = host.basename(path)
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base


def _platform(target) -> str:
    """windows, darwin, wasm or unix: how the target names its files."""
    triple = target or host.PLATFORM
    for word, platform in (("windows", "windows"), ("apple", "darwin"), ("darwin", "darwin"), ("wasm", "wasm")):
        if word in triple:
            return platform
    return "unix"


def _link_name(name: str, crate_type: str, platform: str) -> str:
    if crate_type in ("lib", "rlib"):
        return "lib%s.rlib" % name
    if crate_type == "staticlib":
        return "%s.lib" % name if platform == "windows" else "lib%s.a" % name
    if crate_type in ("dylib", "cdylib", "proc-macro"):
        return {"windows": "%s.dll", "darwin": "lib%s.dylib", "wasm": "%s.wasm"}.get(platform, "lib%s.so") % name
    return name + {"windows": ".exe", "wasm": ".wasm"}.get(platform, "")    # bin, --test


def artifacts(c: Crate):
    """(outputs, depfile): the files the call writes as rustc names them, the step's main
    artifact first (the linked file, else the .rmeta), the dep-info file last."""
    platform = _platform(c.target)
    stem = c.name + c.extra
    directory = c.out_dir if c.out_dir is not None else (host.dirname(c.out) if c.out else "")

    def place(file_name):
        return host.join(directory, file_name) if directory else file_name

    outputs = []
    if "link" in c.emit:
        types = ["bin"] if c.test else c.types
        explicit = c.emit["link"] or (c.out if len(types) == 1 else None)
        if explicit:
            outputs.append(explicit)
        else:
            outputs.extend(place(_link_name(stem, t, platform)) for t in types)
    depfile = None
    for emit, path in c.emit.items():
        if emit == "link":
            continue
        if path is None:
            ext = EMIT_EXTENSIONS.get(emit, emit)
            if c.out:
                path = place("%s.%s" % (_stem(c.out), ext))    # -o names the other outputs too
            elif emit == "metadata":
                path = place("lib%s.rmeta" % stem)
            else:
                path = place("%s.%s" % (stem, ext))
        if emit == "dep-info":
            depfile = path
        else:
            outputs.append(path)
    if depfile:
        outputs.append(depfile)
    return tuple(outputs), depfile


# --- cargo ---------------------------------------------------------------------------


def option_value(argv, name: str):
    """The value of long option *name* (`--name value` or `--name=value`) in a raw argument
    list (cargo writes --out-dir and --target on the command line, not in @files), or None."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith(name) and arg[len(name):len(name) + 1] == "=":
            return arg[len(name) + 1:]
    return None


def build_dir_of_target(target_dir: str) -> str:
    """The build dir of a cargo target dir: the workspace it belongs to (its parent, when
    that holds Cargo.toml: cargo's default layout), else the target dir itself (a
    CARGO_TARGET_DIR elsewhere)."""
    target_dir = target_dir.rstrip("/") or "/"
    parent = host.dirname(target_dir)
    return parent if host.exists(host.join(parent, "Cargo.toml")) else target_dir


def cargo_build(argv, cwd: str):
    """(build dir, profile) of a rustc run by cargo, found from its --out-dir (TARGET/
    [TRIPLE/]PROFILE/deps, PROFILE/build/PKG-HASH, PROFILE/examples); None when the
    out-dir lies in no cargo target dir. Profile is None when it cannot be told."""
    out_dir = option_value(argv, "--out-dir")
    if not out_dir:
        return None
    d = (out_dir if host.is_absolute(out_dir) else host.join(cwd, out_dir)).rstrip("/")
    below = []                                   # the directories between the target dir and out-dir
    for _ in range(5):
        if host.exists(host.join(d, CARGO_MARKER)):
            below.reverse()
            target = option_value(argv, "--target")
            if below and target and below[0] in (target, _stem(target)):
                below.pop(0)                     # TARGET/TRIPLE/PROFILE: a cross build
            return build_dir_of_target(d), (below[0] if below else None)
        below.append(host.basename(d))
        parent = host.dirname(d)
        if parent == d or not parent:
            break
        d = parent
    return None


def facts(c: Crate, env: dict, profile) -> dict:
    """What a step's ledger record says about the crate (shim/reports/fields.py)."""
    return {"crate": c.name, "crate_type": ",".join(c.types) or ("test" if c.test else None), "target": c.target,
            "unit": unit(c, env, profile)}


def unit(c: Crate, env: dict, profile):
    """A name for what this call builds that stays the same across rebuilds, for the memory
    estimates: the -C metadata and extra-filename hashes in cargo's file names change
    with flags and dependencies; package, version, crate, type, target and profile do
    not. None outside cargo (there the outputs' names are stable)."""
    package = env.get("CARGO_PKG_NAME")
    if not package or profile is None:
        return None
    words = [package, env.get("CARGO_PKG_VERSION", "")]
    if c.name == BUILD_SCRIPT:
        words.append("build-script")
    else:
        if c.name != package.replace("-", "_"):
            words.append(c.name)                 # one of several bins, tests or examples
        words.append("test" if c.test else ",".join(c.types))
    if "link" not in c.emit:
        words.append("check")                    # metadata only: cargo check
    if c.target:
        words.append(c.target)
    words.append(profile)
    return " ".join(w for w in words if w)
