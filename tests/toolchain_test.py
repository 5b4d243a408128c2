"""toolchain.toml: discovery, layering, platform overrides, rewrite rules, the cache."""

import json
import os
import platform

import pytest

from conftest import OTHER_USER, SHIM, last_step, one_error_line, plant, run_shim, write_tool, write_toml


@pytest.fixture
def printer(tmp_path):
    """A tool that prints its arguments, then its environment."""
    return write_tool(tmp_path / "tools", "printer", 'printf "%s\\n" "$@"; echo "--env--"; env\n')


def run_printer(args, cwd, env):
    result = run_shim(args, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    argv, _, envtext = result.stdout.partition("--env--\n")
    return argv.splitlines(), dict(line.split("=", 1) for line in envtext.splitlines() if "=" in line)


def test_rewrite_rules_drop_replace_prepend_and_append_arguments(tmp_path, env, printer):
    write_toml(tmp_path / "toolchain.toml", """
        [tool.t]
        program = "%s"
        args.prepend = ["-A"]
        args.append = ["-Z"]
        args.drop = ["-march=native", "-W*"]
        args.replace = { "-O3" = "-O2", "-g" = ["-g1", "-gz"] }
        """ % printer)
    argv, _ = run_printer(["t", "-O3", "-march=native", "-Wall", "-Wextra", "-g", "-c", "a.c", "-W"],
                          tmp_path, env)
    assert argv == ["-A", "-O2", "-g1", "-gz", "-c", "a.c", "-Z"]


def test_env_rules_set_unset_and_prepend_path(tmp_path, env, printer):
    write_toml(tmp_path / "toolchain.toml", """
        [tool.t]
        program = "%s"
        env.set = { LC_ALL = "C", ADDED = "yes" }
        env.unset = ["DROPME"]
        env.path_prepend = ["extra/bin", "/opt/abs"]
        """ % printer)
    env["DROPME"] = "1"
    _, seen = run_printer(["t"], tmp_path, env)
    assert seen["LC_ALL"] == "C" and seen["ADDED"] == "yes"
    assert "DROPME" not in seen
    assert seen["PATH"].split(":")[:3] == [str(tmp_path / "extra/bin"), "/opt/abs", str(SHIM.parent)]


def test_a_relative_program_path_is_relative_to_the_file_that_names_it(tmp_path, env, printer):
    write_toml(tmp_path / "conf" / "toolchain.toml", '[tool.t]\nprogram = "../tools/printer"\n')
    env["SHIM_TOOLCHAIN"] = str(tmp_path / "conf" / "toolchain.toml")
    argv, _ = run_printer(["t", "x"], tmp_path, env)
    assert argv == ["x"]


def test_layers_merge_preset_user_project_env_with_later_layers_winning(tmp_path, env, printer):
    home = tmp_path / "home"
    write_toml(home / ".config" / "shim" / "toolchain.toml", """
        [tool.t]
        program = "%s"
        args.prepend = ["user"]
        args.append = ["user-append"]
        env.set = { FROM_USER = "1", WHO = "user" }
        """ % printer)
    project = tmp_path / "project"
    write_toml(project / "toolchain.toml", """
        [tool.t]
        args.prepend = ["project"]
        env.set = { WHO = "project" }
        """)
    write_toml(tmp_path / "explicit.toml", '[tool.t]\nenv.set = { WHO = "env" }\n')
    build = project / "out" / "deep"
    build.mkdir(parents=True)

    argv, seen = run_printer(["t"], build, env)          # found by walking up from the cwd
    assert argv == ["project", "user-append"]           # lists replace, tables merge
    assert (seen["FROM_USER"], seen["WHO"]) == ("1", "project")

    env["SHIM_TOOLCHAIN"] = str(tmp_path / "explicit.toml")
    _, seen = run_printer(["t"], build, env)
    assert seen["WHO"] == "env"


def test_platform_tables_override_the_general_ones_and_arch_beats_os(tmp_path, env, printer):
    machine = platform.machine()
    write_toml(tmp_path / "toolchain.toml", """
        [tool.t]
        program = "%s"
        env.set = { A = "general", B = "general", C = "general" }
        [platform.linux.tool.t]
        env.set = { A = "linux", B = "linux" }
        [platform.linux-%s.tool.t]
        env.set = { B = "linux-arch" }
        [platform.windows.tool.t]
        env.set = { C = "windows" }
        """ % (printer, machine))
    _, seen = run_printer(["t"], tmp_path, env)
    assert (seen["A"], seen["B"], seen["C"]) == ("linux", "linux-arch", "general")


def test_an_arch_alias_applies_as_the_name_it_stands_for(tmp_path, env, printer):
    from shim.config import keys
    aliases = [a for a, canonical in keys.ARCH_ALIASES.items() if canonical == keys.arch_name(platform.machine())]
    if not aliases:
        pytest.skip("no alias for %s" % platform.machine())
    write_toml(tmp_path / "toolchain.toml", """
        [tool.t]
        program = "%s"
        env.set = { A = "general" }
        [platform.linux-%s.tool.t]
        env.set = { A = "alias" }
        """ % (printer, aliases[0]))
    assert run_printer(["t"], tmp_path, env)[1]["A"] == "alias"
    shown = run_shim(["config", "show"], cwd=tmp_path, env=env).stdout
    assert "# platform: linux-%s\n" % keys.arch_name(platform.machine()) in shown


def test_a_platform_table_that_could_never_apply_is_refused_by_config_check(tmp_path, env):
    conf = write_toml(tmp_path / "toolchain.toml", """
        [platform.linux-amd64.defaults]
        mode = "spawn"
        [platform.darwin-arm64.defaults]
        mode = "exec"
        [platform.linux-x64.defaults]
        mode = "spawn"
        """)
    result = run_shim(["config", "check", conf], env=env)
    one_error_line(result, 78, "%s:5" % conf, "unknown platform 'linux-x64' in 'platform.linux-x64'",
                   "x86_64 (or amd64)")


@pytest.mark.parametrize("preset", ["gcc", "ccache"])
def test_a_launcher_written_in_the_command_runs_once_in_front_of_the_compiler_and_is_recorded(
        tmp_path, env, preset):
    """`shim ccache cc ...` (shim wrap's form of Meson's `ccache cc ...`): cc's step, through
    that ccache, which replaces the preset's launcher rather than running twice."""
    calls = tmp_path / "calls"
    write_tool(tmp_path / "tools", "ccache", 'echo "$@" >> "%s"\ncase $1 in -*) exit 0;; esac\nexec "$@"\n' % calls)
    env["PATH"] = "%s:%s" % (tmp_path / "tools", env["PATH"])
    env["SHIM_TOOLCHAIN"] = str(write_toml(tmp_path / "layer.toml", 'preset = "%s"\n' % preset))
    build = tmp_path / "build"
    build.mkdir()
    (build / "build.ninja").touch()
    (build / "a.c").write_text("int a;\n")
    result = run_shim(["ccache", "cc", "-c", "a.c", "-o", "a.o"], cwd=build, env=env)
    assert result.returncode == 0, result.stderr
    compiler, _, args = calls.read_text().rstrip("\n").partition(" ")
    assert os.path.isabs(compiler) and args == "-c a.c -o a.o"
    assert (build / "a.o").exists()
    rec = last_step(build)
    assert (rec["tool"], rec["kind"], rec["launcher"], rec["out"][0]) == ("cc", "compile", "ccache", "a.o")
    # ccache's own commands stay ccache's.
    assert run_shim(["ccache", "-s"], cwd=build, env=env).returncode == 0
    assert calls.read_text().splitlines()[1:] == ["-s"]


def test_tool_ids_win_over_programs_and_launcher_names_pick_a_tools_rules(tmp_path, env, printer):
    write_toml(tmp_path / "toolchain.toml", """
        [tool.t]
        program = "%s"
        names = ["printer", "cross-*-printer"]
        args.prepend = ["from-t"]
        """ % printer)
    env["PATH"] = "%s:%s" % (printer.parent, env["PATH"])
    assert run_printer(["printer", "x"], tmp_path, env)[0] == ["from-t", "x"]      # launcher form
    assert run_printer([printer, "y"], tmp_path, env)[0] == ["from-t", "y"]        # CMake passes a path
    other = printer.parent / "cross-arm-printer"
    other.symlink_to(printer)
    assert run_printer(["cross-arm-printer", "z"], tmp_path, env)[0] == ["from-t", "z"]   # wildcard


def test_mode_comes_from_shim_mode_then_tool_then_step_kind_then_defaults(tmp_path, env):
    who = write_tool(tmp_path / "tools", "gcc-who", 'tr "\\0" " " < /proc/$PPID/cmdline\n')
    write_toml(tmp_path / "toolchain.toml", """
        [defaults]
        mode = "exec"
        [step.link]
        mode = "spawn"
        [tool.c]
        program = "%s"
        family = "gcc"
        [tool.l]
        program = "%s"
        family = "gcc"
        mode = "exec"
        """ % (who, who))

    def spawned(args):
        result = run_shim(args, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return " -IS " in result.stdout     # the parent is a waiting shim

    assert not spawned(["c", "-c", "a.c"])        # compile: defaults.mode
    assert spawned(["c", "a.o", "-o", "a"])       # link: step.link.mode
    assert not spawned(["l", "a.o", "-o", "a"])   # tool.l.mode wins over step.link
    env["SHIM_MODE"] = "spawn"
    assert spawned(["l", "a.o", "-o", "a"])       # SHIM_MODE wins over everything


def test_the_parsed_toolchain_is_cached_and_a_changed_file_is_seen_at_once(tmp_path, env, printer):
    conf = write_toml(tmp_path / "toolchain.toml", '[tool.t]\nprogram = "%s"\nargs.prepend = ["one"]\n' % printer)
    assert run_printer(["t"], tmp_path, env)[0] == ["one"]
    cache = tmp_path / "home" / ".cache" / "shim"
    entries = list(cache.glob("toolchain-*.marshal"))
    assert len(entries) == 1
    before = entries[0].stat().st_mtime_ns

    assert run_printer(["t"], tmp_path, env)[0] == ["one"]
    assert entries[0].stat().st_mtime_ns == before      # a hit: not rewritten

    conf.write_text(conf.read_text().replace('"one"', '"two"'))   # same size, new mtime
    os.utime(conf, ns=(before + 10**9, before + 10**9))
    assert run_printer(["t"], tmp_path, env)[0] == ["two"]

    (tmp_path / "sub").mkdir()
    write_toml(tmp_path / "sub" / "toolchain.toml",      # the nearest file only, not every one above
               '[tool.t]\nprogram = "%s"\nargs.prepend = ["nearer"]\n' % printer)
    assert run_printer(["t"], tmp_path / "sub", env)[0] == ["nearer"]


def test_an_unwritable_cache_directory_only_costs_speed(tmp_path, env, printer):
    write_toml(tmp_path / "toolchain.toml", '[tool.t]\nprogram = "%s"\nargs.prepend = ["ok"]\n' % printer)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env["SHIM_CACHE_DIR"] = str(blocker / "cache")
    assert run_printer(["t"], tmp_path, env)[0] == ["ok"]
    env["SHIM_CACHE_DIR"] = "/dev/full"
    assert run_printer(["t"], tmp_path, env)[0] == ["ok"]


def test_a_corrupt_cache_file_is_ignored_and_replaced(tmp_path, env, printer):
    write_toml(tmp_path / "toolchain.toml", '[tool.t]\nprogram = "%s"\nargs.prepend = ["ok"]\n' % printer)
    assert run_printer(["t"], tmp_path, env)[0] == ["ok"]
    (entry,) = (tmp_path / "home" / ".cache" / "shim").glob("toolchain-*.marshal")
    entry.write_bytes(b"\x00garbage")
    assert run_printer(["t"], tmp_path, env)[0] == ["ok"]
    assert entry.read_bytes() != b"\x00garbage"


def test_the_default_preset_follows_what_is_installed(tmp_path, env):
    fake = tmp_path / "onlyclang"
    write_tool(fake, "clang", "exit 0\n")
    env["PATH"] = "%s:%s" % (SHIM.parent, fake)      # no gcc on this PATH
    result = run_shim(["config", "show"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("# preset: clang on rust on go (clang found at %s" % fake)
    env["PATH"] = "%s:/usr/bin:/bin" % SHIM.parent
    assert run_shim(["config", "show"], cwd=tmp_path, env=env).stdout.startswith("# preset: gcc on rust on go (gcc found at")
    write_toml(tmp_path / "toolchain.toml", 'preset = "clang"\n')
    shown = run_shim(["config", "show"], cwd=tmp_path, env=env).stdout
    assert shown.startswith("# preset: clang on rust on go (preset = 'clang' in toolchain.toml)")
    assert 'program = "clang"' in shown


def test_a_launcher_chain_runs_in_front_of_the_compiler_for_its_step_kind_only(tmp_path, env, printer):
    (tmp_path / "build.ninja").touch()              # a build dir: {build_dir} has a value
    launch = write_tool(tmp_path / "tools", "launch", 'echo "launched by $0 with $LAUNCH_FOR"\nexec "$@"\n')
    write_toml(tmp_path / "toolchain.toml", """
        [step.compile]
        launcher = ["%s"]
        [launcher.launch]
        env.set = { LAUNCH_FOR = "{build_dir}" }
        [tool.t]
        program = "%s"
        family = "gcc"
        [tool.u]
        program = "%s"
        family = "gcc"
        launcher = []
        """ % (launch, printer, printer))
    argv, seen = run_printer(["t", "-c", "a.c"], tmp_path, env)
    assert argv == ["launched by %s with %s" % (launch, tmp_path), "-c", "a.c"]
    assert run_printer(["t", "a.o", "-o", "a"], tmp_path, env)[0] == ["a.o", "-o", "a"]   # a link: local
    assert run_printer(["u", "-c", "a.c"], tmp_path, env)[0] == ["-c", "a.c"]             # tool opts out
    recs = [json.loads(line) for line in (tmp_path / ".shim" / "ledger-v1.jsonl").read_text().splitlines()[1:]]
    recs = [r for r in recs if r["rec"] in ("step", "start")]          # not the pause watcher's samples
    assert [r.get("launcher") for r in recs] == ["launch", None, None]


def test_a_remote_launcher_scales_the_memory_estimate(tmp_path, env, printer):
    (tmp_path / "build.ninja").touch()              # a build dir: steps run here leave a ledger
    write_toml(tmp_path / "toolchain.toml", """
        [tool.t]
        program = "%s"
        family = "gcc"
        launcher = ["env"]
        [launcher.env]
        remote = true
        memory_factor = 0.25
        [step.compile]
        memory = "1GiB"
        """ % printer)
    env["SHIM_MEMORY_BUDGET"] = "8GiB"
    run_printer(["t", "-c", "a.c"], tmp_path, env)
    rec = last_step(tmp_path)
    assert rec["est"] == 256 << 20 and rec["launcher"] == "env"


# --- whose toolchain.toml: another user's is skipped, ours open to others is refused -----------


@pytest.fixture
def shared_tmp(tmp_path):
    """A directory like /tmp: anyone may create files in it (sticky, 1777)."""
    d = tmp_path / "tmp"
    d.mkdir()
    d.chmod(0o1777)
    return d


def test_a_toolchain_toml_planted_by_another_user_is_skipped_with_one_warning(shared_tmp, env, other_user):
    planted = plant(shared_tmp / "toolchain.toml", other_user, mode=0o644,
                    text='[tool.cc]\nprogram = "/bin/false"\n[defaults]\nmode = "bogus"\n')
    project = shared_tmp / "proj"
    project.mkdir()
    result = run_shim(["cc", "--version"], cwd=project, env=env)
    assert result.returncode == 0 and "gcc" in result.stdout, result.stderr     # the preset's gcc ran
    assert result.stderr.splitlines() == [
        "shim: warning: ignoring %s: %s is owned by uid %d (%s), not by you or root; looking further up "
        "(warned once per build)" % (planted, planted, other_user[0], OTHER_USER)]
    assert "SHIM_TOOLCHAIN" not in result.stderr
    again = run_shim(["cc", "--version"], cwd=project, env=env)       # the same build: no second warning
    assert again.returncode == 0 and again.stderr == ""


def test_our_own_toolchain_toml_below_a_planted_one_shadows_it(shared_tmp, env, other_user, printer):
    plant(shared_tmp / "toolchain.toml", other_user, mode=0o644, text='[defaults]\nmode = "bogus"\n')
    project = shared_tmp / "proj"
    write_toml(project / "toolchain.toml", '[tool.t]\nprogram = "%s"\n' % printer)
    (project / "sub").mkdir()
    argv, _ = run_printer(["t", "-x"], cwd=project / "sub", env=env)
    assert argv == ["-x"]


def test_a_toolchain_toml_in_a_folder_of_another_user_is_skipped(shared_tmp, env, other_user):
    theirs = plant(shared_tmp / "theirs", other_user, directory=True, mode=0o755)
    write_toml(theirs / "toolchain.toml", '[defaults]\nmode = "bogus"\n')     # a file of ours, in their folder
    (theirs / "build").mkdir()
    result = run_shim(["cc", "--version"], cwd=theirs / "build", env=env)
    assert result.returncode == 0, result.stderr
    assert "ignoring %s: %s is owned by uid %d" % (theirs / "toolchain.toml", theirs, other_user[0]) in result.stderr


def test_a_planted_toolchain_does_not_stop_a_shim_build_below_it(shared_tmp, env, other_user, example):
    plant(shared_tmp / "toolchain.toml", other_user, mode=0o644, text="this is not toml [[[\n")
    build = shared_tmp / "example"
    example.rename(build)
    (build / "toolchain.toml").unlink()             # nothing of ours in between: the walk reaches theirs
    result = run_shim(["build", "-C", build], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (build / "build" / "tally").exists()
    assert "ignoring %s" % (shared_tmp / "toolchain.toml") in result.stderr


def test_a_symlink_planted_by_another_user_is_skipped_not_followed_to_a_root_file(shared_tmp, env, other_user):
    planted = shared_tmp / "toolchain.toml"
    planted.symlink_to("/etc/passwd")          # root's file, not TOML: trusted, it would stop every build
    os.chown(planted, *other_user, follow_symlinks=False)
    project = shared_tmp / "proj"
    project.mkdir()
    result = run_shim(["cc", "--version"], cwd=project, env=env)
    assert result.returncode == 0 and "gcc" in result.stdout, result.stderr
    assert result.stderr.splitlines() == [
        "shim: warning: ignoring %s: %s is owned by uid %d (%s), not by you or root; looking further up "
        "(warned once per build)" % (planted, planted, other_user[0], OTHER_USER)]
