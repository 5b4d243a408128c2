"""Shared fixtures: the installed shim, an isolated environment, fake tools.

Tests run the `shim` that pip installed beside this interpreter (README's test
command installs it first), so they exercise the launcher and the hot-path bundle
exactly as a build would.
"""

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SHIM = BIN / "shim"


def pytest_configure(config):
    if not SHIM.exists():
        raise pytest.UsageError("%s is missing: install shim first (pip install '.[test]')" % SHIM)
    import shim
    installed = Path(subprocess.run([sys.executable, "-I", "-c", "import shim; print(shim.__file__)"],
                                    stdout=subprocess.PIPE, text=True).stdout.strip()).parent
    if installed == Path(shim.__file__).parent:
        return    # an editable install: the checkout is what runs
    stale = [p.name for p in sorted((REPO / "shim").glob("*.py"))
             if not (installed / p.name).exists() or (installed / p.name).read_bytes() != p.read_bytes()]
    stale += [p.name for p in sorted((REPO / "toolchains").glob("*.toml"))
              if (installed / "toolchains" / p.name).read_bytes() != p.read_bytes()]
    if stale:
        raise pytest.UsageError("the installed shim (%s) differs from the checkout in %s: "
                                "reinstall (pip install '.[test]')" % (installed, ", ".join(stale)))


@pytest.fixture
def env(tmp_path):
    """An environment with no SHIM_* settings and a private HOME (cache, user config)."""
    home = tmp_path / "home"
    home.mkdir()
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("SHIM_", "XDG_", "NINJA_", "MAKEFLAGS", "CCACHE_"))}
    e["HOME"] = str(home)
    run = tmp_path / "run"           # memory and CPU pools of this test alone
    run.mkdir(mode=0o700)
    e["XDG_RUNTIME_DIR"] = str(run)
    e["PATH"] = "%s%s%s" % (BIN, os.pathsep, os.environ.get("PATH", ""))
    return e


def run_shim(args, cwd=None, env=None, shim=SHIM, **kw):
    """Run `shim ARGS` and capture text output."""
    return subprocess.run([str(shim)] + [str(a) for a in args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def write_tool(directory: Path, name: str, body: str, shebang: str = "#!/bin/sh") -> Path:
    """A fake tool: an executable script *name* in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(shebang + "\n" + textwrap.dedent(body).lstrip("\n"))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    path.chmod(0o644)
    return path


@pytest.fixture
def example(tmp_path):
    """A private copy of examples/ninja (without build outputs)."""
    dest = tmp_path / "example"
    shutil.copytree(REPO / "examples" / "ninja", dest,
                    ignore=shutil.ignore_patterns("build", ".ninja_*", ".shim"))
    return dest


def one_error_line(result, status: int, *fragments: str) -> str:
    """Assert *result* failed with *status* and exactly one `shim: error:` line; return it."""
    lines = result.stderr.splitlines()
    assert result.returncode == status, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shim: error: "), lines
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
