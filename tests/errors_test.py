"""Malformed input: one `shim: error:` line naming file/line or argument, a documented
exit status, no traceback, and the tool never half-run."""

import os
import re

import pytest

from conftest import REPO, SHIM, one_error_line, run_shim, write_tool, write_toml

CONFIG, BAD_INPUT, USAGE, NOT_EXECUTABLE, NOT_FOUND = 78, 65, 2, 126, 127


@pytest.fixture
def project(tmp_path):
    d = tmp_path / "proj"
    d.mkdir()
    return d


def _toml_error(project, env, text):
    path = write_toml(project / "toolchain.toml", text)
    return run_shim(["cc", "--version"], cwd=project, env=env), path


@pytest.mark.parametrize("text, line, fragments", [
    ("[tool.cc]\nprogram = \"gcc\n", 2, ["invalid TOML"]),
    ("[defaults]\nmode = \"exec\"\n[defaults]\nmode = \"spawn\"\n", 3, ["invalid TOML"]),
    ("[tool.cc]\nprogam = \"gcc\"\n", 2, ["unknown key 'tool.cc.progam'", "did you mean 'program'"]),
    ("[defualts]\nmode = \"exec\"\n", 1, ["unknown key 'defualts'", "did you mean 'defaults'"]),
    ("[tool.cc]\nargs.prepend = \"-O2\"\n", 2, ["tool.cc.args.prepend", "expected a list of strings"]),
    ("[defaults]\nmode = 3\n", 2, ["defaults.mode", "expected one of exec, spawn, auto, got an integer"]),
    ("[defaults]\nmode = \"exce\"\n", 2, ["did you mean 'exec'"]),
    ("[step.link]\nmemory = \"12 parsecs\"\n", 2, ["step.link.memory", "unknown size unit"]),
    ("[step.compil]\nmode = \"spawn\"\n", 1, ["unknown step kind 'compil'"]),
    ("[platform.beos.defaults]\nmode = \"spawn\"\n", 1, ["unknown platform 'beos'"]),
    ("[defaults]\nmode = \"exec\"\n[platform.linux-x64.defaults]\nmode = \"spawn\"\n", 3,
     ["unknown platform 'linux-x64'", "ARCH: x86_64 (or amd64), aarch64 (or arm64)"]),
    ("[platform.lnux]\n", 1, ["unknown platform 'lnux'", "OS: linux, darwin, windows, freebsd"]),
    ("[tool.cc]\nenv.set = { LC_ALL = 1 }\n", 2, ["tool.cc.env.set", "expected a table of strings"]),
    ("preset = \"msvc9\"\n", 1, ["preset", "expected one of " + ", ".join(
        sorted(p.stem for p in (REPO / "toolchains").glob("*.toml")))]),
    ("[tool.cc]\nargs = [\"-O2\"]\n", 2, ["tool.cc.args", "expected a table"]),
])
def test_a_bad_toolchain_toml_names_file_line_and_key(project, env, text, line, fragments):
    result, path = _toml_error(project, env, text)
    one_error_line(result, CONFIG, "%s:%d" % (path, line), *fragments)


def test_toolchain_toml_that_is_not_utf8_is_refused_with_its_line(project, env):
    path = project / "toolchain.toml"
    path.write_bytes(b"[tool.cc]\nprogram = \"g\xffcc\"\n")
    one_error_line(run_shim(["cc"], cwd=project, env=env), CONFIG, "%s:2" % path, "not UTF-8")


def test_a_group_writable_toolchain_toml_found_by_walking_up_is_refused(project, env):
    path = write_toml(project / "toolchain.toml", "[defaults]\nmode = \"exec\"\n")
    path.chmod(0o664)
    sub = project / "build"
    sub.mkdir()
    one_error_line(run_shim(["cc", "--version"], cwd=sub, env=env), CONFIG,
                   "refusing %s" % path, "chmod go-w")


def test_shim_toolchain_naming_a_missing_file_is_a_config_error(project, env):
    env["SHIM_TOOLCHAIN"] = str(project / "nope.toml")
    one_error_line(run_shim(["cc", "--version"], cwd=project, env=env), CONFIG,
                   "SHIM_TOOLCHAIN=%s" % (project / "nope.toml"), "No such file")


def test_a_program_missing_from_path_is_127_and_named(project, env):
    write_toml(project / "toolchain.toml", "[tool.cc]\nprogram = \"no-such-cc-1\"\n")
    one_error_line(run_shim(["cc", "-c", "x.c"], cwd=project, env=env), NOT_FOUND,
                   "tool 'cc'", "'no-such-cc-1' not found on PATH")


