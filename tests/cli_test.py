"""The management commands: help, version, config, launcher, doctor."""

import pytest

from conftest import REPO, one_error_line, run_shim, write_toml
from shim import __version__
from shim.commands import COMMANDS, RESERVED
from shim.config import keys

def every_command():
    """[words] of every command and subcommand, derived from shim/commands.py's table."""
    import click
    from shim.cli import main as cli
    out = []
    for name, _module, _attribute, _summary in COMMANDS:
        command = cli.load(name)
        out.append([name])
        if isinstance(command, click.Group):
            out += [[name, sub] for sub in command.list_commands(None)]
    return out


@pytest.mark.parametrize("words", every_command(), ids=" ".join)
def test_every_subcommand_has_help(env, words):
    result = run_shim(words + ["--help"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: shim %s" % " ".join(words))
    if len(words) == 1:
        assert run_shim(["help", words[0]], env=env).stdout == result.stdout


def test_the_command_table_is_what_the_group_lists_with_each_commands_own_summary():
    from shim.cli import main as cli
    assert cli.shim.list_commands(None) == [name for name, *_ in COMMANDS]
    for name, _module, _attribute, summary in COMMANDS:
        command = cli.load(name)
        assert command.name == name.replace("_", "-") or name == "help"
        assert (command.help or "").split("\n")[0].strip() == summary, name
    assert RESERVED == {name for name, *_ in COMMANDS}


def test_shim_help_alone_is_shim_dash_dash_help_and_an_unknown_command_is_one_line(env):
    assert run_shim(["help"], env=env).stdout == run_shim(["--help"], env=env).stdout
    one_error_line(run_shim(["help", "bild"], env=env), 2, "no such command 'bild'")


def test_version(env):
    assert run_shim(["--version"], env=env).stdout == "shim %s\n" % __version__


def test_config_keys_lists_every_declared_key_and_environment_variable(env):
    out = run_shim(["config", "keys"], env=env).stdout
    for path, _typ, _default, doc in keys.KEYS:
        assert "\n%s  (" % path in "\n" + out
        assert doc in out
    for name, _doc in keys.ENV:
        assert name in out


def test_readme_carries_the_generated_key_reference(env):
    generated = run_shim(["config", "keys", "--markdown"], env=env).stdout
    assert generated == keys.markdown()
    readme = (REPO / "README.md").read_text()
    assert generated in readme, "README.md's key reference is stale: paste `shim config keys --markdown`"


def test_config_show_origin_names_the_file_and_line_of_each_value(tmp_path, env):
    conf = write_toml(tmp_path / "toolchain.toml", """
        # comment
        [tool.cc]
        args.append = ["-g0"]
        """)
    out = run_shim(["config", "show", "--origin"], cwd=tmp_path, env=env).stdout
    assert 'append = ["-g0"]  # %s:3' % conf in out
    assert "#   project  %s" % conf in out
    assert 'program = "gcc"  # ' in out and "gcc.toml:" in out


def test_config_check_validates_the_files_given(tmp_path, env):
    good = write_toml(tmp_path / "good.toml", '[defaults]\nmode = "spawn"\n')
    bad = write_toml(tmp_path / "bad.toml", '[defaults]\nmood = "spawn"\n')
    assert run_shim(["config", "check", good], env=env).stdout == "ok: %s\n" % good
    one_error_line(run_shim(["config", "check", good, bad], env=env), 78, "%s:2" % bad, "did you mean 'mode'")


def test_config_check_without_files_checks_the_ones_in_effect(tmp_path, env):
    assert "only the built-in preset" in run_shim(["config", "check"], cwd=tmp_path, env=env).stdout
    conf = write_toml(tmp_path / "toolchain.toml", '[defaults]\nmode = "auto"\n')
    assert run_shim(["config", "check"], cwd=tmp_path, env=env).stdout == "ok: %s\n" % conf


def test_doctor_reports_interpreter_bundle_exec_and_toolchain(tmp_path, env):
    conf = write_toml(tmp_path / "toolchain.toml", '[defaults]\nmode = "auto"\n')
    out = run_shim(["doctor"], cwd=tmp_path, env=env).stdout
    assert "hot-path bundle: yes" in out
    assert "exec supported: yes (linux)" in out
    assert "toolchain project: %s" % conf in out
