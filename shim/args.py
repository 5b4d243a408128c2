"""What a tool invocation does, read from its arguments: step kind, inputs, outputs.

Argument knowledge is data: per family, a table of options with flag bits (as
ccache's compopt.c), scanned once into a frozen ParsedArgs. Used for the ledger,
the memory key and reports; the tool's own arguments are never changed here.
"""

from shim import family as family_mod
from shim import host, rsp

# Step kinds, in the order reports list them.
KINDS = ("compile", "link", "archive", "preprocess", "other")

# Option flag bits.
SEP = 1          # "-o x": the value is the next argument
JOINED = 2       # "-ox": the value may be glued to the option
OUTPUT = 4       # the value is the step's output file
DEPFILE = 8      # the value is the depfile
COMPILE = 16     # -c / -S: stop before linking
PREPROCESS = 32  # -E / -M / -MM: preprocess only
DEPS_IMPLIED = 64  # -MD / -MMD: write a depfile named after the output
NO_INPUT_OK = 128  # --version and friends: a step without inputs is not an error

_GCC_OPTIONS = (   # sorted; tests/args_test.py checks the order and the bits
    ("--param", SEP),
    ("--sysroot", SEP),
    ("--version", NO_INPUT_OK),
    ("-B", SEP | JOINED),
    ("-D", SEP | JOINED),
    ("-E", PREPROCESS),
    ("-F", SEP | JOINED),
    ("-G", SEP | JOINED),
    ("-I", SEP | JOINED),
    ("-L", SEP | JOINED),
    ("-M", PREPROCESS),
    ("-MD", DEPS_IMPLIED),
    ("-MF", SEP | JOINED | DEPFILE),
    ("-MM", PREPROCESS),
    ("-MMD", DEPS_IMPLIED),
    ("-MQ", SEP | JOINED),
    ("-MT", SEP | JOINED),
    ("-S", COMPILE),
    ("-T", SEP | JOINED),
    ("-U", SEP | JOINED),
    ("-Xassembler", SEP),
    ("-Xclang", SEP),
    ("-Xlinker", SEP),
    ("-Xpreprocessor", SEP),
    ("-arch", SEP),
    ("-aux-info", SEP),
    ("-c", COMPILE),
    ("-dumpbase", SEP),
    ("-dumpdir", SEP),
    ("-e", SEP),
    ("-framework", SEP),
    ("-fsyntax-only", COMPILE),
    ("-gcc-toolchain", SEP),
    ("-idirafter", SEP | JOINED),
    ("-imacros", SEP | JOINED),
    ("-imultilib", SEP | JOINED),
    ("-include", SEP | JOINED),
    ("-iprefix", SEP | JOINED),
    ("-iquote", SEP | JOINED),
    ("-isysroot", SEP | JOINED),
    ("-isystem", SEP | JOINED),
    ("-iwithprefix", SEP | JOINED),
    ("-iwithprefixbefore", SEP | JOINED),
    ("-l", SEP | JOINED),
    ("-mllvm", SEP),
    ("-o", SEP | JOINED | OUTPUT),
    ("-target", SEP),
    ("-u", SEP | JOINED),
    ("-x", SEP | JOINED),
    ("-z", SEP),
)

_MSVC_OPTIONS = (   # cl.exe and clang-cl; "/" and "-" prefixes are equivalent
    ("/E", PREPROCESS),
    ("/EP", PREPROCESS),
    ("/FI", SEP | JOINED),
    ("/Fe", JOINED | OUTPUT),
    ("/Fo", JOINED | OUTPUT),
    ("/I", SEP | JOINED),
    ("/P", PREPROCESS),
    ("/Tc", JOINED),
    ("/Tp", JOINED),
    ("/c", COMPILE),
)

# Argument families: declared in shim/family.py (names, paths, @file quoting, own scanners).
FAMILIES = family_mod.NAMES
# Caches and compile farms a generator may write in front of the compiler (`ccache c++ -c ...`):
# `shim ccache c++ ...` is c++'s step through that launcher chain, and shim wrap puts shim there.
LAUNCHERS = frozenset(("ccache", "sccache", "distcc", "icecc"))
def _index(table):
    exact = dict(table)
    joined = {}
    for name, bits in sorted(table, key=lambda item: -len(item[0])):
        if bits & JOINED:
            joined.setdefault(name[:2], []).append((name, bits))
    return exact, joined


