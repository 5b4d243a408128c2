"""Tool families, declared once: how shim recognises a family's tools and what it needs to
know about one step of them.

A family (gcc-like, ar, ld, msvc, rustc, go...) is one row of TABLE: the program names (and,
through `tool_of`, paths) it is recognised by, how it reads @files, the scanner of its
arguments (shim/args.py's option tables, or the family's own module: shim/rustc.py,
shim/golang.py), where a step finds its build when it starts outside it (cargo runs rustc in
the package's directory, go runs asm in the package's source directory), the facts its
ledger record carries, what of its stderr is noted (rustc's metadata notice) and its
out-of-memory messages. shim/step.py asks these functions and never branches on a family;
adding one is a module, a row here and a preset in toolchains/.
"""

from shim import golang, host, pattern, rustc


class Family:
    """One family's declarations; None where the family has nothing to say."""

    __slots__ = ("name", "names", "quoting", "tool_of", "scan", "locate", "facts", "watch", "oom_texts",
                 "wrapped", "probe_flags", "replays_stderr", "soft_limit")

    def __init__(self, name, names=(), quoting="gcc", tool_of=None, scan=None, locate=None, facts=None,
                 watch=None, oom_texts=(), wrapped=False, probe_flags=(), replays_stderr=False,
                 soft_limit=None):
        self.name = name
        self.names = names            # program name patterns (basename, no extension)
        self.quoting = quoting        # how it reads @files (shim/rsp.py), None: it does not
        self.tool_of = tool_of        # program path -> the family's name for that tool, or None
        self.scan = scan              # expanded args -> (kind, inputs, outputs, depfile, detail, probe)
        self.locate = locate          # (argv, cwd, env) -> (build base dir, context) or None
        self.facts = facts            # (detail, env, context) -> dict for the ledger record
        self.watch = watch            # detail -> bytes to note the time of on stderr, or None
        self.oom_texts = oom_texts    # what the tool says on stderr when it ran out of memory
        self.wrapped = wrapped        # a wrapper may run in front of it (`W /path/rustc ARGS`)
        self.probe_flags = probe_flags  # arguments that make a call a question, not a build
        # Its build tool caches what a step wrote on stderr and replays it on every cache hit
        # (go: golang/go#27628): shim's own notes about a step go to the ledger only.
        self.replays_stderr = replays_stderr
        # The variable by which its runtime takes a soft memory limit: an admitted step gets
        # the room it was admitted into, unless it is set already (go: GOMEMLIMIT, Go >= 1.19;
        # the collector works harder near it, and never fails for it).
        self.soft_limit = soft_limit


# --- rustc ---------------------------------------------------------------------------

def _rustc_scan(expanded):
    crate = rustc.scan(expanded)
    outputs, depfile = rustc.artifacts(crate)
    return rustc.kind(crate), tuple(crate.inputs), outputs, depfile, crate, rustc.is_probe(crate)


def _rustc_locate(argv, cwd, env):
    # cargo runs each rustc in its package's own directory (a registry crate's source): the
    # build it belongs to is the one its --out-dir lies in (shim/rustc.py cargo_build).
    if "CARGO" not in env:
        return None
    return rustc.cargo_build(argv, cwd)


def _rustc_facts(crate, env, profile):
    return rustc.facts(crate, env, profile)


def _rustc_watch(crate):
    return rustc.METADATA_NOTICE if "metadata" in crate.emit else None


# --- go ------------------------------------------------------------------------------

def _go_scan(expanded):
    u = golang.scan(expanded)
    outputs, inputs = golang.artifacts(u)
    return golang.kind(u), inputs, outputs, None, u, u.probe


def _go_locate(argv, cwd, env):
    return golang.go_dir(env, cwd), None


def _go_facts(unit, env, _context):
    return golang.facts(unit, env)


# Families by name, in the order program names are tried (first match wins).
TABLE = (
    Family("msvc", names=("clang-cl", "cl"), quoting="msvc"),
    Family("msvc-link", names=("lld-link", "link"), quoting="msvc"),
    Family("msvc-lib", names=("llvm-lib", "lib"), quoting="msvc"),
    Family("ar", names=("gcc-ar*", "*-gcc-ar*", "llvm-ar*", "ar", "*-ar")),
    Family("gcc", names=("cc", "c++", "gcc", "g++", "gcc-[0-9]*", "g++-[0-9]*", "clang", "clang++",
                         "clang-[0-9]*", "clang++-[0-9]*", "*-gcc", "*-g++", "*-gcc-[0-9]*", "*-g++-[0-9]*",
                         "*-cc", "*-c++", "*-clang", "*-clang++"),
           probe_flags=("-###",)),    # prints the commands it would run (cgo asks it so)
    Family("ld", names=("ld", "ld.*", "*-ld", "*-ld.*", "lld", "ld64.lld", "mold")),
    Family("rustc", names=("rustc", "rustc-[0-9]*", "*-rustc"), quoting="lines", scan=_rustc_scan,
           locate=_rustc_locate, facts=_rustc_facts, watch=_rustc_watch,
           oom_texts=(b"memory allocation of ", b"LLVM ERROR: out of memory"), wrapped=True),
    Family("go", quoting=None, tool_of=golang.tool_of, scan=_go_scan, locate=_go_locate, facts=_go_facts,
           oom_texts=golang.OOM_TEXTS, replays_stderr=True, soft_limit="GOMEMLIMIT"),
    Family("other", quoting=None),
)
BY_NAME = {f.name: f for f in TABLE}
NAMES = tuple(f.name for f in TABLE)
OTHER = BY_NAME["other"]
# Every family's out-of-memory messages (shim/oom.py adds them to its own).
OOM_TEXTS = tuple(text for f in TABLE for text in f.oom_texts)


def get(name) -> Family:
    """The family called *name*; `other` for None or a name shim does not know."""
    return BY_NAME.get(name, OTHER)


def of(program: str) -> str:
    """The family of a program path or name: by path first (a family's own tools, such as
    GOROOT/pkg/tool/linux_amd64/link), then by name (`/usr/bin/x86_64-linux-gnu-gcc-12` -> gcc)."""
    for f in TABLE:
        if f.tool_of is not None and f.tool_of(program):
            return f.name
    stem = host.program_stem(program).lower()
    for f in TABLE:
        for pat in f.names:
            if stem == pat or (pattern.is_pattern(pat) and pattern.match(stem, pat)):
                return f.name
    return "other"


def alias(program: str):
    """The name a family gives a tool it recognises by path (`go-compile`), by which
    toolchain.toml's `names` select its rules; None for any other program."""
    for f in TABLE:
        if f.tool_of is not None:
            tool = f.tool_of(program)
            if tool:
                return "%s-%s" % (f.name, tool)
    return None
