"""The distcc preset with a real distccd on 127.0.0.1: compiles go there, the link stays here.

The daemon listens on loopback only, on a free port, allows 127.0.0.1 alone, and is
stopped by its PID when the test ends. DISTCC_FALLBACK=0 makes a compile that distcc
could not send fail instead of quietly running here, and distccd's log must show
every compile.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import run_shim, write_toml

DISTCC, DISTCCD = shutil.which("distcc"), shutil.which("distccd")
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not (DISTCC and DISTCCD), reason="distcc is not installed (Debian package distcc)")]
SOURCES = ["lib/vec.c", "lib/parse.c", "lib/stats.c", "lib/hist.c", "lib/fmt.c", "src/main.c"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def adopt_orphans(on: bool) -> bool:
    """Make this process the reaper of its orphaned descendants (Linux PR_SET_CHILD_SUBREAPER),
    so that distccd's workers, orphaned when it exits, are waited for here, by PID."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Daemon:
    def __init__(self, port: int, log: str, pid: int):
        self.port, self.log, self.pid = port, log, pid

    def jobs_done(self, count: int, timeout: float = 10.0) -> tuple:
        """(log text, `COMPILE_OK` lines) once *count* jobs are logged: a worker writes its
        summary after it has answered the client, so it may come a moment after the build."""
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                text = f.read()
            done = [line for line in text.splitlines() if "COMPILE_OK" in line]
            if len(done) >= count or time.monotonic() > deadline:
                return text, done
            time.sleep(0.05)


@pytest.fixture
def distccd(tmp_path, request):
    """A distccd on 127.0.0.1:<free port>; its PID is recorded and stopped by PID at the end."""
    port = free_port()
    log = tmp_path / "distccd.log"
    adopted = adopt_orphans(True)
    # As root distccd drops to user distccd, which cannot open a file below pytest's
    # private tmp dir: it logs to the stderr we open for it instead. Its own session:
    # on SIGTERM distccd signals its whole process group.
    with open(log, "wb") as stderr:
        proc = subprocess.Popen([DISTCCD, "--listen", "127.0.0.1", "--allow", "127.0.0.1", "--port", str(port),
                                 "--no-detach", "--daemon", "--log-stderr", "--log-level", "info", "--jobs", "4"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)

    def stop():
        workers = children_of(proc.pid)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if not adopted:
            return
        for pid in set(workers) & set(children_of(os.getpid())):   # its workers, adopted by us
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        adopt_orphans(False)

    request.addfinalizer(stop)
    deadline = time.monotonic() + 10
    while "listening on 127.0.0.1:%d" % port not in log.read_text(errors="replace"):
        assert proc.poll() is None, "distccd exited at once: %s" % log.read_text()
        assert time.monotonic() < deadline, "distccd did not listen on 127.0.0.1:%d" % port
        time.sleep(0.05)
    return Daemon(port, str(log), proc.pid)


def test_compiles_go_to_distccd_the_link_stays_local_and_the_program_runs(example, env, tmp_path, distccd):
    for name in [n for n in env if n.startswith("DISTCC_")]:
        del env[name]
    env["DISTCC_HOSTS"] = "127.0.0.1:%d/4" % distccd.port
    env["DISTCC_DIR"] = str(tmp_path / "distcc")           # distcc's lock and host-state files
    os.mkdir(env["DISTCC_DIR"])
    env["DISTCC_FALLBACK"] = "0"                           # not sent = failed, never quietly local
    env["SHIM_TOOLCHAIN"] = str(write_toml(tmp_path / "layer.toml", 'preset = "distcc"\n'))

    result = run_shim(["build", "-C", example, "--budget", "4GiB"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "16 edges in flight" in result.stdout          # [launcher.distcc] jobs, not 2 per core

    # One summary per job (`... COMPILE_OK exit:0 ... time:NNms /usr/bin/gcc lib/vec.c`): the six
    # compiles, and no link.
    log, lines = distccd.jobs_done(len(SOURCES))
    done = [line.split()[-2:] for line in lines]
    assert sorted(source for _, source in done) == sorted(SOURCES), log
    assert all(compiler.endswith("/gcc") for compiler, _ in done), log   # the path shim resolved

    records = [json.loads(line) for line in (example / ".shim" / "ledger-v1.jsonl").read_text().splitlines()[1:]]
    compiles = [r for r in records if r.get("kind") == "compile"]
    assert sorted(r["in"] for r in compiles) == sorted(SOURCES)
    assert {r.get("launcher") for r in compiles} == {"distcc"}
    assert {(r["src"], r["est"]) for r in compiles} == {("prior", int((192 << 20) * 0.1))}   # cpp only here (the gcc preset: 192 MiB)
    link = [r for r in records if r.get("kind") == "link"]
    assert len(link) == 1 and "launcher" not in link[0] and link[0]["exit"] == 0

    out = subprocess.run([str(example / "build" / "tally"), "3", "1", "2"], stdout=subprocess.PIPE, text=True)
    assert out.returncode == 0 and out.stdout.startswith("n=3 min=1 max=3"), out.stdout
