"""Exit fidelity and process shape of a step, in exec and in spawn mode (real processes)."""

import os
import signal
import subprocess
import time

import pytest

from conftest import SHIM, run_shim, write_tool

MODES = ("exec", "spawn")


@pytest.fixture
def tools(tmp_path):
    d = tmp_path / "tools"
    write_tool(d, "exiter", 'exit "$1"\n')
    write_tool(d, "suicide", 'kill -"$1" $$\nsleep 5\nexit 99\n')
    write_tool(d, "pids", 'echo "$$ $PPID"\n')
    write_tool(d, "sleeper", 'echo $$ > "$1"\nexec sleep 30\n')
    return d


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", [0, 1, 2, 3, 126, 127, 255])
def test_exit_status_of_the_tool_is_shims_exit_status(tools, env, mode, code):
    env["SHIM_MODE"] = mode
    result = run_shim([tools / "exiter", code], env=env)
    assert result.returncode == code, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", ["SEGV", "ABRT", "KILL", "TERM", "INT"])
def test_a_tool_killed_by_a_signal_makes_shim_die_of_the_same_signal(tools, env, mode, sig):
    env["SHIM_MODE"] = mode
    result = run_shim([tools / "suicide", sig], env=env)
    assert result.returncode == -getattr(signal, "SIG" + sig), (result.returncode, result.stderr)


