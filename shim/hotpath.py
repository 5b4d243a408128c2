"""The hot path's import budget, declared once, and the bundle that loads it fast.

Every build step starts a Python; on this project's machines each module found
through the import system costs ~0.1 ms (a handful of syscalls) and `os`, `re`,
`subprocess`, `tomllib`... cost 1.5 to 20 ms. So the step path imports only the
modules below, and a wheel carries them precompiled in one file,
`shim/_hotpath.bundle` (written by backend/shim_backend.py), which the launcher
reads with one open(): ~0.2 ms instead of ~2.5 ms. tests/hotpath_test.py runs a
real step under `-X importtime` and fails on anything not listed here.
"""

# shim's modules on the exec path, in the order they must be executed (each only
# imports modules before it). The bundle holds exactly these.
MODULES = (
    "shim",
    "shim.exit_status",
    "shim.host_posix",
    "shim.host",
    "shim.digest",
    "shim.rundir",
    "shim.size",
    "shim.budget",
    "shim.pattern",
    "shim.rsp",
    "shim.rustc",
    "shim.golang",
    "shim.family",
    "shim.args",
    "shim.program",
    "shim.rewrite",
    "shim.ledger",
    "shim.toolchain",
    "shim.estimates",
    "shim.admission",
    "shim.watcher",
    "shim.oom",
    "shim.step",
    "shim.commands",
    "shim.entry",
)

# Standard-library modules the exec path may import (beyond what `python -I -S -c
# pass` already has loaded). All are built into the interpreter: no file access.
STDLIB = frozenset(("errno", "gc", "marshal", "posix", "sys", "time", "_signal"))

# What spawn mode adds: os.wait4 builds its rusage result with `resource`.
SPAWN_STDLIB = frozenset(("resource",))

# Never on the hot path (the list, plus what would pull them in).
FORBIDDEN = frozenset(("click", "tomllib", "tomli", "subprocess", "json", "sqlite3", "dataclasses",
                       "re", "typing", "os", "signal", "enum", "shim.config", "shim.cli", "shim.reports",
                       "shim.generators", "shim.driver"))

# What lies directly in shim/ besides MODULES: the rest of the package lives in sub-packages
# by concern (config, cli, driver, reports, generators), so the tree shows the hot path.
# tests/layout_test.py holds the two equal.
ALSO_TOP_LEVEL = ("hotpath", "__main__", "host_windows")

BUNDLE_NAME = "_hotpath.bundle"

# Run by the launcher with globals sp (site-packages) and mods [(name, path, code)]:
# creates the modules as the import system would and runs shim. Returns (so the
# launcher falls back to plain imports) when SHIM_DEBUG asks for real tracebacks.
# The launcher has turned the cyclic collector off (shim/generators/launcher.py).
BOOT = """
import posix, sys
if b"SHIM_DEBUG" not in posix.environ:
    M = type(sys)
    for name, path, code in mods:
        m = M(name)
        m.__file__ = sp + path
        m.__package__ = "shim"
        if name == "shim":
            m.__path__ = [sp + "/shim"]
        sys.modules[name] = m
        exec(code, m.__dict__)
        if name != "shim":
            setattr(sys.modules["shim"], name[5:], m)
    sys.path.append(sp)
    raise SystemExit(sys.modules["shim.entry"].main())
"""
