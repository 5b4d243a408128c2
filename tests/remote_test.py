"""shim's Bazel toolchain under remote execution, against a real Remote Execution API service.

BuildGrid (PyPI `buildgrid` 0.9.1, in the git-ignored .venv-buildgrid that .ci/run makes
from pyenv's Python 3.13) with its SQL scheduler on a PostgreSQL started here on
127.0.0.1, the project's own worker (tests/remote_worker.py) and Bazel 4.2 (Debian's
bazel-bootstrap) with --remote_executor. The worker runs in a mount namespace where the
client's checkouts, HOME and output bases, and the client's shim install (.venv), are
empty tmpfs: an action that needs anything but its inputs and a Python 3 fails there.
Everything started here is stopped by its PID; a missing piece skips with the reason.

One module fixture does the builds (Bazel, BuildGrid and PostgreSQL take seconds to
start), the tests read them:

1. checkout `one`, output base 1, remote cache not read: every action runs on the worker;
2. checkout `two` (another path), output base 2: every action is a remote cache hit;
3. checkout `two`, output base 3, cache not read: the worker runs them again, and shim
   admits them at what build 1 measured.
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, one_error_line, run_shim

pytestmark = pytest.mark.e2e
from shim.reports import records

FIXTURE = REPO / "tests" / "fixtures" / "bazel"
GRID = REPO / ".venv-buildgrid"
BAZEL = shutil.which("bazel")
TARGET = "//main:hello"          # a C library (compile, archive) and a C++ program (compile, link)

SERVER_YML = """\
server:
  - !channel
    address: "127.0.0.1:%(port)d"
    insecure-mode: true
connections:
  - !sql-connection &sql
    connection-string: postgresql://bgd@127.0.0.1:%(pg)d/bgd
storages:
  - !lru-storage &cas
    size: 512M
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 1024
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    bot-session-keepalive-timeout: 60
    assigners:
      - !priority-age-assigner
        interval: 0.2
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !execution
        scheduler: *scheduler
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"""


def _missing() -> str:
    """Why this test cannot run here, or ''."""
    if BAZEL is None:
        return "bazel is not installed (.ci/run installs bazel-bootstrap)"
    if not (GRID / "bin" / "bgd").exists():
        return "no BuildGrid in %s (.ci/run creates it from pyenv's Python 3.13)" % GRID
    if _pg_bin() is None:
        return "no PostgreSQL initdb (.ci/run installs postgresql)"
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "the worker's mount namespace needs root and unshare"
    if not os.access("/usr/bin/python3", os.X_OK):
        return "no /usr/bin/python3 for the remote actions"
    if subprocess.run(["/usr/bin/python3", "-I", "-c", "import tomllib"], stderr=subprocess.DEVNULL).returncode:
        return "the remote actions' /usr/bin/python3 is older than 3.11 (no tomllib)"
    return ""


def _pg_bin():
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(pid: int, sig=signal.SIGTERM, wait: float = 30) -> None:
    """Signal *pid* and wait (up to *wait* s) until it is gone; then SIGKILL."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:         # not our child (the postmaster): poll for it
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