def test_exec_mode_replaces_shim_with_the_tool(tools, env):
    env["SHIM_MODE"] = "exec"
    proc = subprocess.Popen([str(SHIM), str(tools / "pids")], env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    pid, ppid = map(int, out.split())
    assert pid == proc.pid            # same process: shim became the tool
    assert ppid == os.getpid()


def test_spawn_mode_runs_the_tool_as_shims_child(tools, env):
    env["SHIM_MODE"] = "spawn"
    proc = subprocess.Popen([str(SHIM), str(tools / "pids")], env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    pid, ppid = map(int, out.split())
    assert ppid == proc.pid and pid != proc.pid


def _wait_for_file(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.01)
    raise AssertionError("%s never appeared" % path)


def _gone(pid, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_sent_to_a_spawning_shim_reaches_the_tool_and_leaves_no_orphan(tools, env, tmp_path, sig):
    env["SHIM_MODE"] = "spawn"
    pidfile = tmp_path / "child.pid"
    proc = subprocess.Popen([str(SHIM), str(tools / "sleeper"), str(pidfile)], env=env,
                            stderr=subprocess.PIPE, text=True)
    child = _wait_for_file(pidfile)
    assert child != proc.pid
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -sig, proc.stderr.read()
    assert _gone(child), "the tool (pid %d) outlived shim" % child


def test_a_tool_writing_to_a_closed_pipe_dies_of_sigpipe_as_it_would_without_shim(env, mode_env=None):
    # Python ignores SIGPIPE; shim must give the tool the default back (exec and spawn).
    for mode in MODES:
        env["SHIM_MODE"] = mode
        result = subprocess.run("'%s' yes | head -n 1; echo \"${PIPESTATUS[0]}\" >&2" % SHIM, shell=True,
                                executable="/bin/bash", env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert result.stdout == "y\n"
        assert result.stderr.strip() == str(128 + signal.SIGPIPE), (mode, result.stderr)


def test_a_tool_that_ignored_sighup_under_nohup_still_ignores_it_when_spawned(tools, env, tmp_path):
    env["SHIM_MODE"] = "spawn"
    probe = write_tool(tmp_path / "t", "hup", 'kill -HUP $$\necho survived\n')
    result = subprocess.run(["nohup", str(SHIM), str(probe)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert result.returncode == 0, result.stderr
    assert "survived" in result.stdout


@pytest.mark.parametrize("mode", MODES)
def test_the_tool_gets_its_full_path_as_argv0_and_the_arguments_unchanged(tmp_path, env, mode):
    tool = write_tool(tmp_path / "bin", "echoargs", 'printf "%s\\n" "$0" "$@"\n')
    env["SHIM_MODE"] = mode
    env["PATH"] = "%s:%s" % (tool.parent, env["PATH"])
    args = ["a b", "", "-x", "'q'", "$HOME", "ü"]
    result = run_shim(["echoargs"] + args, env=env)
    assert result.returncode == 0
    assert result.stdout.split("\n")[:-1] == [str(tool)] + args


def test_stdin_stdout_and_stderr_pass_through(tmp_path, env):
    tool = write_tool(tmp_path / "bin", "cat2", 'cat; echo err >&2\n')
    for mode in MODES:
        env["SHIM_MODE"] = mode
        result = subprocess.run([str(SHIM), str(tool)], input="data\n", env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert (result.stdout, result.stderr) == ("data\n", "err\n")


@pytest.mark.parametrize("requested, supported, chosen", [
    ("exec", True, "exec"), ("spawn", True, "spawn"), ("auto", True, "spawn"),
    ("exec", False, "spawn"), ("spawn", False, "spawn"), ("auto", False, "spawn"),
])
def test_mode_choice_and_windows_where_every_step_spawns(requested, supported, chosen):
    from shim import host_windows, step
    assert step.choose_mode(requested, supported) == chosen
    assert host_windows.EXEC_SUPPORTED is False


def test_windows_program_names_and_candidates(monkeypatch):
    from shim import args, host_windows
    monkeypatch.setenv("PATHEXT", ".COM;.EXE;.BAT")
    assert host_windows.program_stem("C:\\VC\\bin\\cl.exe") == "cl"
    assert host_windows.program_stem("clang-cl.EXE") == "clang-cl"
    assert host_windows.program_stem("tool.py") == "tool.py"
    assert host_windows.program_candidates("cl") == ("cl.com", "cl.exe", "cl.bat")
    assert host_windows.program_candidates("cl.exe") == ("cl.exe",)
    assert host_windows.join("C:\\bin", "cl.exe") == "C:\\bin\\cl.exe"
    monkeypatch.setattr(args.host, "program_stem", host_windows.program_stem)
    assert args.family_of("C:\\VC\\bin\\cl.exe") == "msvc"
    assert args.family_of("C:\\LLVM\\bin\\lld-link.exe") == "msvc-link"


def _running(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.e2e
def test_a_spawned_tool_dies_with_its_shim_even_of_kill_9_so_it_never_runs_without_its_reservation(
        tools, env, tmp_path):
    # Under a budget the shim holds the reservation; a tool left running after its shim was
    # killed would use memory nobody accounts for.
    pid_file = tmp_path / "tool.pid"
    shim = subprocess.Popen([str(SHIM), tools / "sleeper", pid_file], env=dict(env, SHIM_MODE="spawn"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        tool = int(pid_file.read_text())
        assert _running(tool)
        shim.kill()                                                   # SIGKILL: no chance to clean up
        shim.wait()
        deadline = time.monotonic() + 10
        while _running(tool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(tool), "the tool outlived its shim"
    finally:
        shim.kill()
        shim.communicate()


@pytest.mark.parametrize("mode", ["exec", "spawn"])
@pytest.mark.parametrize("fd", [0, 1])
def test_a_closed_stdin_or_stdout_stays_closed_for_the_tool_and_no_state_file_takes_it(tmp_path, env, mode, fd):
    probe = "if [ -e /proc/$$/fd/%d ]; then echo open >&2; else echo closed >&2; fi; echo hi" % fd
    env.update(SHIM_MEMORY_BUDGET="1GiB", SHIM_MODE=mode)
    result = run_shim(["sh", "-c", probe], cwd=tmp_path, env=env, preexec_fn=lambda: os.close(fd))
    assert result.stderr.splitlines()[:1] == ["closed"], result.stderr
    assert result.stdout == ("hi\n" if fd == 0 else ""), result.stdout
    pools = list((tmp_path / "run" / "shim").glob("pool-*"))
    assert pools and all(b"hi" not in p.read_bytes() for p in pools)


def test_a_step_in_a_remote_workers_exec_root_is_recorded_relative_to_that_root():
    from shim import args, step
    root = "/var/lib/worker/exec-9c1f"
    parsed = args.parse(["-c", "main/a.c", "-o", "bazel-out/k8-fastbuild/bin/main/_objs/a/a.pic.o"], "gcc", root)
    record = step._record("cc", "gcc", "/usr/bin/gcc", parsed, root, "/var/lib/shim", ["-c"], {})
    assert (record["cwd"], record["in"], record["out"][0]) == (
        ".", "main/a.c", "bazel-out/k8-fastbuild/bin/main/_objs/a/a.pic.o")
    # Bazel's own execroot is stable: recorded as it was.
    execroot = "/home/u/.cache/bazel/_bazel_u/0f/execroot/ws"
    parsed = args.parse(["-c", "a.c", "-o", "bazel-out/k8-fastbuild/bin/a.o"], "gcc", execroot)
    record = step._record("cc", "gcc", "/usr/bin/gcc", parsed, execroot, "/ws/.shim", ["-c"], {})
    assert (record["cwd"], record["out"][0]) == (execroot, execroot + "/bazel-out/k8-fastbuild/bin/a.o")


class _Execed(Exception):
    """What the test's exec_program raises instead of becoming the tool."""


def test_the_collector_stays_off_up_to_exec_and_comes_back_for_a_step_that_stays(tools, env, tmp_path,
                                                                                  monkeypatch):
    """The launcher turns the cyclic collector off (shim/generators/launcher.py): a step that execs
    never runs it; a spawned step, which waits for its tool and may run it again, has it back."""
    import gc

    from shim import admission, budget, host, rundir, step
    for module, name in ((budget, "_found"), (budget, "_binding"), (budget, "_group"), (rundir, "_chosen"),
                         (rundir, "_fds"), (admission, "_OPEN")):
        monkeypatch.setattr(module, name, {})                   # this test's runtime dir, not the session's
    seen = []

    def exec_program(path, argv, env):
        seen.append(("exec", gc.isenabled()))
        raise _Execed()
    spawn_program = host.spawn_program

    def spawn(*args, **kwargs):
        seen.append(("spawn", gc.isenabled()))
        return spawn_program(*args, **kwargs)
    monkeypatch.setattr(host, "exec_program", exec_program)
    monkeypatch.setattr(host, "spawn_program", spawn)
    monkeypatch.chdir(tmp_path)
    gc.disable()
    try:
        with pytest.raises(_Execed):
            step.run(str(tools / "exiter"), ["0"], dict(env, SHIM_MODE="exec"))
        assert step.run(str(tools / "exiter"), ["3"], dict(env, SHIM_MODE="spawn")) == 3
    finally:
        gc.enable()
    assert seen == [("exec", False), ("spawn", True)]


def test_the_collector_comes_back_for_the_cli(monkeypatch):
    import gc

    from shim import entry, host
    from shim.cli import main as cli
    seen = []
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(gc.isenabled()) or 0)
    monkeypatch.setattr(host, "environ", lambda: {})
    gc.disable()
    try:
        assert entry.main(["shim", "doctor"]) == 0
    finally:
        gc.enable()
    assert seen == [True]
