"""Launchers: the installed script, direct launchers, masquerade, never running shim as the tool."""

import os
import subprocess

import pytest

from conftest import REPO, SHIM, run_shim
from shim.generators import launcher

pytestmark = pytest.mark.e2e          # the installed launchers


def test_the_installed_script_carries_the_shared_launcher_body():
    text = (REPO / "bin" / "shim").read_text()
    assert text.endswith(launcher.BODY)
    assert SHIM.read_text().partition("\n")[2] == text.partition("\n")[2]    # pip rewrote the #! line


def test_the_installed_script_puts_back_the_flags_pip_dropped_on_its_first_run(tmp_path, env):
    python = SHIM.parent / "python"
    script = tmp_path / "shim"              # as pip installs it: `#!python` becomes the venv's interpreter
    script.write_text("#!%s\n" % python + (REPO / "bin" / "shim").read_text().partition("\n")[2])
    script.chmod(0o755)
    env["DOT.NAME"] = "1"
    for first_line in ("#!%s" % python, "#!%s -IS" % python):
        assert script.read_text().partition("\n")[0] == first_line
        result = run_shim(["env"], env=env, shim=script)
        assert result.returncode == 0 and "DOT.NAME=1" in result.stdout.splitlines(), result.stderr
    assert script.read_text().partition("\n")[0] == "#!%s -IS" % python
    assert oct(script.stat().st_mode & 0o777) == "0o755" and not list(tmp_path.glob("*.tmp"))


def test_a_direct_launcher_runs_steps_and_is_rewritten_only_when_it_changes(tmp_path, env):
    assert run_shim(["launcher", tmp_path / "bin"], env=env).returncode == 0
    fast = tmp_path / "bin" / "shim"
    first = fast.read_text().partition("\n")[0]           # python or python3: what pip wrote into bin/shim
    assert first.startswith("#!%s/python" % SHIM.parent) and first.endswith(" -IS"), first
    before = fast.stat().st_mtime_ns
    run_shim(["launcher", tmp_path / "bin"], env=env)
    assert fast.stat().st_mtime_ns == before
    (tmp_path / "a.c").write_text("int a;\n")
    result = run_shim(["cc", "-c", "a.c", "-o", "a.o"], cwd=tmp_path, env=env, shim=fast)
    assert result.returncode == 0 and (tmp_path / "a.o").exists()


def _masquerade_compiles(tmp_path, env, gcc):
    (tmp_path / "m.c").write_text("int m(void) { return 1; }\n")
    env["PATH"] = "%s:%s" % (gcc.parent, env["PATH"])     # the masquerade dir comes first on PATH
    env["SHIM_MODE"] = "spawn"
    result = subprocess.run(["gcc", "-c", "m.c", "-o", "m.o", "-v"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.o").exists()
    return result


def test_a_symlink_named_gcc_to_the_installed_shim_runs_the_real_gcc(tmp_path, env):
    masq = tmp_path / "masq"
    masq.mkdir()
    (masq / "gcc").symlink_to(SHIM)
    result = _masquerade_compiles(tmp_path, env, masq / "gcc")
    assert "COLLECT_GCC=/usr/bin/gcc" in result.stderr or "COLLECT_GCC=/bin/gcc" in result.stderr


def test_masquerade_launchers_written_by_shim_skip_each_other_on_path(tmp_path, env):
    masq = tmp_path / "masq"
    assert run_shim(["launcher", masq, "--as", "gcc", "--as", "cc"], env=env).returncode == 0
    result = _masquerade_compiles(tmp_path, env, masq / "gcc")
    assert "COLLECT_GCC=%s" % (masq / "gcc") not in result.stderr


def test_a_fifo_in_place_of_a_direct_launcher_is_replaced_not_waited_on(tmp_path, no_hang):
    os.mkfifo(tmp_path / "shim")
    path = launcher.write(str(tmp_path))
    assert open(path).read() == launcher.direct_text()


def test_environment_names_sh_cannot_hold_reach_the_tool_through_every_launcher(tmp_path, env):
    assert run_shim(["launcher", tmp_path / "fast"], env=env).returncode == 0
    env.update({"DOT.NAME": "1", "DASH-NAME": "2"})
    for shim in (SHIM, tmp_path / "fast" / "shim"):
        for mode in ("exec", "spawn"):
            result = run_shim(["env"], env=dict(env, SHIM_MODE=mode), shim=shim)
            assert result.returncode == 0, result.stderr
            assert {"DOT.NAME=1", "DASH-NAME=2"} <= set(result.stdout.splitlines()), (shim, mode)


def test_a_launcher_turns_the_collector_off_before_it_loads_anything(tmp_path):
    """Reading and unmarshalling the bundle ran three gen-0 collections (~50-90 us each in a new
    process); a step that execs leaves no cycles worth finding (shim/step.py and shim/entry.py
    turn the collector back on for what stays)."""
    site = tmp_path / "site"
    (site / "shim").mkdir(parents=True)
    (site / "shim" / "__init__.py").write_text("")
    (site / "shim" / "entry.py").write_text(
        "import gc\n\ndef main():\n    print(gc.isenabled(), sum(s['collections'] for s in gc.get_stats()))\n"
        "    return 0\n")
    script = tmp_path / "shim"
    script.write_text(launcher.direct_text(python=str(SHIM.parent / "python"), packages=str(site)))
    script.chmod(0o755)
    enabled, collections = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True,
                                          check=True).stdout.split()
    bare = subprocess.run([str(SHIM.parent / "python"), "-I", "-S", "-c",
                           "import gc; print(sum(s['collections'] for s in gc.get_stats()))"],
                          stdout=subprocess.PIPE, text=True, check=True).stdout.split()[0]
    assert enabled == "False"
    assert collections == bare                  # none since the interpreter's own start-up