class Grid:
    """PostgreSQL, the BuildGrid server and the worker; stop() ends them by PID."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.pids = []          # (pid, signal) in the order to stop them, last first
        self.pg_dir = None

    def start(self, hidden: list) -> None:
        self._postgres()
        self._server()
        self._worker(hidden)

    def _postgres(self) -> None:
        pg = _pg_bin()
        # initdb refuses root; the postgres user must reach its directory: not below tmp_path (0700)
        self.pg_dir = Path(tempfile.mkdtemp(prefix="shim-remote-pg-"))
        user = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(self.pg_dir, user)
        as_user = {"user": user} if os.geteuid() == 0 else {}
        data, log = self.pg_dir / "data", self.pg_dir / "log"
        self.pg_port = _free_port()
        run = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, **as_user)
        for argv in ([pg / "initdb", "-D", data, "-A", "trust", "-U", "bgd", "--no-sync"],
                     [pg / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "120", "start", "-o",
                      "-h 127.0.0.1 -p %d -k %s -F" % (self.pg_port, self.pg_dir)]):
            result = subprocess.run([str(a) for a in argv], cwd=self.pg_dir, **run)
            if argv[0].name == "pg_ctl":
                try:
                    self.pids.append((int((data / "postmaster.pid").read_text().split()[0]), signal.SIGINT))
                except (OSError, ValueError, IndexError):
                    pass
            assert result.returncode == 0, result.stdout + _tail(log)
        result = subprocess.run([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "bgd",
                                 "bgd"], **run)
        assert result.returncode == 0, result.stdout
        url = "postgresql://bgd@127.0.0.1:%d/bgd" % self.pg_port
        result = subprocess.run([str(GRID / "bin" / "bgd"), "migrate", "apply", url], cwd=self.tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:]

    def _server(self) -> None:
        self.port = _free_port()
        config = self.tmp / "server.yml"
        config.write_text(SERVER_YML % {"port": self.port, "pg": self.pg_port})
        self.server_log = self.tmp / "server.log"
        with open(self.server_log, "w") as log:
            server = subprocess.Popen([str(GRID / "bin" / "bgd"), "server", "start", str(config)], cwd=self.tmp,
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.pids.append((server.pid, signal.SIGTERM))
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, "bgd server exited %s:\n%s" % (server.returncode, _tail(self.server_log))
            assert time.monotonic() < deadline, "bgd server not listening after 300 s:\n" + _tail(self.server_log)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)

    def _worker(self, hidden: list) -> None:
        self.root, self.log = self.tmp / "worker" / "root", self.tmp / "worker" / "executions.jsonl"
        self.root.mkdir(parents=True)
        self.log.touch()
        self.worker_log = self.tmp / "worker" / "worker.log"
        mounts = " && ".join("mount -t tmpfs tmpfs %s" % shlex.quote(str(d)) for d in hidden)
        argv = [str(GRID / "bin" / "python"), "-u", str(REPO / "tests" / "remote_worker.py"),
                "--server", "127.0.0.1:%d" % self.port, "--root", str(self.root), "--log", str(self.log)]
        with open(self.worker_log, "w") as log:
            worker = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                       "%s && exec %s" % (mounts, " ".join(shlex.quote(a) for a in argv))],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
        self.pids.append((worker.pid, signal.SIGTERM))

    def executions(self) -> list:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        for pid, sig in reversed(self.pids):
            _stop(pid, sig)
        if self.pg_dir:
            shutil.rmtree(self.pg_dir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class Client:
    """Checkouts of the fixture workspace, each with `shim bazel init --remote` run in it."""

    def __init__(self, tmp: Path, grid: Grid, ledger: Path, run: Path):
        self.tmp, self.grid, self.ledger, self.run = tmp, grid, ledger, run
        home = tmp / "home"
        home.mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SHIM_", "XDG_", "NINJA_", "MAKEFLAGS", "CCACHE_"))}
        self.env["HOME"] = str(home)
        self.inits = {}

    def checkout(self, name: str) -> Path:
        ws = self.tmp / name
        shutil.copytree(FIXTURE, ws)
        self.inits[name] = run_shim(["bazel", "init", "--remote", "--worker-ledger", str(self.ledger), ws],
                                    env=self.env)
        assert self.inits[name].returncode == 0, self.inits[name].stderr
        return ws

    def build(self, ws: Path, output_base: str, *flags: str) -> "Build":
        before = len(self.grid.executions())
        argv = [BAZEL, "--batch", "--output_base=%s" % (self.tmp / output_base), "build", "--config=shim",
                "--remote_executor=grpc://127.0.0.1:%d" % self.grid.port, "--spawn_strategy=remote",
                "--remote_timeout=120", "--color=no", "--curses=no",
                # The worker's own runtime directory (admission), the same for every checkout.
                "--action_env=XDG_RUNTIME_DIR=%s" % self.run] + list(flags) + [TARGET]
        result = subprocess.run(argv, cwd=ws, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, timeout=900)
        assert result.returncode == 0, "%s\n--- worker:\n%s" % (result.stderr[-4000:], _tail(self.grid.worker_log))
        return Build(ws, result, self.grid.executions()[before:], records.load(str(self.ledger), which="all")[1])


class Build:
    def __init__(self, ws, result, executions, steps):
        self.ws, self.result, self.executions, self.steps = ws, result, executions, steps

    def remote(self) -> int:
        """The "N remote" of Bazel's process summary (not "N remote cache hit")."""
        found = re.search(r"(\d+) remote(?! cache hit)", self.result.stderr)
        return int(found.group(1)) if found else 0


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    why = _missing()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("remote")
    client_dir, worker_dir = tmp / "client", tmp / "worker"
    ledger, run = worker_dir / "ledger", worker_dir / "run"
    ledger.mkdir(parents=True)
    run.mkdir(mode=0o700)
    grid = Grid(tmp)
    try:
        # The worker sees none of the client's files, nor the client's shim install.
        grid.start(hidden=[_mkdir(client_dir)] + [d for d in [REPO / ".venv"] if d.is_dir()])
        client = Client(client_dir, grid, ledger, run)
        one, two = client.checkout("one"), client.checkout("two")
        builds = {"first": client.build(one, "ob1", "--noremote_accept_cached")}
        builds["first"].steps_now = list(builds["first"].steps)
        builds["cached"] = client.build(two, "ob2")
        builds["again"] = client.build(two, "ob3", "--noremote_accept_cached")
        builds["client"] = client
        builds["ledger"] = ledger
        yield builds
    finally:
        grid.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _by_kind(steps) -> dict:
    kinds = {}
    for s in steps:
        kinds.setdefault(s["kind"], []).append(s)
    return kinds