def test_a_configured_program_path_that_does_not_exist_is_127(project, env):
    write_toml(project / "toolchain.toml", "[tool.cc]\nprogram = \"bin/cc\"\n")
    one_error_line(run_shim(["cc"], cwd=project, env=env), NOT_FOUND,
                   "program %s does not exist" % (project / "bin" / "cc"))


def test_a_program_that_is_not_executable_is_126(project, env):
    tool = project / "bin" / "cc"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o644)
    write_toml(project / "toolchain.toml", "[tool.cc]\nprogram = \"bin/cc\"\n")
    one_error_line(run_shim(["cc"], cwd=project, env=env), NOT_EXECUTABLE, "not an executable file")
    tool.rename(tool.parent / "notexec-tool")
    env["PATH"] = "%s:%s" % (tool.parent, env["PATH"])
    one_error_line(run_shim(["notexec-tool"], env=env, cwd=project.parent), NOT_EXECUTABLE,
                   "exists but is not executable")


def test_a_program_that_cannot_be_executed_is_126(project, env):
    bad = write_tool(project / "bin", "badinterp", "true\n", shebang="#!/nonexistent/interpreter")
    for mode in ("exec", "spawn"):
        env["SHIM_MODE"] = mode
        one_error_line(run_shim([bad], env=env), NOT_FOUND, "cannot execute %s" % bad)
    garbage = project / "bin" / "garbage"
    garbage.write_bytes(b"\x7fELF\x00garbage")
    garbage.chmod(0o755)
    for mode in ("exec", "spawn"):
        env["SHIM_MODE"] = mode
        one_error_line(run_shim([garbage], env=env), NOT_EXECUTABLE, "cannot execute %s" % garbage)


def test_a_masquerade_with_nothing_real_behind_it_is_an_error_not_a_loop(project, env):
    masq = project / "masq"
    masq.mkdir()
    (masq / "gcc-shimtest").symlink_to(SHIM)
    env["PATH"] = "%s:/usr/bin:/bin" % masq
    one_error_line(run_shim([], shim=masq / "gcc-shimtest", env=env), NOT_FOUND,
                   "'gcc-shimtest' not found on PATH", "only shim itself")


def test_a_tool_whose_program_runs_shim_again_is_stopped_as_a_loop(project, env):
    # A wrapper that calls shim for the same tool: not shim itself, so only the depth guard sees it.
    loop = write_tool(project / "bin", "loopcc", 'exec "%s" cc "$@"\n' % SHIM)
    write_toml(project / "toolchain.toml", "[tool.cc]\nprogram = \"%s\"\n" % loop)
    result = run_shim(["cc", "-c", "x.c"], cwd=project, env=env, timeout=60)
    one_error_line(result, USAGE, "running itself in a loop", "tool.cc.program")


def test_a_missing_response_file_is_named_with_its_argument(project, env):
    result = run_shim(["cc", "-c", "@nope.rsp"], cwd=project, env=env)
    one_error_line(result, BAD_INPUT, "cannot read response file", "argument 2: @nope.rsp", "No such file")


def test_an_unreadable_response_file_is_an_error(project, env):
    rsp = project / "dir.rsp"
    rsp.mkdir()   # unreadable as a file even for root
    one_error_line(run_shim(["cc", "@dir.rsp"], cwd=project, env=env), BAD_INPUT, "dir.rsp")


def test_an_unterminated_quote_in_a_response_file_names_the_file_and_line(project, env):
    (project / "args.rsp").write_text("-c\n-DX=1\n'-DNAME=oops\n-o x.o\n")
    one_error_line(run_shim(["cc", "@args.rsp"], cwd=project, env=env), BAD_INPUT,
                   "unterminated ' quote in response file args.rsp, line 3")


def test_response_files_that_include_each_other_forever_are_stopped(project, env):
    (project / "a.rsp").write_text("-c @b.rsp\n")
    (project / "b.rsp").write_text("@a.rsp\n")
    one_error_line(run_shim(["cc", "@a.rsp"], cwd=project, env=env), BAD_INPUT, "nested more than")


def test_shim_without_arguments_is_a_usage_error(env):
    one_error_line(run_shim([], env=env), USAGE, "no tool or command given")


def test_shim_run_without_a_tool_is_a_usage_error(env):
    one_error_line(run_shim(["run"], env=env), USAGE, "shim run: no tool given")


