"""`shim bazel init`: a cc_toolchain whose compiler and archiver are shim, in a Bazel workspace.

Writes DIR/shim_toolchain/ (the BUILD and cc_toolchain_config.bzl of toolchains/bazel/,
a local.bzl with what it detects here, and the wrappers `gcc`, `ar` and `shim`) and a
`build:shim` block in DIR/.bazelrc, so that `bazel build --config=shim //...` builds
through shim. Re-running it rewrites only what changed and keeps the user's files.

Why the wrappers look as they do: Bazel runs a tool by its path relative to the
execroot, inside a sandbox whose environment is only PATH, PWD=/proc/self/cwd and
TMPDIR, and where every action is pid 2 of its own namespace. So a wrapper is a
direct launcher (`#!<this python> -IS`, never `/usr/bin/env python3`, which may be a
pyenv shim: +0.2 s per action) with the paths baked in: the interpreter,
site-packages, SHIM_TOOLCHAIN (no toolchain.toml is found by walking up from an
execroot) and SHIM_CACHE_DIR (there is no HOME, so without it every action would
parse TOML). Each is a default: `--action_env` wins. The ledger and the cache must
be writable in the sandbox, hence the `--sandbox_writable_path` lines.

With `--remote` the actions run on remote-execution workers that share nothing with
this machine but the action's inputs, so nothing may name a path of this checkout:
shim's package is copied to NAME/lib/shim (an input of every toolchain action, by the
BUILD's glob), the wrappers start with `#!<worker python> -IS` and find that copy
beside themselves, SHIM_TOOLCHAIN is NAME/toolchain.toml relative to the exec root,
mode is spawn (a worker deletes the outputs whose times an exec'd step's end is read
from), and the config adds no `--action_env` with a client path (it would enter every
action's cache key: two checkouts would share no cache entry).
"""

import os
import platform
import subprocess
import sys


from shim import __version__, admission, exit_status, host, hotpath, program, rundir, toolchain
from shim.config import layers
from shim.exit_status import ShimError
from shim.generators import launcher

PACKAGE = "shim_toolchain"
COPIED = ("BUILD", "cc_toolchain_config.bzl")      # from toolchains/bazel/, unchanged
WRAPPERS = ("gcc", "ar", "shim")                   # gcc: compile and link; shim: for genrules
OTHER_TOOLS = ("cpp", "dwp", "gcov", "ld", "nm", "objcopy", "objdump", "strip")
WORKSPACE_FILES = ("WORKSPACE", "WORKSPACE.bazel", "MODULE.bazel")
BEGIN = "# >>> shim bazel init >>>"
END = "# <<< shim bazel init <<<"
CPUS = {"x86_64": "k8", "amd64": "k8", "arm64": "aarch64"}   # machine -> Bazel's --cpu

TOOLCHAIN_TOML = """\
# shim's toolchain.toml for the Bazel actions of this workspace, written once by
# `shim bazel init` (it never overwrites it). Layered on the built-in preset;
# `SHIM_TOOLCHAIN=%s shim config show --origin` shows the result.
# Editing it re-runs the actions (it is an input of the toolchain's actions).
#
# [step.link]
# memory = "2GiB"          # expected peak of a link before shim has measured one
"""


REMOTE_PYTHON = "/usr/bin/python3"     # on the workers; --worker-python for another
LIB = "lib"                            # NAME/lib/shim: the copy of shim the remote actions run
_NOT_COPIED = ("__pycache__", "*.pyc", "_hotpath.bundle")   # differ by client Python: keys would too

_REMOTE = '''#!{python} -IS
# shim-launcher {version}, written by `shim bazel init --remote`: shim from {lib}/ beside this file
import sys
sys.dont_write_bytecode = True      # an input directory: nothing may appear in it
sp = (__file__.rpartition("/")[0] or ".") + "/{lib}"
'''


