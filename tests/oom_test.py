"""Out-of-memory recovery: a spawned step that ran out is retried alone with low_memory rewrites."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_tool, write_toml
from shim import oom
from shim.reports import records

NINJA = Path(sys.executable).parent / "ninja"
MIB = 1 << 20


def project(tmp_path, tool, command="shim oomy $out", toml_extra=""):
    (tmp_path / "build.ninja").write_text("rule r\n  command = %s\nbuild out: r\nbuild other: r\n" % command)
    write_toml(tmp_path / "toolchain.toml", """
        [tool.oomy]
        program = "%s"
        low_memory.args.append = ["--low-mem"]
        %s
        """ % (tool, toml_extra))


def ninja(tmp_path, env):
    return subprocess.run([str(NINJA), "-C", str(tmp_path)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)


def attempts(tmp_path, target="out"):
    """The ledger's records of the step building *target* (a fake tool: its argument)."""
    return [s for s in records.load(str(tmp_path / ".shim"), which="all")[1] if s["in"] == target]


def test_a_step_killed_by_sigkill_is_retried_alone_with_low_memory_args_and_the_build_goes_green(tmp_path, env):
    tool = write_tool(tmp_path / "tools", "oomy", """
        case " $* " in *" --low-mem "*) : > "$1"; exit 0 ;; esac
        kill -9 $$            # what the kernel's OOM killer does to a step that does not fit
        """)
    project(tmp_path, tool)
    env["SHIM_MEMORY_BUDGET"] = "1GiB"
    result = ninja(tmp_path, env)
    assert result.returncode == 0, result.stdout
    first, retry = attempts(tmp_path)
    assert (first["sig"], first["oom"], first["retry"]) == (9, True, None)
    assert (retry["exit"], retry["retry"], retry["low_memory"]) == (0, 1, True)
    assert retry["res"] == 1 << 30                      # alone: the whole budget
    assert retry["argv"] != first["argv"]               # with the low_memory arguments


def test_virtual_memory_exhausted_under_prlimit_is_retried_and_fits(tmp_path, env):
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) is not installed")
    tool = write_tool(tmp_path / "tools", "oomy", """
        import sys
        need = 40 if "--low-mem" in sys.argv else 600
        try:
            block = b"x" * (need << 20)
        except MemoryError:
            sys.stderr.write("cc1: out of memory: virtual memory exhausted: Cannot allocate memory\\n")
            sys.exit(1)
        open(sys.argv[1], "w").close()
        """, shebang="#!%s -IS" % sys.executable)
    project(tmp_path, tool, command="prlimit --as=%d shim oomy $out" % (400 * MIB))
    env["SHIM_MEMORY_BUDGET"] = "2GiB"
    result = ninja(tmp_path, env)
    assert result.returncode == 0, result.stdout
    assert "virtual memory exhausted" not in result.stdout  # the retried attempt's message is withheld
    assert "shim: oomy out ran out of memory (exit 1): running it again alone, retry 1 of 1" in result.stdout
    first, retry = attempts(tmp_path)
    assert (first["exit"], first["oom"]) == (1, True)
    assert (retry["exit"], retry["retry"], retry["low_memory"]) == (0, 1, True)
    assert (tmp_path / "out").exists()


GCC_KILLED = "g++: fatal error: Killed signal terminated program cc1plus\ncompilation terminated.\n"


def test_a_retry_that_succeeds_leaves_no_out_of_memory_message_in_the_log(tmp_path, env):
    """gcc's driver says "fatal error: Killed signal terminated program cc1plus" when the kernel
    kills cc1plus: the attempt that is retried keeps its warnings, not that line."""
    tool = write_tool(tmp_path / "tools", "oomy", """
        echo "a.cc:1: warning: unused variable" >&2
        case " $* " in *" --low-mem "*) : > "$1"; exit 0 ;; esac
        printf '%s' >&2
        exit 1
        """ % GCC_KILLED)
    project(tmp_path, tool)
    env["SHIM_MEMORY_BUDGET"] = "1GiB"
    result = ninja(tmp_path, env)
    assert result.returncode == 0, result.stdout
    assert "fatal error" not in result.stdout and "compilation terminated" not in result.stdout
    assert result.stdout.count("a.cc:1: warning: unused variable") == 4      # both attempts, both steps
    assert "shim: oomy out ran out of memory (exit 1): running it again alone, retry 1 of 1" in result.stdout
    assert [a["exit"] for a in attempts(tmp_path)] == [1, 0]


