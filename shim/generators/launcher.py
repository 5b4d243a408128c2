"""The `shim` launchers: the script pip installs, and the faster ones shim writes.

pip rewrites a script's `#!python` line to the bare interpreter path and drops any
flags, so an installed script cannot ask for `-I -S`, and `site` plus `os` cost
~3 ms on every build step (BENCHMARKS.md). Two launchers share one body (BODY):

- bin/shim, the one pip installs: `#!python`, which pip turns into the venv's
  interpreter without flags; its first run adds `-IS` to that line where it may
  (no /bin/sh in between: dash drops environment names like DOT.NAME).
- direct launchers written by `shim launcher DIR` and by `shim build` (into
  .shim/bin, first on ninja's PATH): `#!<python> -IS` with the paths baked in,
  no shell at all.

Both load the precompiled hot path from shim/_hotpath.bundle (shim/hotpath.py).
"""

import os
import sys

from shim import __version__, host, hotpath

# The cyclic garbage collector goes off before the bundle is read: unmarshalling it and
# creating its modules ran three gen-0 collections, ~50-90 us each in a new process, and a
# step that execs lives a millisecond and leaves no cycles worth finding. shim/step.py
# and shim/entry.py turn it back on for what stays (a spawned step, the CLI).
BODY = '''import gc, sys
gc.disable()
try:
    with open(sp + "/shim/_hotpath.bundle", "rb") as f:
        b = f.read()
except OSError:
    b = b""
if b[:4] == sys.modules["_frozen_importlib_external"].MAGIC_NUMBER:
    boot, mods = __import__("marshal").loads(b[4:])
    exec(boot, {"sp": sp, "mods": mods})
sys.path.append(sp)
try:
    from shim.entry import main
except ImportError:  # an editable or --user install: let site find shim
    import site  # noqa: F401
    from shim.entry import main
sys.exit(main())
'''

_DIRECT = '''#!{python} -IS
# shim-launcher {version}, written by `shim launcher`: see BUILD.md, "Launchers"
sp = {site_packages!r}
'''


def site_packages() -> str:
    """The directory holding the running shim package."""
    import shim
    return os.path.dirname(os.path.dirname(os.path.abspath(shim.__file__)))


def direct_text(python: str = None, packages: str = None, env_defaults: dict = None) -> str:
    """A direct launcher; *env_defaults* are variables it sets when the caller has not
    (a Bazel action's environment is only PATH, PWD and TMPDIR: see shim/generators/bazel.py)."""
    text = _DIRECT.format(python=python or sys.executable, version=__version__,
                          site_packages=packages or site_packages())
    if env_defaults:
        # posix.environ, not os.environ: shim reads it at start (host_posix.environ)
        text += "import posix\n" + "".join("posix.environ.setdefault(%r, %r)\n" % (k.encode(), v.encode())
                                           for k, v in sorted(env_defaults.items()))
    return text + BODY


def write(directory: str, name: str = "shim") -> str:
    """Write (atomically, only if different) a direct launcher *directory*/*name*; OSError
    if it cannot be written."""
    text = direct_text()
    path = os.path.join(directory, name)
    try:
        if host.read_regular_file(path) == text.encode():     # a FIFO there must not hang `shim build`
            return path
    except OSError:
        pass
    host.makedirs(os.path.abspath(directory))
    host.replace_file(path, text.encode(), 0o755)
    return path


def bundled() -> bool:
    """Whether the running install has a hot-path bundle for this interpreter."""
    import importlib.util
    path = os.path.join(site_packages(), "shim", hotpath.BUNDLE_NAME)
    try:
        with open(path, "rb") as f:
            return f.read(4) == importlib.util.MAGIC_NUMBER
    except OSError:
        return False