def write_all(directory, package=PACKAGE, toolchain_file=None, budget=None, bazelrc=None,
              remote=False, worker_python=None, worker_ledger=None) -> list:
    """Do `shim bazel init` (`--remote`: for remote execution); return the lines it prints."""
    ws = os.path.abspath(directory)
    if not any(os.path.isfile(os.path.join(ws, name)) for name in WORKSPACE_FILES):
        raise ShimError("%s is not a Bazel workspace (no %s)" % (ws, ", ".join(WORKSPACE_FILES)),
                        exit_status.USAGE)
    package = package.strip("/")
    if not package or package.startswith(".") or ".." in package.split("/") or ":" in package:
        raise ShimError("--package %r: expected a package path such as shim_toolchain" % package,
                        exit_status.USAGE)
    if budget:
        _check_budget(budget)
    if remote:
        if toolchain_file:
            raise ShimError("--toolchain: with --remote the actions read %s/toolchain.toml, an input of "
                            "theirs (edit that file)" % package, exit_status.USAGE)
        for option, path in (("--worker-python", worker_python), ("--worker-ledger", worker_ledger)):
            if path and not os.path.isabs(path):
                raise ShimError("%s %s: expected an absolute path on the workers" % (option, path),
                                exit_status.USAGE)
    elif worker_python or worker_ledger:
        raise ShimError("--worker-python and --worker-ledger need --remote", exit_status.USAGE)
    source = _source_dir()
    pkg = os.path.join(ws, package)
    out = []

    def show(action, path, note=""):
        out.append("%-9s %s%s" % (action, os.path.relpath(path, ws), note and "  (%s)" % note))

    for name in COPIED:
        with open(os.path.join(source, name)) as f:
            show(_write(os.path.join(pkg, name), f.read()), os.path.join(pkg, name))
    gcc = _find("gcc")
    if gcc is None:
        raise ShimError("no gcc on PATH: the toolchain's compiler is the gcc shim finds there",
                        exit_status.NOT_FOUND)
    includes = include_directories(gcc)
    local = os.path.join(pkg, "local.bzl")
    show(_write(local, local_bzl(_cpu(), includes, _tool_paths())), local,
         "%s, %d include directories" % (gcc, len(includes)))

    if remote:
        return out + _write_remote(ws, package, pkg, show, budget, bazelrc, worker_python, worker_ledger)
    lib = os.path.join(pkg, LIB, "shim")
    if os.path.isfile(os.path.join(lib, "__init__.py")):     # a copy --remote wrote: no longer an input
        import shutil
        shutil.rmtree(lib)
        show("removed", lib, "only --remote needs it")
    if toolchain_file:
        toml = os.path.abspath(toolchain_file)
        if not os.path.isfile(toml):
            raise ShimError("--toolchain %s: no such file" % toolchain_file, exit_status.CONFIG)
        show("using", toml)
    elif os.path.isfile(os.path.join(ws, toolchain.FILENAME)):
        toml = os.path.join(ws, toolchain.FILENAME)
        show("using", toml, "the workspace's own")
    else:
        toml = os.path.join(pkg, toolchain.FILENAME)
        if os.path.exists(toml):
            show("kept", toml, "yours to edit")
        else:
            show(_write(toml, TOOLCHAIN_TOML % toml), toml, "yours to edit")

    # The user's cache, not /tmp: a cache there that another user planted would name programs to run.
    cache = toolchain.cache_dir(dict(os.environ)) or os.path.join(rundir.ensure({}), "cache")
    ledger = os.path.join(ws, ".shim")
    for d in (cache, ledger):      # Bazel refuses a --sandbox_writable_path that does not exist
        host.makedirs(d, 0o700 if d == cache else 0o755)
    defaults = {"SHIM_TOOLCHAIN": toml, "SHIM_CACHE_DIR": cache}
    for name in WRAPPERS:
        path = os.path.join(pkg, name)
        show(_write(path, launcher.direct_text(env_defaults=defaults), 0o755), path,
             "%s %s" % (sys.executable, "-IS") if name == "gcc" else "")

    rc = os.path.abspath(bazelrc) if bazelrc else os.path.join(ws, ".bazelrc")
    lines = config_lines(package, ledger, cache, budget)
    show(_write(rc, with_block(_read(rc), lines)), rc, "build:shim")
    out.append("")
    out.append("build through shim:  bazel build --config=shim //...")
    out.append("then:                shim report -C %s   (the ledger is %s)" % (_rc_quote(ws), ledger))
    return out