def test_an_invalid_shim_mode_is_a_usage_error(env):
    env["SHIM_MODE"] = "turbo"
    one_error_line(run_shim(["cc", "--version"], env=env), USAGE, "SHIM_MODE=turbo")


def test_an_unknown_option_of_a_subcommand_is_a_usage_error(env, tmp_path):
    one_error_line(run_shim(["config", "show", "--bogus"], env=env), USAGE,
                   "no such option", "shim config show --help")
    one_error_line(run_shim(["build", "--mode", "fast", "-C", tmp_path], env=env), USAGE, "'fast'")


def test_a_deleted_current_directory_is_reported_as_a_system_error(tmp_path, env):
    fast = tmp_path / "fast"
    assert run_shim(["launcher", fast], env=env).returncode == 0   # no /bin/sh warning in between
    gone = tmp_path / "gone"
    gone.mkdir()
    result = run_shim(["cc", "--version"], cwd=gone, env=env, shim=fast / "shim",
                      preexec_fn=lambda: os.rmdir(gone))
    one_error_line(result, 71, "cannot get the current directory")


def test_an_internal_error_is_one_line_and_shim_debug_shows_its_traceback(monkeypatch, capsys):
    from shim import entry, host
    from shim.cli import main as cli

    def broken(argv):
        raise RuntimeError("a bug")
    monkeypatch.setattr(cli, "main", broken)
    monkeypatch.setattr(host, "environ", lambda: {})
    assert entry.main(["shim", "doctor"]) == 70
    assert capsys.readouterr().err == ("shim: error: internal error: RuntimeError: a bug "
                                       "(set SHIM_DEBUG=1 for a traceback)\n")
    monkeypatch.setattr(host, "environ", lambda: {"SHIM_DEBUG": "1"})
    with pytest.raises(RuntimeError, match="a bug"):
        entry.main(["shim", "doctor"])


# --- absurd input: a bound and one line, never an internal error ---------------------------


@pytest.mark.parametrize("text, line, fragments", [
    ("[memory]\nbudget = 512\n", 2, ["memory.budget", "did you mean 512MiB"]),
    ("[memory]\nbudget = \"512\"\n", 2, ["memory.budget", "did you mean 512MiB"]),
    ("[memory]\nbudget = \"1e300\"\n", 2, ["memory.budget", "too large"]),
    ("[memory]\noom_retries = 99999999999999999999999\n", 2, ["memory.oom_retries", "out of range", "0 to 10"]),
    ("[memory]\noom_score_adj = 1001\n", 2, ["memory.oom_score_adj", "out of range"]),
    ("[memory]\npatience = 1e9\n", 2, ["memory.patience", "out of range"]),
    ("[memory]\nunit = \"4KiB\"\n", 2, ["memory.unit", "out of range"]),
    ("[step.link]\nmemory = 1500\n", 2, ["step.link.memory", "did you mean 1500MiB"]),
    ("[launcher.distcc]\njobs = 0\n", 2, ["launcher.distcc.jobs", "out of range"]),
    ("[tool.cc]\nprogram = \"gcc\\u0000\"\n", 2, ["tool.cc.program", "NUL"]),
    ("[tool.cc]\nenv.set = { \"A\\u0000B\" = \"1\" }\n", 2, ["tool.cc.env.set", "NUL"]),
])
def test_absurd_values_in_toolchain_toml_are_refused_with_their_range(project, env, text, line, fragments):
    result, path = _toml_error(project, env, text)
    one_error_line(result, CONFIG, "%s:%d" % (path, line), *fragments)


@pytest.mark.parametrize("value, fragment", [
    ("1e300", "too large"), ("512", "did you mean 512MiB"), ("512B", "at least 1MiB"), ("lots", "unknown size unit")])
def test_an_absurd_memory_budget_in_the_environment_is_a_usage_error(project, env, value, fragment):
    env["SHIM_MEMORY_BUDGET"] = value
    one_error_line(run_shim(["cc", "--version"], cwd=project, env=env), USAGE,
                   "SHIM_MEMORY_BUDGET=%s" % value, fragment)


@pytest.mark.parametrize("value, fragment", [("1e300", "too large"), ("512", "did you mean 512MiB")])
def test_an_absurd_budget_option_is_a_usage_error(project, env, value, fragment):
    (project / "build.ninja").write_text("")
    for command in (["build", "-C", project, "--budget", value], ["doctor", "--budget", value]):
        one_error_line(run_shim(command, cwd=project, env=env), USAGE, "--budget %s" % value, fragment)


