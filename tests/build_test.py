"""`shim build` (shim/cli/build.py, shim/driver/ninja.py): what it leaves behind when killed, and what it creates."""

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
            example / ".shim" / "memory-v2", example / ".shim" / "ledger-v1.jsonl"]
    made += list((example / ".shim" / "memory-v2").iterdir())
    for path in made:
        assert not path.stat().st_mode & 0o022, "%s is mode %o" % (path, stat.S_IMODE(path.stat().st_mode))
    run = Path(env["XDG_RUNTIME_DIR"]) / "shim"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700


def test_with_a_read_only_shim_dir_a_build_started_through_env_runs_the_installed_launcher(tmp_path, env):
    (tmp_path / "x.c").write_text("int x;\n")
    (tmp_path / "build.ninja").write_text("rule cc\n  command = shim cc -c $in -o $out\nbuild x.o: cc x.c\n")
    dot_shim = tmp_path / ".shim"
    dot_shim.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(dot_shim)], capture_output=True).returncode == 0
    if not mounted:
        dot_shim.chmod(0o555)                 # only root ignores modes, and root mounts instead
    try:
        # as a shell runs `env shim build`: $_ is env, and no shim on PATH
        result = subprocess.run(["/usr/bin/env", str(SHIM), "build", "-C", str(tmp_path)], capture_output=True,
                                text=True, env=dict(env, PATH="/usr/bin:/bin", _="/usr/bin/env"))
    finally:
        if mounted:
            subprocess.run(["umount", str(dot_shim)], check=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "x.o").is_file()
    warned = [line for line in result.stderr.splitlines() if "fast launcher" in line]
    assert len(warned) == 1 and "using the installed one (%s)" % SHIM in warned[0], result.stderr


# --- the driver without a ninja: a stand-in process runner (the seam ninja calls CommandRunner) ---


def test_shim_build_hands_ninja_a_jobserver_a_budget_and_the_fast_launcher(tmp_path):
    from shim.driver import build, ninja as driver
    from shim.exit_status import Finished
    from shim.reports import records
    (tmp_path / "build.ninja").write_text("")
    (tmp_path / "run").mkdir(mode=0o700)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    seen = {}

    def ninja(path, argv, env, on_start=None, die_with_parent=False, **_):
        seen.update(path=path, argv=argv, env=dict(env), dies_with_us=die_with_parent)
        fifo = env["MAKEFLAGS"].split("fifo:")[1]
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        seen["tokens"] = os.read(fd, 1024)                  # what ninja's jobserver client would read
        os.write(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), seen["tokens"])
        os.close(fd)
        return Finished(3, None, 0, 0.0, 0.0)              # ninja failed: shim build says so

    status = driver.run(str(tmp_path), "/no/ninja", ["-k", "0", "all"], env, "2GiB", spawn=ninja)
    assert status == 3 and seen["dies_with_us"]
    assert seen["argv"] == ["/no/ninja", "-C", str(tmp_path), "-k", "0", "all"]
    cores = build.cores()
    assert seen["tokens"] == b"+" * (2 * cores - 1)          # 2 per core, one of them implicit
    assert "-j%d --jobserver-auth=fifo:" % (2 * cores) in seen["env"]["MAKEFLAGS"]
    assert seen["env"]["SHIM_CPU_SLOTS"] == str(cores)
    steps_budget = int(seen["env"]["SHIM_MEMORY_BUDGET"])
    assert (1 << 30) <= steps_budget < (2 << 30)             # the steps get the budget less shim's own share
    launcher = Path(seen["env"]["PATH"].split(os.pathsep)[0]) / "shim"
    assert launcher == tmp_path / ".shim" / "bin" / "shim" and os.access(launcher, os.X_OK)
    build_record = [r for r in records.read(str(tmp_path / ".shim")) if r["rec"] == "build"][-1]
    assert (build_record["exit"], build_record["budget"], build_record["b"]) == (
        3, 2 << 30, seen["env"]["SHIM_BUILD_ID"])
    assert not list((tmp_path / "run" / "shim").glob("jobserver-*"))   # the fifo is gone afterwards


def test_with_j_given_shim_build_leaves_ninjas_parallelism_alone(tmp_path):
    from shim.driver import ninja as driver
    from shim.exit_status import Finished
    (tmp_path / "build.ninja").write_text("")
    env = {"PATH": "/usr/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), "MAKEFLAGS": ""}
    seen = {}
    driver.run(str(tmp_path), "/no/ninja", ["-j", "3"], env, "off",
              spawn=lambda path, argv, env, **_: seen.update(env=dict(env)) or Finished(0, None, 0, 0.0, 0.0))
    assert "jobserver" not in seen["env"]["MAKEFLAGS"] and "SHIM_CPU_SLOTS" not in seen["env"]
    assert seen["env"]["SHIM_MEMORY_BUDGET"] == "off"