def _write_remote(ws, package, pkg, show, budget, bazelrc, worker_python, worker_ledger) -> list:
    """The rest of `shim bazel init --remote`: toolchain.toml, shim's copy, wrappers, config."""
    toml = os.path.join(pkg, toolchain.FILENAME)
    if os.path.exists(toml):
        show("kept", toml, "yours to edit")
    else:
        show(_write(toml, TOOLCHAIN_TOML % os.path.join(package, toolchain.FILENAME)), toml, "yours to edit")
    own = os.path.join(ws, toolchain.FILENAME)
    if os.path.isfile(own):
        show("not used", own, "not an input of the actions: they read %s/%s" % (package, toolchain.FILENAME))
    lib = os.path.join(pkg, LIB, "shim")
    show(_copy_package(lib), lib, "shim %s, an input of every action" % __version__)
    python = worker_python or REMOTE_PYTHON
    bundle = os.path.join(lib, hotpath.BUNDLE_NAME)
    made = _worker_bundle(python, os.path.dirname(lib), bundle)
    show(made, bundle, "for %s" % python if made != "removed" else
         "no %s here to compile it for: remote actions import shim from source" % python)
    text = _REMOTE.format(python=python, version=__version__, lib=LIB)
    # Relative to the exec root, where every action runs; spawn: see the module docstring.
    text += "import posix\n" + "".join("posix.environ.setdefault(%r, %r)\n" % (k.encode(), v.encode()) for k, v in
                                       (("SHIM_MODE", "spawn"),
                                        ("SHIM_TOOLCHAIN", "%s/%s" % (package, toolchain.FILENAME))))
    for name in WRAPPERS:
        path = os.path.join(pkg, name)
        show(_write(path, text + launcher.BODY, 0o755), path, "%s -IS on the workers" % python if name == "gcc" else "")
    rc = os.path.abspath(bazelrc) if bazelrc else os.path.join(ws, ".bazelrc")
    lines = remote_config_lines(package, budget, worker_ledger)
    show(_write(rc, with_block(_read(rc), lines)), rc, "build:shim")
    return ["", "build remotely through shim:  bazel build --config=shim --remote_executor=grpc://HOST:PORT //...",
            "the workers need:             %s (Python 3.11+, or 3.9+ with tomli)" % python,
            "their ledger:                 %s" % (worker_ledger or "none (--worker-ledger DIR to keep one)")]


def remote_config_lines(package: str, budget=None, worker_ledger=None) -> list:
    """The `build:shim` lines of .bazelrc for remote execution: none names a client path."""
    lines = [
        "build:shim --crosstool_top=//%s:suite" % package,
        "build:shim --extra_toolchains=//%s:toolchain" % package,
        # PATH and the like from the client's shell would enter every action's cache key.
        "build:shim --incompatible_strict_action_env",
    ]
    if worker_ledger:
        lines.append("build:shim --action_env=SHIM_LEDGER=%s" % worker_ledger)
    if budget:
        lines.append("build:shim --action_env=SHIM_MEMORY_BUDGET=%s" % budget)
    return [" ".join(_rc_quote(word) for word in line.split(" ", 1)) for line in lines]


def _copy_package(dest: str) -> str:
    """Copy the running shim package to *dest* (what was there goes): "wrote", "updated" or
    "unchanged" (the same files with the same bytes)."""
    import shutil
    import shim
    src = os.path.dirname(os.path.abspath(shim.__file__))
    old = _files(dest) if os.path.isdir(dest) else None
    if old == _files(src):
        return "unchanged"
    if old is not None:
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    return "wrote" if old is None else "updated"