def test_when_the_last_attempt_runs_out_too_its_message_shows_once_per_step(tmp_path, env):
    tool = write_tool(tmp_path / "tools", "oomy", "printf '%s' >&2; kill -9 $$\n" % GCC_KILLED)
    project(tmp_path, tool, toml_extra="[memory]\noom_retries = 2")
    env["SHIM_MEMORY_BUDGET"] = "1GiB"
    result = ninja(tmp_path, env)
    assert result.returncode != 0
    # Two steps (out, other) of three attempts each: the last attempt's message, once per step.
    assert result.stdout.count("fatal error: Killed signal terminated program cc1plus") == 2, result.stdout
    assert result.stdout.count("running it again alone, retry 2 of 2") == 2


def test_a_message_held_back_is_shown_when_no_retry_follows(tmp_path, env):
    tool = write_tool(tmp_path / "tools", "oomy", """
        echo "ld: warning: memory exhausted once, recovered" >&2
        echo "ld: and a line after it" >&2
        : > "$1"
        """)
    project(tmp_path, tool)
    env["SHIM_MEMORY_BUDGET"] = "1GiB"
    result = ninja(tmp_path, env)
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("ld: warning: memory exhausted once, recovered\nld: and a line after it\n") == 2
    assert "running it again" not in result.stdout


def test_the_message_is_held_from_the_start_of_its_line():
    chunk = b"a.cc:1: warning: x\ng++: fatal error: Killed signal terminated program cc1plus\n"
    assert chunk[oom.hold_from(chunk):].startswith(b"g++: fatal error")
    assert oom.hold_from(b"Killed signal terminated program cc1plus") == 0
    assert oom.hold_from(b"a.cc:1: warning: x\n") == -1


def test_retries_are_bounded_and_the_last_status_is_the_steps(tmp_path, env):
    tool = write_tool(tmp_path / "tools", "oomy", "kill -9 $$\n")
    project(tmp_path, tool, toml_extra="[memory]\noom_retries = 2")
    env["SHIM_MEMORY_BUDGET"] = "1GiB"
    result = ninja(tmp_path, env)
    assert result.returncode != 0 and "[code=137] out" in result.stdout    # died of SIGKILL, as the tool
    assert [a["retry"] for a in attempts(tmp_path)] == [None, 1, 2]
    assert all(a["sig"] == 9 for a in attempts(tmp_path))


def test_an_ordinary_failure_is_not_retried(tmp_path, env):
    tool = write_tool(tmp_path / "tools", "oomy", 'echo "error: syntax" >&2; exit 1\n')
    project(tmp_path, tool)
    env["SHIM_MEMORY_BUDGET"] = "1GiB"
    assert "[code=1] out" in ninja(tmp_path, env).stdout
    assert [a["retry"] for a in attempts(tmp_path)] == [None]


def test_without_a_budget_shim_does_not_retry(tmp_path, env):
    tool = write_tool(tmp_path / "tools", "oomy", "kill -9 $$\n")
    project(tmp_path, tool)
    env.update(SHIM_MEMORY_BUDGET="off", SHIM_MODE="spawn")
    result = ninja(tmp_path, env)
    assert "[code=137] out" in result.stdout
    assert len(attempts(tmp_path)) == 1


# --- whom the kernel kills: a step, never ninja or shim build ----------------------------------


