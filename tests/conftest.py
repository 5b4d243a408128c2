"""Shared fixtures: the installed shim, an isolated environment, fake tools.

Two kinds of tests. Pure ones (no marker) import shim from this checkout and run no
process of shim's: `python -m pytest -m "not e2e"` runs them from a plain checkout, with
nothing installed, in seconds. End-to-end ones (marker `e2e`) run the `shim` that pip
installed beside this interpreter (README's test command installs it first), so they
exercise the launcher and the hot-path bundle exactly as a build would, with the real
gcc, ninja, CMake, Bazel, Chromium where they are about them. A test is e2e if it is
marked so, or if it asks for a fixture that only makes sense with processes (E2E_FIXTURES);
run_shim refuses to run in a test that is neither, so the marker cannot be forgotten.
"""

import json
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
sys.path.insert(0, str(REPO))      # pure tests: the checkout's modules (e2e ones check it is installed)

# Fixtures that set up real processes, hence tests that use them are e2e.
E2E_FIXTURES = frozenset(("env", "example", "full_disk", "other_user", "alloc", "scene"))
_E2E_RUNNING = [False]


@pytest.hookimpl(tryfirst=True)         # before -m "not e2e" deselects by the marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session):
    if any(item.get_closest_marker("e2e") for item in session.items):
        _check_installed()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Before any fixture (module-scoped ones too) is set up for this test.
    _E2E_RUNNING[0] = item.get_closest_marker("e2e") is not None


def _check_installed():
    """The e2e tests run the installed shim: it must be there, and be this checkout."""
    if not SHIM.exists():
        raise pytest.UsageError("%s is missing: install shim first (pip install '.[test]'), or run only "
                                "the pure tests (-m 'not e2e')" % SHIM)
    installed = Path(subprocess.run([sys.executable, "-I", "-c", "import shim; print(shim.__file__)"],
                                    stdout=subprocess.PIPE, text=True).stdout.strip()).parent
    if installed == REPO / "shim":
        return    # an editable install: the checkout is what runs
    stale = [str(p.relative_to(REPO / "shim")) for p in sorted((REPO / "shim").rglob("*.py"))
             if not (installed / p.relative_to(REPO / "shim")).exists()
             or (installed / p.relative_to(REPO / "shim")).read_bytes() != p.read_bytes()]
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
    """Run `shim ARGS` and capture text output (e2e tests only)."""
    assert _E2E_RUNNING[0], "a test that runs shim must be marked e2e (pytest.mark.e2e)"
    return subprocess.run([str(shim)] + [str(a) for a in args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def write_tool(directory: Path, name: str, body: str, shebang: str = "#!/bin/sh") -> Path:
    """A fake tool: an executable script *name* in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(shebang + "\n" + textwrap.dedent(body).lstrip("\n"))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def last_step(build_dir: Path) -> dict:
    """The newest step record (`step`, or an exec'd step's `start`) in the ledger of
    *build_dir*: the pause watcher's `usage` samples may come after it."""
    lines = (Path(build_dir) / ".shim" / "ledger-v1.jsonl").read_text().splitlines()
    return next(r for r in map(json.loads, reversed(lines)) if r.get("rec") in ("step", "start"))


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


@pytest.fixture
def full_disk(tmp_path):
    """A directory on a tiny tmpfs filled to the last byte: writes there fail with ENOSPC
    (a real full disk, where a symlink to /dev/full would now be refused as a symlink)."""
    d = tmp_path / "full"
    d.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(d)],
                             stderr=subprocess.PIPE, text=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs (needs root): %s" % mounted.stderr.strip())
    try:
        fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass                          # ENOSPC: full
        finally:
            os.close(fd)
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)


OTHER_USER = "shim-other"


@pytest.fixture(scope="session")
def other_user():
    """(uid, gid) of a second real user on this machine, created with useradd when we are
    root: the neighbour who plants files in /tmp. Skips where that cannot be done."""
    import pwd
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second user (useradd)")
    try:
        entry = pwd.getpwnam(OTHER_USER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               OTHER_USER], stderr=subprocess.PIPE, text=True)
        if made.returncode != 0:
            pytest.skip("cannot create a second user: %s" % made.stderr.strip())
        entry = pwd.getpwnam(OTHER_USER)
    return entry.pw_uid, entry.pw_gid


def plant(path: Path, user, directory: bool = False, mode: int = None, text: str = "") -> Path:
    """Create *path* as another user's file (or directory) would be: owned by *user*."""
    if directory:
        path.mkdir(mode=mode if mode is not None else 0o755)
    else:
        path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    os.chown(path, *user, follow_symlinks=False)
    return path


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


@pytest.fixture
def no_hang():
    """Fail a test, rather than hang the run, when what it calls blocks for 10 s (a FIFO
    opened for reading waits for a writer forever)."""
    import signal

    def expired(signum, frame):
        pytest.fail("blocked for 10 s")     # not an OSError: the code under test would catch that

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