# Run by the workers' Python (here, when this machine has it too): the hot-path bundle
# (shim/hotpath.py) for that Python, as backend/shim_backend.py writes one into a wheel.
# PYTHONHASHSEED=0: set constants are marshalled in hash order, and the bytes are an action
# input: every checkout must write the same ones.
_BUNDLER = """
import importlib.util, marshal, sys
lib = sys.argv[1]
spec = importlib.util.spec_from_file_location("_shim_hotpath", lib + "/shim/hotpath.py")
hot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hot)
mods = []
for name in hot.MODULES:
    rel = "/".join(name.split(".")) + ("/__init__.py" if name == "shim" else ".py")
    with open(lib + "/" + rel, "rb") as f:
        mods.append((name, "/" + rel, compile(f.read(), rel, "exec", dont_inherit=True, optimize=2)))
boot = compile(hot.BOOT, "<shim boot>", "exec", dont_inherit=True)
sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER + marshal.dumps((boot, mods)))
"""


def _worker_bundle(python: str, lib: str, bundle: str) -> str:
    """Write *bundle* compiled by *python* from the copy of shim in *lib*: "wrote", "updated",
    "unchanged", or "removed" when *python* cannot be run here (a stale bundle must not stay)."""
    try:
        # Not -I, which would ignore PYTHONHASHSEED; cwd and PYTHONSAFEPATH keep stray modules out.
        result = subprocess.run([python, "-S", "-s", "-B", "-c", _BUNDLER, lib], cwd=lib, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env={"PYTHONHASHSEED": "0", "PYTHONSAFEPATH": "1"}, timeout=120)
        data = result.stdout if result.returncode == 0 else b""
    except (OSError, subprocess.SubprocessError):
        data = b""
    if not data:
        if os.path.exists(bundle):
            os.remove(bundle)
        return "removed"
    try:
        with open(bundle, "rb") as f:
            if f.read() == data:
                return "unchanged"
        old = "updated"
    except FileNotFoundError:
        old = "wrote"
    host.replace_file(bundle, data, 0o644)
    return old


def _files(root: str) -> dict:
    """{path below *root*: bytes} of the files a copy of shim's package keeps."""
    import fnmatch
    found = {}
    for d, dirs, names in os.walk(root):
        dirs[:] = [n for n in dirs if not any(fnmatch.fnmatch(n, p) for p in _NOT_COPIED)]
        for n in names:
            if not any(fnmatch.fnmatch(n, p) for p in _NOT_COPIED):
                with open(os.path.join(d, n), "rb") as f:
                    found[os.path.relpath(os.path.join(d, n), root)] = f.read()
    return found


def config_lines(package: str, ledger: str, cache: str, budget=None) -> list:
    """The `build:shim` lines of .bazelrc."""
    lines = [
        "build:shim --crosstool_top=//%s:suite" % package,
        # Used instead when cc toolchain resolution is on (--incompatible_enable_cc_toolchain_resolution).
        "build:shim --extra_toolchains=//%s:toolchain" % package,
        "build:shim --action_env=SHIM_LEDGER=%s" % ledger,
        # The sandbox mounts everything else read-only; these must exist (shim bazel init makes them).
        "build:shim --sandbox_writable_path=%s" % ledger,
        "build:shim --sandbox_writable_path=%s" % cache,
    ]
    if budget:
        lines.append("build:shim --action_env=SHIM_MEMORY_BUDGET=%s" % budget)
    return [" ".join(_rc_quote(word) for word in line.split(" ", 1)) for line in lines]


def _rc_quote(word: str) -> str:
    """A .bazelrc word: Bazel splits rc lines as a shell would (paths with spaces)."""
    import shlex
    return shlex.quote(word) if any(c.isspace() or c in "'\"\\" for c in word) else word


def with_block(text: str, lines: list) -> str:
    """*text* (a .bazelrc) with shim's block replaced, or appended; nothing else changes."""
    block = "\n".join([BEGIN + " (re-running `shim bazel init` rewrites this block)"] + lines + [END]) + "\n"
    start = text.find(BEGIN)
    end = text.find(END, start)
    if start >= 0 and end >= 0:
        stop = text.find("\n", end)
        return text[:start] + block + (text[stop + 1:] if stop >= 0 else "")
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text.strip() else "") + block