@pytest.fixture
def scorer(tmp_path):
    """A tool that writes into OUT its own oom_score_adj, then that of its nearest ancestor
    that is not a shell (shim when spawned, ninja under ninja), and its name."""
    return write_tool(tmp_path / "tools", "scorer", """
        p=$PPID
        while [ "$(cat /proc/$p/comm)" = sh ]; do p=$(awk '/^PPid:/ {print $2}' /proc/$p/status); done
        echo "$(cat /proc/self/oom_score_adj) $(cat /proc/$p/oom_score_adj) $(cat /proc/$p/comm)" > "$1"
        """)


def scores(path: Path):
    mine, parent, parent_name = path.read_text().split()
    return int(mine), int(parent), parent_name


@pytest.mark.parametrize("mode", ["exec", "spawn"])
def test_a_steps_tool_runs_with_a_raised_oom_score_and_shim_keeps_its_own(tmp_path, env, scorer, mode):
    from conftest import run_shim
    env["SHIM_MODE"] = mode
    assert run_shim([scorer, tmp_path / "s"], cwd=tmp_path, env=env).returncode == 0
    mine, parent, parent_name = scores(tmp_path / "s")
    assert mine == 500
    if mode == "spawn":                  # shim waits for the tool: it is not the one to kill
        assert parent_name in ("shim", "python", "python3") and parent == 0, (parent_name, parent)   # by #! or not
    env["SHIM_OOM_SCORE_ADJ"] = "0"      # 0: left as it was
    assert run_shim([scorer, tmp_path / "s"], cwd=tmp_path, env=env).returncode == 0
    assert scores(tmp_path / "s")[0] == 0
    write_toml(tmp_path / "toolchain.toml", "[memory]\noom_score_adj = 900\n")
    del env["SHIM_OOM_SCORE_ADJ"]
    assert run_shim([scorer, tmp_path / "s"], cwd=tmp_path, env=env).returncode == 0
    assert scores(tmp_path / "s")[0] == 900


def test_under_shim_build_ninja_keeps_its_score_and_younger_steps_score_higher(tmp_path, env, scorer):
    from conftest import run_shim
    (tmp_path / "build.ninja").write_text(
        "rule s\n  command = shim run %s $out\nrule wait\n  command = sleep 2.2 && touch $out\n"
        "build first: s\nbuild pause: wait\nbuild later: s | pause\n" % scorer)
    result = run_shim(["build", "-C", tmp_path, "--mode", "exec"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    first, ninja_score, ninja_name = scores(tmp_path / "first")
    later = scores(tmp_path / "later")[0]
    assert ninja_name == "ninja" and ninja_score == 0
    assert 500 <= first <= 501 and later >= first + 2


# --- rustc's ways of running out (what rustc 1.95 printed here under prlimit --as) ---------------


@pytest.mark.parametrize("code, sig, stderr", [
    (None, 6, b"memory allocation of 266256 bytes failed\nstack backtrace:\n"),
    (None, 6, b"rustc-LLVM ERROR: out of memory\nAllocation failed\n"),
    (1, None, b'{"$message_type":"diagnostic","message":"failed to create encoded metadata from file: '
              b'Cannot allocate memory (os error 12)"}\n'),
    (127, None, b"rustc: error while loading shared libraries: libLLVM.so.22.1-rust-1.95.0-stable: "
                b"failed to map segment from shared object\n"),
    (None, 9, b""),
])
def test_rustc_running_out_of_memory_is_recognised(code, sig, stderr):
    from shim.exit_status import Finished
    assert oom.ran_out(Finished(code, sig, 0, 0.0, 0.0, None, stderr))


@pytest.mark.parametrize("code, sig, stderr", [
    (None, 6, b"thread 'rustc' panicked at compiler/rustc_middle/src/ty.rs\n"),   # an ICE's abort
    (None, 11, b""),
    (1, None, b'{"$message_type":"diagnostic","level":"error","message":"cannot find value `x`"}\n'),
    (None, 9, b""),                                   # forwarded by shim: the user's ^C, not the kernel
])
def test_other_rustc_failures_are_not_taken_for_running_out(code, sig, stderr):
    from shim.exit_status import Finished
    assert not oom.ran_out(Finished(code, sig, 0, 0.0, 0.0, 9 if sig == 9 else None, stderr))
