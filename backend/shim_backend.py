"""PEP 517 build backend: setuptools, plus the hot-path bundle in every wheel.

Before setuptools builds a wheel, compile the modules listed in shim/hotpath.py
(MODULES) into shim/_hotpath.bundle: the interpreter's magic number, then one
marshal blob (boot code, [(module, path under site-packages, code)]). The
launcher loads the whole step path from it with a single open() instead of a
dozen imports (see BUILD.md, "Launchers"). The magic number ties the bundle to
the Python that built the wheel; any other Python falls back to plain imports.
Editable installs get no bundle: their code must be the checkout's.
"""

import importlib.util
import marshal
import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook unchanged)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hotpath():
    path = os.path.join(_ROOT, "shim", "hotpath.py")
    spec = importlib.util.spec_from_file_location("_shim_hotpath", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_bundle(root: str = _ROOT) -> str:
    """Compile the hot-path modules of the checkout at *root*; return the bundle's path."""
    hot = _hotpath()
    mods = []
    for name in hot.MODULES:
        parts = name.split(".")
        rel = "/".join(parts) + ("/__init__.py" if name == "shim" else ".py")
        with open(os.path.join(root, *rel.split("/")), "rb") as f:
            source = f.read()
        mods.append((name, "/" + rel, compile(source, rel, "exec", dont_inherit=True, optimize=2)))
    boot = compile(hot.BOOT, "<shim boot>", "exec", dont_inherit=True)
    out = os.path.join(root, "shim", hot.BUNDLE_NAME)
    with open(out + ".tmp", "wb") as f:
        f.write(importlib.util.MAGIC_NUMBER + marshal.dumps((boot, mods)))
    os.replace(out + ".tmp", out)
    return out


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    write_bundle()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    stale = os.path.join(_ROOT, "shim", _hotpath().BUNDLE_NAME)
    if os.path.exists(stale):
        os.remove(stale)
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
