"""Every toolchain.toml key, declared once: path, type, default, documentation.

`shim config keys` prints this table, shim/config/layers.py validates against it, and
README.md's reference is its `shim config keys --markdown` (tests/cli_test.py
keeps them equal).
Placeholders in paths: <kind> is a step kind (compile, link, archive, preprocess,
other), <id> a tool id you choose, <platform> an OS (linux, darwin, windows, freebsd)
optionally with an architecture from ARCHES or ARCH_ALIASES (linux-x86_64, linux-amd64,
darwin-arm64), <name> a launcher program
(ccache, distcc, sccache, icecc).
Every key except `preset` may also appear under platform.<platform>.
"""

from shim import budget
from shim.args import FAMILIES, KINDS

MODES = ("exec", "spawn", "auto")
PLATFORMS = ("linux", "darwin", "windows", "freebsd")
# Architectures as uname -m (Linux) spells them; an alias is another system's name for the
# same machine (macOS and Windows say arm64, FreeBSD and Windows amd64), so
# [platform.linux-amd64] applies on x86_64. Anything else is refused: a table that can
# never apply is a typo.
ARCHES = ("x86_64", "aarch64", "i686", "armv7l", "riscv64", "ppc64le", "s390x", "loongarch64")
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "x86": "i686", "i386": "i686"}


def arch_name(name: str):
    """The canonical spelling of architecture *name* (an alias resolved), or None."""
    name = ARCH_ALIASES.get(name, name)
    return name if name in ARCHES else None


def platform_name(name: str):
    """`os` or `os-arch` in canonical spelling for a platform table's *name*, or None
    when its OS or architecture is not one shim knows."""
    os_name, dash, arch = name.partition("-")
    if os_name not in PLATFORMS:
        return None
    if not dash:
        return os_name
    arch = arch_name(arch)
    return "%s-%s" % (os_name, arch) if arch else None


def platform_spellings() -> str:
    """The accepted platform names, for error messages and README."""
    return "OS or OS-ARCH; OS: %s; ARCH: %s" % (", ".join(PLATFORMS), ", ".join(
        "%s (or %s)" % (a, " or ".join(k for k, v in ARCH_ALIASES.items() if v == a))
        if a in ARCH_ALIASES.values() else a for a in ARCHES))