def test_an_absurd_oom_score_in_the_environment_is_a_usage_error(project, env):
    env["SHIM_OOM_SCORE_ADJ"] = "-5"
    one_error_line(run_shim(["cc", "--version"], cwd=project, env=env), USAGE, "SHIM_OOM_SCORE_ADJ=-5", "0 to 1000")


def test_a_response_file_with_a_utf16_mark_but_odd_bytes_is_bad_input(project, env):
    (project / "a.rsp").write_bytes(b"\xff\xfe -DX\n")
    one_error_line(run_shim(["cc", "-c", "@a.rsp"], cwd=project, env=env), BAD_INPUT,
                   "a.rsp", "not UTF-16")


@pytest.fixture
def ledger_with_a_step(project, env):
    (project / "build.ninja").write_text("")
    (project / "a.c").write_text("int a;\n")
    assert run_shim(["cc", "-c", "a.c", "-o", "a.o"], cwd=project, env=env).returncode == 0
    return project


@pytest.mark.parametrize("command", [
    ["compdb", "-o", "/proc/x/y"],
    ["report", "--trace", "/proc/x/y"],
    ["report", "--html", "/proc/x/y"],
    ["launcher", "/proc/x"],
])
def test_an_output_that_cannot_be_written_is_one_line_and_73(ledger_with_a_step, env, command):
    one_error_line(run_shim(command, cwd=ledger_with_a_step, env=env), 73, "cannot write" if
                   command[0] != "launcher" else "cannot create", command[-1])
    assert not [p for p in ledger_with_a_step.rglob("*.tmp")]


def test_shim_build_names_a_missing_directory_and_does_not_suggest_the_c_it_was_given(project, env, tmp_path):
    one_error_line(run_shim(["build", "-C", tmp_path / "nowhere"], env=env), USAGE,
                   "-C %s: no such directory" % (tmp_path / "nowhere"))
    line = one_error_line(run_shim(["build", "-C", project], env=env), USAGE, "no build.ninja in %s" % project)
    assert "use -C" not in line
    assert "(use -C DIR)" in one_error_line(run_shim(["build"], cwd=project, env=env), USAGE, "no build.ninja")


@pytest.mark.parametrize("command", [["report"], ["build"]])
def test_a_deleted_current_directory_is_a_system_error_for_subcommands_too(tmp_path, env, command):
    fast = tmp_path / "fast"
    assert run_shim(["launcher", fast], env=env).returncode == 0
    gone = tmp_path / "gone"
    gone.mkdir()
    result = run_shim(command, cwd=gone, env=env, shim=fast / "shim", preexec_fn=lambda: os.rmdir(gone))
    one_error_line(result, 71, "cannot get the current directory")


def test_toml_nested_thousands_deep_is_a_config_error_not_a_crash(project, env):
    path = write_toml(project / "toolchain.toml", "a = " + "[" * 5000 + "]" * 5000 + "\n")
    one_error_line(run_shim(["cc", "--version"], cwd=project, env=env), CONFIG, str(path), "nested")


@pytest.mark.parametrize("option", ["--html", "--trace"])
def test_a_ledger_time_beyond_a_float_is_skipped_like_a_bad_line(ledger_with_a_step, env, option, tmp_path):
    ledger = ledger_with_a_step / ".shim" / "ledger-v1.jsonl"
    step = [line for line in ledger.read_text().splitlines() if '"rec": "step"' in line][0]
    with ledger.open("a") as f:     # JSON reads 1e309 as inf
        f.write(re.sub(r'"t1": [0-9.e+-]+', '"t1": 1e309', step.replace('"id": "', '"id": "x', 1)) + "\n")
    result = run_shim(["report", option, tmp_path / "out"], cwd=ledger_with_a_step, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").stat().st_size > 0


def test_a_script_without_a_shebang_runs_with_sh_as_execvp_does(project, env):
    script = project / "noshebang"
    script.write_text('echo "ran as $0 with $1"\nexit 7\n')
    script.chmod(0o755)
    for mode in ("exec", "spawn"):
        env["SHIM_MODE"] = mode
        result = run_shim([script, "x"], cwd=project, env=env)
        assert (result.returncode, result.stdout, result.stderr) == (7, "ran as %s with x\n" % script, ""), mode


def test_with_stderr_closed_an_error_still_has_its_exit_status(project, env):
    result = run_shim(["no-such-tool-anywhere"], cwd=project, env=env, preexec_fn=lambda: os.close(2))
    assert result.returncode == NOT_FOUND