def test_a_remote_build_runs_compiles_archive_and_link_through_shim_on_the_worker(remote):
    first = remote["first"]
    assert first.remote() == 4, first.result.stderr[-3000:]
    assert [e["exit"] for e in first.executions] == [0] * 4
    assert {e["argv0"] for e in first.executions} == {"shim_toolchain/gcc", "shim_toolchain/ar"}
    kinds = _by_kind(first.steps_now)
    assert sorted((k, len(v)) for k, v in kinds.items()) == [("archive", 1), ("compile", 2), ("link", 1)]
    assert all(s["exit"] == 0 and s["mode"] == "spawn" and s["rss"] for s in first.steps_now)
    program = subprocess.run([str(first.ws / "bazel-bin" / "main" / "hello")], stdout=subprocess.PIPE, text=True)
    assert program.returncode == 0 and "hello" in program.stdout


def test_the_worker_records_paths_relative_to_its_exec_root(remote):
    first = remote["first"]
    for s in first.steps_now:
        assert s["cwd"] == "." and s["out"][0].startswith("bazel-out/"), s
    assert sorted(s["out"][0] for s in first.steps_now) == [
        "bazel-out/k8-fastbuild/bin/main/_objs/greet/greet.pic.o",
        "bazel-out/k8-fastbuild/bin/main/_objs/hello/hello.pic.o",
        "bazel-out/k8-fastbuild/bin/main/hello", "bazel-out/k8-fastbuild/bin/main/libgreet.a"]


def test_another_checkout_gets_every_action_from_the_remote_cache(remote):
    cached = remote["cached"]
    assert cached.remote() == 0 and cached.executions == [], cached.result.stderr[-3000:]
    assert "4 remote cache hit" in cached.result.stderr, cached.result.stderr[-3000:]