# (path, type, default, doc)
KEYS = (
    ("preset", "preset", None,
     "Built-in preset to start from: gcc, clang, ccache, distcc, zig, msvc, clang-cl, rust, go (toolchains/; "
     "each includes rust: the rustc tool, which includes go: Go's tools). Default: gcc if installed, else clang."),
    ("defaults.mode", "mode", None,
     "How steps run: exec (shim becomes the tool), spawn (shim waits: peak RSS, CPU times, OOM retry), "
     "auto (spawn until the step's memory is known, then exec). Default: auto under a memory budget, "
     "else exec. SHIM_MODE overrides it for one run."),
    ("step.<kind>.mode", "mode", None, "Mode for steps of this kind; wins over defaults.mode."),
    ("step.<kind>.launcher", "list[str]", [],
     "Programs run in front of the compiler for steps of this kind, e.g. [\"ccache\"] or [\"distcc\"]."),
    ("step.<kind>.memory", "size", None,
     "Expected peak memory of a step of this kind before shim has measured it (\"1.5GiB\")."),
    ("tool.<id>.program", "str", None,
     "Program to run for `shim <id>`: a name looked up on PATH, or a path (relative to this file)."),
    ("tool.<id>.names", "list[str]", [],
     "Program names (wildcards allowed) that select this tool in launcher form, e.g. `shim g++ -c ...`."),
    ("tool.<id>.family", "family", None,
     "How to read the arguments (gcc, ar, ld, msvc, msvc-link, msvc-lib, rustc, go, other). "
     "Default: from the program name."),
    ("tool.<id>.kind", "kind", None, "Force the step kind instead of inferring it from the arguments."),
    ("tool.<id>.mode", "mode", None, "Mode for this tool; wins over step.<kind>.mode."),
    ("tool.<id>.memory", "size", None,
     "Expected peak memory of this tool's steps before shim has measured them; wins over step.<kind>.memory."),
    ("tool.<id>.launcher", "list[str]", [],
     "Programs run in front of this tool (a launcher chain, exec'd as one: `ccache gcc ...`); "
     "wins over step.<kind>.launcher. [] turns a step kind's launcher off for this tool."),
    ("tool.<id>.args.prepend", "list[str]", [], "Arguments inserted before the step's own."),
    ("tool.<id>.args.append", "list[str]", [], "Arguments added after the step's own."),
    ("tool.<id>.args.drop", "list[str]", [],
     "Arguments removed from the step's own: exact text or a wildcard (\"-march=*\")."),
    ("tool.<id>.args.replace", "replace", {},
     "Arguments swapped for others: {\"-O3\" = \"-O2\"}; a list value replaces one with several."),
    ("tool.<id>.env.set", "table[str]", {}, "Environment variables set for the tool."),
    ("tool.<id>.env.unset", "list[str]", [], "Environment variables removed for the tool."),
    ("tool.<id>.env.path_prepend", "list[str]", [],
     "Directories put in front of PATH for the tool (relative to this file)."),
    ("tool.<id>.low_memory.args.prepend", "list[str]", [],
     "After an out-of-memory failure the step is retried alone with these rewrites (and the others below)."),
    ("tool.<id>.low_memory.args.append", "list[str]", [], "Arguments added on a low-memory retry."),
    ("tool.<id>.low_memory.args.drop", "list[str]", [], "Arguments removed on a low-memory retry."),
    ("tool.<id>.low_memory.args.replace", "replace", {}, "Arguments swapped on a low-memory retry."),
    ("tool.<id>.low_memory.env.set", "table[str]", {}, "Environment set on a low-memory retry."),
    ("launcher.<name>.remote", "bool", False,
     "Steps through this launcher (named by its program, e.g. distcc) run elsewhere: they take no "
     "local CPU slot under `shim build`."),
    ("launcher.<name>.memory_factor", "number", 1.0,
     "Multiply a step's expected local memory by this when it goes through the launcher (distcc: 0.1)."),
    ("launcher.<name>.jobs", "int", None,
     "Edges `shim build` keeps in flight when this launcher is configured (remote capacity)."),
    ("launcher.<name>.env.set", "table[str]", {},
     "Environment for steps through the launcher; {ledger_dir} and {build_dir} are filled in."),
    ("memory.budget", "budget", budget.DEFAULT,
     "Memory every step shim runs is admitted into, under plain ninja, make, CMake, Meson, cargo and "
     "Bazel as under shim build. The limit is the smallest cgroup (v1 or v2) limit of the process, or "
     "MemTotal. SHIM_MEMORY_BUDGET and --budget win."),
    ("memory.unit", "size", "16MiB", "Size of one reservation slot (larger when the budget needs more than 1024)."),
    ("memory.patience", "number", 2.0,
     "Seconds a step waits fairly for its slots before it drains the pool (holds off new steps that would not fit beside it)."),
    ("memory.oom_retries", "int", 1,
     "How often a spawned step that ran out of memory is retried alone with low_memory rewrites."),
    ("memory.pause_at", "number", 0.8,
     "Pause before kill: when the memory really in use (the cgroup's, without reclaimable page cache, "
     "else MemTotal less MemAvailable) is past this fraction of the limit less the reserve and climbing "
     "fast enough to pass the limit less the reserve within 0.25 s, the most recently admitted running "
     "steps are stopped (SIGSTOP of their process tree), never the oldest. "
     "0 never pauses. SHIM_PAUSE_AT overrides it (0 or off: never pause)."),
    ("memory.resume_at", "number", 0.7,
     "Paused steps are resumed (SIGCONT), oldest first, once memory in use falls below this fraction "
     "(kept below memory.pause_at)."),
    ("memory.oom_score_adj", "int", 500,
     "oom_score_adj given to every step's tool (Linux), so that when the kernel must kill, it kills "
     "a step (which shim retries), not ninja, `shim build` or the CI agent beside them; under `shim build` "
     "a step gets one more per second since the build began (younger steps go first). 0 leaves it alone. "
     "SHIM_OOM_SCORE_ADJ overrides it."),
    ("ledger.enabled", "bool", True, "Record every step in the ledger (shim report, shim compdb)."),
    ("ledger.dir", "str", ".shim",
     "Ledger directory, relative to the build dir (where steps run). SHIM_LEDGER overrides it."),
    ("ledger.keep_builds", "int", 20,
     "Builds the ledger keeps (a `shim build` or `shim cargo` run is one): older ones are dropped when "
     "one finishes and by `shim report`. Learned memory estimates are kept apart and stay."),
    ("ledger.max_size", "size", "64MiB",
     "Largest the ledger may stay: older builds (then older lines) are dropped to fit, also under "
     "plain ninja (by `shim report`)."),
)