_GCC = _index(_GCC_OPTIONS)
_MSVC = _index(_MSVC_OPTIONS)


def family_of(program: str) -> str:
    """The argument family of a program path or name (`/usr/bin/x86_64-linux-gnu-gcc-12` -> gcc)."""
    return family_mod.of(program)


class ParsedArgs:
    """The frozen result of analysing one invocation. Paths are as the tool sees them."""

    __slots__ = ("family", "kind", "inputs", "outputs", "primary_input", "primary_output",
                 "depfile", "rsp_files", "expanded", "probe", "detail")

    def __init__(self, family, kind, inputs, outputs, primary_input, primary_output,
                 depfile, rsp_files, expanded, probe=False, detail=None):
        s = object.__setattr__
        s(self, "family", family)
        s(self, "kind", kind)                    # one of KINDS
        s(self, "inputs", inputs)                # tuple of input paths
        s(self, "outputs", outputs)              # tuple: primary output first, then depfile
        s(self, "primary_input", primary_input)  # str or None
        s(self, "primary_output", primary_output)
        s(self, "depfile", depfile)
        s(self, "rsp_files", rsp_files)          # @files read for the analysis
        s(self, "expanded", expanded)            # tuple: the arguments with @files expanded
        s(self, "probe", probe)                  # only asks the tool something: not a build step
        s(self, "detail", detail)                # the family's own scan (shim/family.py), else None

    @property
    def crate(self):
        """rustc: the shim.rustc.Crate the call builds (rustc's name for `detail`)."""
        return self.detail

    def __setattr__(self, name, value):
        raise AttributeError("ParsedArgs is frozen")

    def __repr__(self):
        return "ParsedArgs(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)


def parse(args, family: str, cwd: str, kind: str = "") -> ParsedArgs:
    """Analyse *args* (argv without argv[0]) of a tool of *family*.

    *kind* forces the step kind (toolchain.toml `kind`); empty means infer it.
    Raises ShimError (BAD_INPUT) when an @file cannot be read or split.
    """
    fam = family_mod.get(family)
    quoting = fam.quoting
    expanded, rsp_files = rsp.expand(args, quoting, cwd) if quoting else (list(args), ())
    if fam.scan is not None:
        inferred, inputs, outputs, depfile, detail, probe = fam.scan(expanded)
        return ParsedArgs(family, kind or inferred, inputs, outputs, inputs[0] if inputs else None,
                          outputs[0] if outputs else None, depfile, rsp_files, tuple(expanded), probe, detail)
    scan = _SCANNERS.get(family, _scan_other)
    inferred, inputs, output, depfile = scan(expanded)
    outputs = tuple(p for p in (output, depfile) if p)
    probe = any(a in fam.probe_flags for a in expanded) if fam.probe_flags else False
    return ParsedArgs(family, kind or inferred, tuple(inputs), outputs,
                      inputs[0] if inputs else None, output, depfile, rsp_files, tuple(expanded), probe=probe)


def _stem(path: str) -> str:
    base = host.basename(path)
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base


def _scan_gcc(args):
    exact, joined = _GCC
    inputs = []
    mode = 0
    output = depfile = None
    i, n = 0, len(args)
    while i < n:
        arg = args[i]
        i += 1
        if arg[:1] != "-" or arg == "-":
            inputs.append(arg)
            continue
        bits = exact.get(arg)
        value = None
        if bits is not None:
            if bits & SEP and i < n:
                value = args[i]
                i += 1
        elif arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
            bits = exact.get(name, 0)
        else:
            bits = 0
            for name, b in joined.get(arg[:2], ()):
                if arg.startswith(name):
                    bits, value = b, arg[len(name):]
                    break
        mode |= bits
        if bits & OUTPUT:
            output = value
        elif bits & DEPFILE:
            depfile = value
    if mode & PREPROCESS:
        kind = "preprocess"
    elif mode & COMPILE:
        kind = "compile"
        if output is None and inputs and "-fsyntax-only" not in args:
            output = _stem(inputs[0]) + (".s" if "-S" in args else ".o")
    elif not inputs:
        kind = "other"
    else:
        kind = "link"
        if output is None:
            output = "a.out"
    if depfile is None and mode & DEPS_IMPLIED and kind == "compile":
        if output is not None:
            dot = output.rfind(".")
            depfile = (output[:dot] if dot > output.rfind("/") else output) + ".d"
        elif inputs:
            depfile = _stem(inputs[0]) + ".d"
    return kind, inputs, output, depfile