def test_the_workers_ledger_reads_back_with_shim_report(remote, tmp_path):
    env = dict(remote["client"].env, SHIM_LEDGER=str(remote["ledger"]))
    result = run_shim(["report", "--json", "--all"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["steps"]
    assert sorted(s["kind"] for s in steps) == ["archive"] * 2 + ["compile"] * 4 + ["link"] * 2
    text = run_shim(["report", "--all"], cwd=tmp_path, env=env)
    assert text.returncode == 0 and "libgreet.a" in text.stdout, text.stdout + text.stderr


def test_no_action_names_a_path_of_the_client(remote):
    client = remote["client"]
    for name in ("one", "two"):
        ws = client.tmp / name
        texts = [(ws / ".bazelrc").read_text()] + [(ws / "shim_toolchain" / n).read_text() for n in ("gcc", "ar")]
        assert not any(str(client.tmp) in t or str(REPO) in t for t in texts)


def test_a_build_from_another_output_base_is_admitted_at_the_first_builds_peaks(remote):
    first, again = remote["first"], remote["again"]
    assert again.remote() == 4, again.result.stderr[-3000:]
    measured = {s["out"][0]: s["rss"] for s in first.steps_now}      # on the worker, through exec-XXXX
    later = [s for s in again.steps if s["id"] not in {f["id"] for f in first.steps_now}]
    assert sorted(s["out"][0] for s in later) == sorted(measured)
    for s in later:
        assert s["src"] == "history" and s["est"] == measured[s["out"][0]], s
    assert not any(s["src"] in ("history", "build") for s in first.steps_now)    # the first knew nothing


# --- shim bazel init --remote, and a remote action's wrapper (no BuildGrid needed) ---------------


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="no /usr/bin/python3 (the default worker Python)")
def test_init_remote_writes_the_same_bytes_in_two_checkouts_and_no_path_of_either(tmp_path, env):
    checkouts = []
    for name in ("one", "two"):
        ws = tmp_path / name
        shutil.copytree(FIXTURE, ws)
        result = run_shim(["bazel", "init", "--remote", "--worker-ledger", "/var/lib/shim", ws], env=env)
        assert result.returncode == 0, result.stderr
        assert "shim_toolchain/lib/shim  (shim " in result.stdout and "/usr/bin/python3" in result.stdout
        checkouts.append(ws)
    one, two = (_files(ws / "shim_toolchain") for ws in checkouts)
    assert one == two
    assert (checkouts[0] / ".bazelrc").read_bytes() == (checkouts[1] / ".bazelrc").read_bytes()
    assert "lib/shim/step.py" in one and "lib/shim/toolchains/bazel/BUILD" in one
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in one)
    # The hot path precompiled by the workers' Python (here the same): the same bytes in both checkouts.
    bundle = one["lib/shim/_hotpath.bundle"]
    magic = subprocess.run(["/usr/bin/python3", "-I", "-c", "import importlib.util, sys; "
                            "sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER)"], stdout=subprocess.PIPE).stdout
    assert bundle[:4] == magic and str(tmp_path).encode() not in bundle
    for name in ("gcc", "ar", "shim"):
        text = one[name].decode()
        assert text.startswith("#!/usr/bin/python3 -IS\n")
        assert "b'SHIM_TOOLCHAIN', b'shim_toolchain/toolchain.toml'" in text and "b'SHIM_MODE', b'spawn'" in text
    rc = (checkouts[0] / ".bazelrc").read_text()
    assert "build:shim --incompatible_strict_action_env\n" in rc
    assert "build:shim --action_env=SHIM_LEDGER=/var/lib/shim\n" in rc
    for ws in checkouts:
        assert not any(str(tmp_path).encode() in data for data in _files(ws / "shim_toolchain").values())
        assert str(tmp_path) not in (ws / ".bazelrc").read_text() and not (ws / ".shim").exists()

    again = run_shim(["bazel", "init", "--remote", "--worker-ledger", "/var/lib/shim", checkouts[0],
                      "--worker-python", "/opt/python/bin/python3"], env=env)
    assert again.returncode == 0, again.stderr
    assert "unchanged shim_toolchain/lib/shim" in again.stdout and "kept      shim_toolchain/toolchain.toml" in again.stdout
    assert (checkouts[0] / "shim_toolchain" / "gcc").read_text().startswith("#!/opt/python/bin/python3 -IS\n")
    assert "removed   shim_toolchain/lib/shim/_hotpath.bundle  (no /opt/python/bin/python3 here" in again.stdout
    assert not (checkouts[0] / "shim_toolchain" / "lib" / "shim" / "_hotpath.bundle").exists()
    local = run_shim(["bazel", "init", checkouts[0]], env=env)       # back to local actions: no copy left
    assert local.returncode == 0 and "removed   shim_toolchain/lib/shim" in local.stdout, local.stderr
    assert not (checkouts[0] / "shim_toolchain" / "lib" / "shim").exists()


