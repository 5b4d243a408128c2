"""Go's tools as `go build -toolexec=shim` runs them: compile, asm, link, cgo and vet.

go runs `shim /usr/lib/go-1.19/pkg/tool/linux_amd64/compile -o $WORK/b273/_pkg_.a
-trimpath "$WORK/b273=>" -p IMPORTPATH ... -pack FILES`: the tool's absolute path first, so
a go tool is recognised by where it lies (GOROOT/pkg/tool/GOOS_GOARCH/NAME), not by its name
(`link` alone is MSVC's linker). One scan of the arguments (value-taking options in OPTIONS,
data as rustc.py's) fills a Unit: which tool, the package, its inputs and output.

- Kinds: compile is `compile`, link is `link`; asm, cgo and vet are `other`.
- Probes: `-V=full` (go's build-cache key: six a build) and vet's `-flags` only ask the tool
  something; they run straight through, byte-exact, with no record and no admission.
- The package: go names it in TOOLEXEC_IMPORTPATH (compile of a main package says `-p main`);
  else `-p`, else (the link) the first `packagefile` of its importcfg.link.
- The estimate key (unit) is tool, package, GOOS/GOARCH and buildmode: never `$WORK`, which
  is a new random directory every build.
- shim never rewrites a go tool's arguments (any rewrite changes the `-V=full` answer, and so
  go's cache keys); the low-memory rewrites are environment only (GOGC, GOMEMLIMIT).
"""

from shim import host

TOOLS = ("compile", "asm", "link", "cgo", "vet")
KINDS = {"compile": "compile", "link": "link"}
# What Go's runtime prints when an allocation fails (then exit 2).
OOM_TEXTS = (b"fatal error: runtime: out of memory",)
# The probes: go asks every tool `-V=full` for its cache key, vet also `-flags`.
PROBES = frozenset(("-V", "-V=full", "-flags"))

# Options that take a value (`-o x` or `-o=x`) -> role ("": not kept). Go's flag package:
# booleans never take the next argument. Sorted; tests/golang_test.py checks the order.
OPTIONS = (
    ("-D", ""),
    ("-E", ""),
    ("-H", ""),
    ("-I", ""),
    ("-L", ""),
    ("-R", ""),
    ("-T", ""),
    ("-X", ""),
    ("-asmhdr", ""),
    ("-buildid", ""),
    ("-buildmode", "buildmode"),
    ("-coverageinfo", ""),
    ("-cpuprofile", ""),
    ("-embedcfg", ""),
    ("-extar", ""),
    ("-extld", ""),
    ("-extldflags", ""),
    ("-fieldtrack", ""),
    ("-goversion", ""),
    ("-importcfg", "importcfg"),
    ("-importpath", "pkg"),
    ("-installsuffix", ""),
    ("-lang", ""),
    ("-linkmode", ""),
    ("-linkobj", ""),
    ("-memprofile", ""),
    ("-o", "out"),
    ("-objdir", "objdir"),
    ("-p", "pkg"),
    ("-pgoprofile", ""),
    ("-pluginpath", ""),
    ("-symabis", ""),
    ("-tmpdir", ""),
    ("-trimpath", ""),
)
_ROLES = dict(OPTIONS)


class Unit:
    """What one go tool invocation builds, as its arguments say."""

    __slots__ = ("tool", "pkg", "out", "objdir", "importcfg", "buildmode", "inputs", "probe")

    def __init__(self):
        self.tool = self.pkg = self.out = self.objdir = self.importcfg = None
        self.buildmode = "exe"
        self.inputs = []
        self.probe = False

    def __repr__(self):
        return "Unit(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)


def tool_of(program: str):
    """compile, asm, link, cgo or vet when *program* is one of Go's tools by its path
    (…/pkg/tool/GOOS_GOARCH/NAME), else None."""
    parts = program.replace("\\", "/").split("/")
    if len(parts) < 4 or parts[-3] != "tool" or parts[-4] != "pkg" or "_" not in parts[-2]:
        return None
    stem = host.program_stem(parts[-1])
    return stem if stem in TOOLS else None


def scan(args, tool=None) -> Unit:
    """The Unit of *args* (a go tool's arguments). *tool* is the tool when known (by path);
    otherwise it is told from the arguments."""
    u = Unit()
    u.probe = bool(args) and all(a in PROBES for a in args)
    i, n = 0, len(args)
    while i < n:
        arg = args[i]
        i += 1
        if arg == "--":              # cgo: the C compiler's flags (some with values), then the Go files
            u.inputs.extend(a for a in args[i:] if a.endswith(".go"))
            break
        if arg[:1] != "-" or arg == "-":
            u.inputs.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        role = _ROLES.get("-" + name)
        if role is None:
            continue
        if not eq:
            value = args[i] if i < n else ""
            i += 1
        if role:
            setattr(u, role, value)
    u.tool = tool or _tool_from(u)
    return u


def _tool_from(u: Unit) -> str:
    if u.objdir is not None:
        return "cgo"
    if u.importcfg and u.importcfg.endswith("importcfg.link"):
        return "link"
    if any(p.endswith((".s", ".S")) for p in u.inputs):
        return "asm"
    if u.inputs and u.inputs[0].endswith(".cfg"):
        return "vet"
    return "compile"


def kind(u: Unit) -> str:
    return KINDS.get(u.tool, "other")


def artifacts(u: Unit):
    """(outputs, inputs): the file the tool writes (cgo: its object directory), and what it reads."""
    out = u.out or (u.objdir if u.tool == "cgo" else None)
    return ((out,) if out else ()), tuple(u.inputs)


def package(u: Unit, env: dict):
    """The import path the call builds (the link: its main package), or None."""
    pkg = env.get("TOOLEXEC_IMPORTPATH")
    if pkg:
        return pkg
    if u.pkg and u.pkg != "main":
        return u.pkg
    if u.tool == "link" and u.importcfg:
        return _first_packagefile(u.importcfg) or u.pkg
    return u.pkg


def _first_packagefile(path: str):
    try:
        data = host.read_file(path)
    except (OSError, ValueError):
        return None
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("packagefile "):
            return line[12:].partition("=")[0].strip() or None
    return None


def facts(u: Unit, env: dict) -> dict:
    """What a go step's record says (shim/reports/fields.py): its package and the unit under
    which its peak is learned (tool, package, GOOS/GOARCH, buildmode; never $WORK)."""
    pkg = package(u, env)
    words = ["go", u.tool, pkg or (u.inputs[0] if u.inputs else ""),
             "%s/%s" % (env.get("GOOS", ""), env.get("GOARCH", "")), u.buildmode or "exe"]
    return {"pkg": pkg, "unit": " ".join(words)}


def go_dir(env: dict, cwd: str) -> str:
    """The directory go itself runs in, where the build's ledger lies: SHIM_GO_DIR (set by
    `shim go`), else go's own working directory (this step's parent: asm, vet and cgo's first
    run start in the package's source directory), else *cwd*."""
    d = env.get("SHIM_GO_DIR")
    if d:
        return d
    try:
        return host.osapi.readlink("/proc/%d/cwd" % host.osapi.getppid())
    except (OSError, AttributeError, ValueError):
        return cwd
