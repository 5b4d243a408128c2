"""`shim build` (shim/build.py): what it leaves behind when killed, and what it creates."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import SHIM, write_tool

NINJA = Path(sys.executable).parent / "ninja"


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def children_of(pid: int):
    try:
        return [int(c) for c in Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_shim_build_takes_ninja_and_its_steps_down_and_the_next_build_tidies_up(tmp_path, env):
    sleeper = write_tool(tmp_path / "tools", "sleeper", 'echo $$ > "$1.pid"; sleep 60; : > "$1"\n')
    (tmp_path / "build.ninja").write_text("rule s\n  command = shim run %s $out\nbuild a: s\nbuild b: s\n" % sleeper)
    run = Path(env["XDG_RUNTIME_DIR"]) / "shim"
    build = subprocess.Popen([str(SHIM), "build", "-C", str(tmp_path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: (tmp_path / "a.pid").exists() and (tmp_path / "b.pid").exists())
        ninja = [p for p in children_of(build.pid) if "ninja" in Path("/proc/%d/comm" % p).read_text()]
        assert len(ninja) == 1
        fifo = run / ("jobserver-%d" % build.pid)
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        tools = [int((tmp_path / n).read_text()) for n in ("a.pid", "b.pid")]
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=10)
        assert wait_for(lambda: not alive(ninja[0]), 10), "ninja outlived shim build"
        assert wait_for(lambda: not any(alive(t) for t in tools), 10), "steps outlived shim build"
        assert fifo.exists()                                   # kill -9: no chance to clean up
    finally:
        if build.poll() is None:
            build.kill()
    (tmp_path / "build.ninja").write_text("build nothing: phony\n")
    done = subprocess.run([str(SHIM), "build", "-C", str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not fifo.exists()                                   # the stale fifo of the dead build is gone
    assert not [p for p in run.iterdir() if p.name.startswith("jobserver-")]


def test_under_umask_000_what_shim_build_creates_is_not_writable_by_others(tmp_path, env, example):
    result = subprocess.run([str(SHIM), "build", "-C", str(example), "--mode", "spawn"], env=env,
                            capture_output=True, text=True, preexec_fn=lambda: os.umask(0))
    assert result.returncode == 0, result.stdout + result.stderr
    made = [example / ".shim", example / ".shim" / "bin", example / ".shim" / "bin" / "shim",
            example / ".shim" / "memory-v1", example / ".shim" / "ledger-v1.jsonl"]
    made += list((example / ".shim" / "memory-v1").iterdir())
    for path in made:
        assert not path.stat().st_mode & 0o022, "%s is mode %o" % (path, stat.S_IMODE(path.stat().st_mode))
    run = Path(env["XDG_RUNTIME_DIR"]) / "shim"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