def test_init_remote_refuses_options_that_cannot_work_on_a_worker(tmp_path, env):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    (tmp_path / "t.toml").write_text("")
    one_error_line(run_shim(["bazel", "init", "--remote", "--toolchain", tmp_path / "t.toml", ws], env=env), 2,
                   "--toolchain", "shim_toolchain/toolchain.toml")
    one_error_line(run_shim(["bazel", "init", "--remote", "--worker-python", "python3", ws], env=env), 2,
                   "--worker-python python3", "absolute")
    one_error_line(run_shim(["bazel", "init", "--worker-ledger", "/var/lib/shim", ws], env=env), 2, "--remote")
    assert "--remote" in run_shim(["bazel", "init", "--help"], env=env).stdout


def test_init_remote_says_that_the_workspaces_own_toolchain_toml_is_not_what_remote_actions_read(tmp_path, env):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    (ws / "toolchain.toml").write_text("[step.link]\nmemory = \"2GiB\"\n")
    result = run_shim(["bazel", "init", "--remote", ws], env=env)
    assert result.returncode == 0, result.stderr
    assert "not used  toolchain.toml  (not an input of the actions: they read shim_toolchain/toolchain.toml)" \
        in result.stdout, result.stdout
    assert (ws / "shim_toolchain" / "toolchain.toml").is_file()
    assert "SHIM_LEDGER" not in (ws / ".bazelrc").read_text()          # no --worker-ledger: no ledger


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or not os.path.isdir("/mnt")
                    or not os.access("/usr/bin/python3", os.X_OK),
                    reason="needs root, unshare and /mnt (a read-only /tmp in a mount namespace), /usr/bin/python3")
def test_a_remote_action_compiles_where_no_state_directory_can_be_written(tmp_path, env):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    assert run_shim(["bazel", "init", "--remote", "--worker-ledger", "/proc/no-ledger", ws], env=env).returncode == 0
    root = tmp_path / "worker" / "exec-0a1b"        # as a worker stages an action's inputs
    (root / "bazel-out" / "k8-fastbuild" / "bin").mkdir(parents=True)
    shutil.copytree(ws / "shim_toolchain", root / "shim_toolchain")
    (root / "a.c").write_text("int a;\n")
    # No HOME, no XDG_RUNTIME_DIR, the ledger's directory cannot be made, and /tmp is an empty
    # read-only tmpfs: only the exec root (bound to /mnt first) can be written, as on a locked-down worker.
    script = ("mount --bind {0} /mnt && mount -t tmpfs -o ro tmpfs /tmp && cd /mnt && "
              "exec env -i PATH=/usr/bin:/bin SHIM_LEDGER=/proc/no-ledger "
              "shim_toolchain/gcc -c a.c -o bazel-out/k8-fastbuild/bin/a.o").format(shlex.quote(str(root)))
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (root / "bazel-out" / "k8-fastbuild" / "bin" / "a.o").exists()
    assert "no memory admission: unsafe runtime directory /tmp/shim-0: Read-only" in result.stderr
    assert "cannot write the ledger" in result.stderr and "Traceback" not in result.stderr
    assert not (root / "shim_toolchain" / "lib" / "shim" / "__pycache__").exists()