_AR_SKIP = ("--plugin", "--target", "--output")


def _scan_ar(args):
    i, n = 0, len(args)
    while i < n and args[i] in _AR_SKIP:
        i += 2
    while i < n and args[i].startswith("--"):
        i += 1
    if i >= n:
        return "other", [], None, None
    op = args[i].lstrip("-")
    i += 1
    for letter in "abiN":        # modifiers that take a member name or count first
        if letter in op:
            i += 1
    archive = args[i] if i < n else None
    members = list(args[i + 1:])
    kind = "archive" if archive and any(c in op for c in "rqd") else "other"
    return kind, members, archive if kind == "archive" else None, None


_LD_SEP = frozenset(("-o", "-L", "-l", "-T", "-e", "-m", "-z", "-u", "-y", "-Y", "-F", "-f", "-h",
                     "-rpath", "-rpath-link", "-soname", "-dynamic-linker", "-Map", "--output",
                     "--version-script", "--dynamic-list", "-plugin", "-plugin-opt", "--sysroot"))


def _scan_ld(args):
    inputs = []
    output = None
    i, n = 0, len(args)
    while i < n:
        arg = args[i]
        i += 1
        if arg[:1] != "-":
            inputs.append(arg)
        elif arg in _LD_SEP:
            if arg in ("-o", "--output") and i < n:
                output = args[i]
            i += 1
        elif arg.startswith("--output="):
            output = arg[9:]
        elif arg.startswith("-o") and arg[:3] != "-o=":
            output = arg[2:] if len(arg) > 2 else output
    if not inputs:
        return "other", inputs, None, None
    return "link", inputs, output or "a.out", None


def _scan_msvc(args):
    exact, joined = _MSVC
    inputs = []
    mode = 0
    output = None
    i, n = 0, len(args)
    while i < n:
        arg = args[i]
        i += 1
        if arg[:1] not in "/-":
            inputs.append(arg)
            continue
        norm = "/" + arg[1:]
        if norm.lower() == "/link":
            break                      # the rest goes to the linker
        bits = exact.get(norm)
        value = None
        if bits is not None:
            if bits & SEP and i < n:
                value = args[i]
                i += 1
        else:
            bits = 0
            for name, b in joined.get(norm[:2], ()):
                if norm.startswith(name):
                    bits, value = b, norm[len(name):].lstrip(":")
                    if name in ("/Tc", "/Tp"):
                        inputs.append(value)
                    break
        mode |= bits
        if bits & OUTPUT and value:
            output = value
    if mode & PREPROCESS:
        return "preprocess", inputs, None, None
    if mode & COMPILE:
        if inputs and (output is None or output.endswith(("/", "\\"))):
            output = (output or "") + _stem(inputs[0]) + ".obj"
        return "compile", inputs, output, None
    if not inputs:
        return "other", inputs, None, None
    return "link", inputs, output or _stem(inputs[0]) + ".exe", None


def _scan_msvc_out(kind, default_ext):
    def scan(args):
        inputs = []
        output = None
        for arg in args:
            if arg[:1] in "/-":
                if arg[1:5].upper() == "OUT:":
                    output = arg[5:]
            else:
                inputs.append(arg)
        if not inputs:
            return "other", inputs, None, None
        return kind, inputs, output or _stem(inputs[0]) + default_ext, None
    return scan


def _scan_other(args):
    return "other", [a for a in args if a[:1] != "-"], None, None


_SCANNERS = {
    "gcc": _scan_gcc,
    "ar": _scan_ar,
    "ld": _scan_ld,
    "msvc": _scan_msvc,
    "msvc-link": _scan_msvc_out("link", ".exe"),
    "msvc-lib": _scan_msvc_out("archive", ".lib"),
}