# Sane ranges: (lowest, highest) accepted, for the keys of type int, number and size.
BOUNDS = {
    "memory.oom_retries": (0, 10),
    "memory.oom_score_adj": (0, 1000),
    "memory.patience": (0, 3600),
    "memory.pause_at": (0, 1),
    "memory.resume_at": (0, 1),
    "memory.unit": (1 << 20, 1 << 30),
    "launcher.<name>.memory_factor": (0, 100),
    "launcher.<name>.jobs": (1, 100000),
    "ledger.keep_builds": (1, 10000),
    "ledger.max_size": (1 << 20, 16 << 30),
}

TYPES = {
    "str": "a string",
    "list[str]": "a list of strings",
    "mode": "one of " + ", ".join(MODES),
    "kind": "one of " + ", ".join(KINDS),
    "family": "one of " + ", ".join(FAMILIES),
    "size": "a size such as \"1.5GiB\" or \"512M\"",
    "table[str]": "a table of strings",
    "replace": "a table of strings or lists of strings",
    "preset": "the name of a preset in toolchains/",
    "bool": "true or false",
    "budget": budget.DESCRIPTION,
    "int": "a whole number >= 0",
    "number": "a number >= 0",
}
ENUMS = {"mode": MODES, "kind": KINDS, "family": FAMILIES}

# Environment variables shim reads, for `shim config keys` and README.
ENV = (
    ("SHIM_TOOLCHAIN", "Path of a toolchain.toml layered on top of all others."),
    ("SHIM_MODE", "exec, spawn or auto for every step of this run, overriding toolchain.toml."),
    ("SHIM_MEMORY_BUDGET", "Memory budget for this run, in memory.budget's words (`off` switches "
     "admission off); `shim build` sets it for steps."),
    ("SHIM_LEDGER", "Ledger directory for this run (`off` disables the ledger)."),
    ("SHIM_CACHE_DIR", "Where the parsed toolchain is cached (default $XDG_CACHE_HOME/shim)."),
    ("SHIM_OOM_SCORE_ADJ", "oom_score_adj for the steps of this run (as memory.oom_score_adj; 0 leaves it alone)."),
    ("SHIM_PAUSE_AT", "memory.pause_at for this run: a fraction such as 0.9, or 0/off to never pause steps."),
    ("SHIM_DEBUG", "1: print the traceback of an internal error (shim then imports module by module)."),
)


def type_text(path: str, typ: str) -> str:
    """What a value of key *path* must be, with its range when it has one."""
    bounds = BOUNDS.get(path)
    if bounds is None:
        return TYPES[typ]
    low, high = bounds
    if typ == "size":
        from shim import size
        return "%s, %s to %s" % (TYPES[typ], size.format(low).replace(".0", ""), size.format(high).replace(".0", ""))
    return "%s %s to %s" % ({"int": "a whole number", "number": "a number"}[typ], low, high)


def markdown() -> str:
    """The key reference as a Markdown table (README.md carries a copy)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for path, typ, default, doc in KEYS:
        shown = "" if default is None or default in ([], {}) else "`%s`" % (
            '"%s"' % default if isinstance(default, str) else str(default).lower())
        rows.append("| `%s` | %s | %s | %s |" % (path, type_text(path, typ), shown, doc.replace("|", "\\|")))
    rows += ["", "| environment variable | meaning |", "|---|---|"]
    rows += ["| `%s` | %s |" % (name, doc) for name, doc in ENV]
    return "\n".join(rows) + "\n"