def include_directories(gcc: str) -> list:
    """The built-in include directories of *gcc* for C and C++, as it prints them
    (`-E -v`) and resolved (Bazel compares the paths in .d files with these)."""
    found = []
    for lang in ("c", "c++"):
        try:
            result = subprocess.run([gcc, "-E", "-x", lang, "-", "-v"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    env=dict(os.environ, LC_ALL="C"), timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise ShimError("cannot run %s -E -v: %s" % (gcc, e), exit_status.OS_ERROR) from None
        inside = False
        for line in result.stderr.splitlines():
            if line.startswith("#include <...> search starts here:"):
                inside = True
            elif line.startswith("End of search list."):
                inside = False
            elif inside and line.startswith(" "):
                path = line.strip().split(" (")[0]     # clang: "/path (framework directory)"
                for p in (os.path.normpath(path), os.path.realpath(path)):
                    if p not in found:
                        found.append(p)
    if not found:
        raise ShimError("%s -E -v printed no include directories" % gcc, exit_status.OS_ERROR)
    return found


def local_bzl(cpu: str, includes: list, tools: dict) -> str:
    def items(values):
        return "".join("    %s,\n" % _starlark(v) for v in values)

    return ('"""This machine\'s compiler facts, written by `shim bazel init` (re-run it after\n'
            'changing compilers rather than editing this file)."""\n\n'
            "CPU = %s\n\n"
            "# The compiler's built-in include directories (`gcc -E -v`).\n"
            "INCLUDE_DIRECTORIES = [\n%s]\n\n"
            "# The tools Bazel may call other than gcc and ar (which are the shim wrappers).\n"
            "TOOL_PATHS = {\n%s}\n"
            % (_starlark(cpu), items(includes),
               "".join("    %s: %s,\n" % (_starlark(k), _starlark(v)) for k, v in sorted(tools.items()))))


def _starlark(s: str) -> str:
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def _source_dir() -> str:
    presets = layers.preset_dir()
    d = os.path.join(presets, "bazel") if presets else ""
    if not all(os.path.isfile(os.path.join(d, name)) for name in COPIED):
        raise ShimError("shim's Bazel toolchain files are missing (%s): reinstall shim" % (d or "toolchains/bazel"),
                        exit_status.INTERNAL)
    return d


def _self_ids() -> frozenset:
    ids = set()
    for path in (sys.argv[0], os.path.join(os.path.dirname(sys.executable), "shim")):
        try:
            st = os.stat(path)
            ids.add((st.st_dev, st.st_ino))
        except (OSError, ValueError):
            pass
    return frozenset(ids)


def _find(name: str):
    return program.find_on_path(name, os.environ.get("PATH", ""), _self_ids())


def _cpu() -> str:
    machine = platform.machine().lower()
    return CPUS.get(machine, machine)


def _tool_paths() -> dict:
    return {name: _find(name) or "/usr/bin/" + name for name in OTHER_TOOLS}


def _check_budget(text: str) -> None:
    admission.budget({}, {}, option=text)        # a bad request: one line naming --budget, exit 2


def _read(path: str) -> str:
    try:
        with open(path, newline="") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _write(path: str, text: str, mode: int = None) -> str:
    """Write *text* to *path* atomically unless it is already there: "wrote", "updated" or
    "unchanged". *mode* None keeps an existing file's mode (and a symlink's target)."""
    path = os.path.realpath(path)
    try:
        with open(path, newline="") as f:
            same = f.read() == text
        old_mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        same, old_mode = False, None
    mode = mode if mode is not None else old_mode if old_mode is not None else 0o644
    if same:
        if old_mode != mode:
            os.chmod(path, mode)
        return "unchanged"
    host.makedirs(os.path.dirname(path))
    host.replace_file(path, text.encode("utf-8", "surrogateescape"), mode)
    os.chmod(path, mode)                 # exactly: a wrapper must stay executable whatever the umask
    return "wrote" if old_mode is None else "updated"
