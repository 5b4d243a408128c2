"""`shim wrap` on hand-written, CMake-generated and configure.py-style manifests.

The wrapped files are checked with the real ninja: they must load, and the commands
ninja would run must be the original ones with `shim ` in front of exactly the compilers,
archivers and linkers. Building the wrapped CMake project needs the installed shim and
is left to the integration tests; here ninja runs dry (-n).
"""

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shim.generators import ninjafile
from shim.cli import wrap as wrap_cli
from shim.generators import wrap
from shim.exit_status import BAD_INPUT, USAGE, ShimError

NINJA = Path(sys.executable).parent / "ninja"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ninja"
CORPUS = sorted(p.name for p in FIXTURES.glob("*.ninja"))


def copy_fixtures(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES, tmp_path / "fixtures"))


def snapshot(directory: Path) -> dict:
    """Every file under *directory*, as bytes."""
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def run_wrap(capsys, path, **options):
    """(exit status, stdout lines, stderr) of `shim wrap PATH OPTIONS`."""
    status = wrap_cli.run(str(path), **options)
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def ninja(directory: Path, *args: str) -> str:
    result = subprocess.run([str(NINJA), *args], cwd=directory, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode("utf-8", "surrogateescape")


def commands(directory: Path, manifest: str) -> list:
    """The command of every build statement that runs one, as ninja evaluates it."""
    parsed = ninjafile.parse(str(directory / manifest))
    targets = [ninjafile.canonical_path((b.outputs or b.implicit_outputs)[0])
               for b in parsed.builds if b.rule != "phony"]
    if not targets:
        return []
    return ninja(directory, "-f", manifest, "-t", "commands", "-s", *targets).split("\n")[:-1]


def write_project(directory: Path, files: dict) -> Path:
    """*directory* with *files* ({name: text, dedented}) in it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def without_shim_words(command: str) -> str:
    return command.replace("shim ", "")


# --- fixtures -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORPUS)
def test_wrap_then_undo_gives_back_every_fixture_and_its_includes_byte_for_byte(tmp_path, capsys, name):
    directory = copy_fixtures(tmp_path)
    before = snapshot(directory)
    run_wrap(capsys, directory / name)
    run_wrap(capsys, directory / name, undo=True)
    assert snapshot(directory) == before


@pytest.mark.e2e
@pytest.mark.parametrize("name", CORPUS)
def test_ninja_accepts_every_wrapped_fixture_and_runs_its_commands_with_shim_in_front(
        tmp_path, capsys, name):
    directory = copy_fixtures(tmp_path)
    before = commands(directory, name)
    run_wrap(capsys, directory / name)
    after = commands(directory, name)
    assert [without_shim_words(c) for c in after] == [without_shim_words(c) for c in before]
    assert ninja(directory, "-f", name, "-t", "rules")


@pytest.mark.parametrize("name", CORPUS)
def test_wrapping_a_wrapped_fixture_changes_nothing(tmp_path, capsys, name):
    directory = copy_fixtures(tmp_path)
    run_wrap(capsys, directory / name)
    once = snapshot(directory)
    status, out, _ = run_wrap(capsys, directory / name)
    assert (status, snapshot(directory)) == (0, once)
    assert out[-1].startswith("shim wrap: nothing to wrap")
    assert run_wrap(capsys, directory / name, check=True)[0] == 0


@pytest.mark.e2e
def test_only_compilers_archivers_and_linkers_get_shim_in_front(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    status, out, _ = run_wrap(capsys, directory / "handwritten.ninja")
    shown = directory / "handwritten.ninja"
    assert (status, out) == (0, [
        "wrapped rule cc (gcc) in %s" % shown,
        "wrapped rule cxx_in_dir (g++) in %s" % shown,
        "wrapped rule archive (ar) in %s" % shown,
        "wrapped rule link (g++) in %s" % shown,
        "wrapped rule cached (ccache gcc) in %s" % shown,
        "wrapped rule mixed (gcc, clang) in %s" % shown,
        "shim wrap: wrapped 6 rules in 1 file (3 rules already wrapped)"])
    assert commands(directory, "handwritten.ninja") == [
        "shim gcc -O2 -MMD -MF obj/a.o.d -c a.c -o obj/a.o",
        "shim cc -O2 -c b.c -o obj/b.o",                        # the user's own shim
        'cd sub && LC_ALL=C shim "/usr/bin/g++" -c ../c.cc -o ../obj/c.o',
        "rm -f obj/lib.a && shim ar rcs obj/lib.a obj/a.o obj/b.o && ranlib obj/lib.a",
        "shim /usr/bin/g++ -o bin/app @bin/app.rsp",
        "/opt/bin/shim link -o bin/app2 obj/c.o",
        "shim ccache gcc -c d.c -o obj/d.o",                     # shim in front of the launcher
        "python3 gen.py > gen.h",                                # generator rule
        "./tools/embed.sh data.bin > embed.h 2>&1",
        ": && shim gcc -E m.c | sed -e s/a/b/ > mixed.i; shim clang -fsyntax-only m.c",
        "shim gcc -E o.c | clang -fsyntax-only -x c - && touch own.stamp"]
    text = (directory / "handwritten.ninja").read_text()
    assert text.startswith("# shim-wrap: cc@0 cxx_in_dir@1 archive@1 link@0 cached@0 mixed@1 mixed@3\n")
    assert "  command = shim $cc $cflags" in text               # before the variable, as written


def test_undo_removes_only_what_wrap_inserted_and_keeps_the_users_own_shim(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    run_wrap(capsys, directory / "handwritten.ninja")
    status, out, _ = run_wrap(capsys, directory / "handwritten.ninja", undo=True)
    assert status == 0 and out[-1] == "shim wrap: unwrapped 6 rules in 1 file"
    text = (directory / "handwritten.ninja").read_text()
    assert "command = shim cc $cflags" in text and "command = /opt/bin/shim link" in text
    assert text == (FIXTURES / "handwritten.ninja").read_text()
    assert run_wrap(capsys, directory / "handwritten.ninja", undo=True)[1] == [
        "shim wrap: nothing to undo: no file starts with a '# shim-wrap:' line"]


def test_undo_warns_about_a_recorded_part_edited_since_and_undoes_the_rest(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    path = directory / "handwritten.ninja"
    run_wrap(capsys, path)
    path.write_text(path.read_text().replace("command = shim $cxx -o", "command = $cxx -o"))
    status, out, err = run_wrap(capsys, path, undo=True)
    assert status == 0 and out[-1] == "shim wrap: unwrapped 5 rules in 1 file"
    assert err == ("shim: warning: %s: rule link, part 0: no 'shim ' there any more (edited since "
                   "shim wrap?): left as it is\n" % path)
    assert path.read_text() == (FIXTURES / "handwritten.ninja").read_text()


def test_check_exits_1_and_names_the_rules_until_the_manifest_is_wrapped(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    path = directory / "crlf.ninja"
    before = snapshot(directory)
    assert run_wrap(capsys, path, check=True) == (1, [
        "would wrap rule cc (gcc) in %s" % path, "would wrap rule ar (ar) in %s" % path,
        "shim wrap: 2 rules in 1 file would be wrapped"], "")
    assert snapshot(directory) == before
    assert run_wrap(capsys, path, check=True, undo=True)[0] == 0
    run_wrap(capsys, path)
    assert run_wrap(capsys, path, check=True) == (
        0, ["shim wrap: nothing to wrap (2 rules already wrapped)"], "")
    assert run_wrap(capsys, path, check=True, undo=True)[0] == 1
    assert path.read_bytes().startswith(b"# shim-wrap: cc@0 ar@1\r\n")   # the file's own line ending


def test_check_of_a_manifest_without_compilers_is_0(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    assert run_wrap(capsys, directory / "comments.ninja", check=True) == (
        0, ["shim wrap: nothing to wrap: no compile, link or archive rule found"], "")


def test_rules_in_included_and_subninja_files_are_rewritten_in_place_keeping_their_mode(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    (directory / "inc" / "shared.ninja").chmod(0o640)
    status, out, _ = run_wrap(capsys, directory / "scoping.ninja")
    assert out == ["wrapped rule cc (gcc) in %s" % (directory / "scoping.ninja"),
                   "wrapped rule ar (ar) in %s" % (directory / "inc/shared.ninja"),
                   "wrapped rule cc (clang) in %s" % (directory / "sub/child.ninja"),
                   "wrapped rule link (clang) in %s" % (directory / "sub/child.ninja"),
                   "shim wrap: wrapped 4 rules in 3 files"]
    assert stat.S_IMODE((directory / "inc" / "shared.ninja").stat().st_mode) == 0o640
    assert (directory / "inc" / "shared.ninja").read_text().startswith("# shim-wrap: ar@1\n")
    assert (directory / "sub" / "child.ninja").read_text().startswith("# shim-wrap: cc@0 link@0\n")
    assert sorted(p.name for p in directory.rglob("*") if p.name.startswith(".")) == []   # no temp files


@pytest.mark.e2e
def test_dash_o_writes_the_wrapped_top_file_elsewhere(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    before = snapshot(directory)
    output = str(directory / "wrapped.ninja")
    status, out, _ = run_wrap(capsys, directory / "handwritten.ninja", output=output)
    assert status == 0 and out[-1] == "wrote %s" % (directory / "wrapped.ninja")
    assert {k: v for k, v in snapshot(directory).items() if k.name != "wrapped.ninja"} == before
    assert commands(directory, "wrapped.ninja")[0] == "shim gcc -O2 -MMD -MF obj/a.o.d -c a.c -o obj/a.o"


def test_dash_o_refuses_rules_that_live_in_included_files(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    before = snapshot(directory)
    with pytest.raises(ShimError) as raised:
        wrap_cli.run(str(directory / "scoping.ninja"), output=str(tmp_path / "out.ninja"))
    assert raised.value.status == USAGE
    assert "rules to wrap live in %s (included)" % (directory / "inc/shared.ninja") in str(raised.value)
    assert snapshot(directory) == before and not (tmp_path / "out.ninja").exists()


@pytest.mark.e2e
def test_program_patterns_and_named_rules_widen_what_is_wrapped(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    path = directory / "handwritten.ninja"
    run_wrap(capsys, path, programs=["ranlib", "*/embed.sh"], rules=["cached"])
    assert commands(directory, "handwritten.ninja")[3] == (
        "rm -f obj/lib.a && shim ar rcs obj/lib.a obj/a.o obj/b.o && shim ranlib obj/lib.a")
    assert commands(directory, "handwritten.ninja")[6:9] == [
        "shim ccache gcc -c d.c -o obj/d.o", "python3 gen.py > gen.h",
        "shim ./tools/embed.sh data.bin > embed.h 2>&1"]
    # Without the options the new wraps are still known as wrapped, and undo is exact.
    assert run_wrap(capsys, path, check=True)[0] == 0
    run_wrap(capsys, path, undo=True)
    assert path.read_bytes() == (FIXTURES / "handwritten.ninja").read_bytes()


def test_a_later_wrap_with_more_programs_extends_the_record_and_undo_stays_exact(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    path = directory / "handwritten.ninja"
    run_wrap(capsys, path)
    status, out, _ = run_wrap(capsys, path, programs=["ranlib"])
    assert out == ["wrapped rule archive (ranlib) in %s" % path,
                   "shim wrap: wrapped 1 rule in 1 file (8 rules already wrapped)"]
    assert path.read_text().startswith(
        "# shim-wrap: cc@0 cxx_in_dir@1 archive@1 link@0 cached@0 mixed@1 mixed@3 archive@2\n")
    run_wrap(capsys, path, undo=True)
    assert path.read_bytes() == (FIXTURES / "handwritten.ninja").read_bytes()


@pytest.mark.parametrize("options, fragment", [
    ({"rules": ["nosuch"]}, "--rule nosuch: no rule of that name"),
    ({"rules": ["phony"]}, "--rule phony: phony is ninja's built-in rule"),
    ({"rules": ["gen"]}, "--rule gen: a generator rule"),
    ({"check": True, "output": "x.ninja"}, "--check writes nothing"),
    ({"undo": True, "programs": ["nvcc"]}, "--program and --rule do not apply"),
])
def test_options_that_make_no_sense_are_usage_errors(tmp_path, options, fragment):
    directory = copy_fixtures(tmp_path)
    with pytest.raises(ShimError) as raised:
        wrap_cli.run(str(directory / "handwritten.ninja"), **options)
    assert raised.value.status == USAGE and fragment in str(raised.value)


def test_a_malformed_manifest_is_one_line_naming_file_and_line(tmp_path):
    (tmp_path / "rules.ninja").write_text("rule cc\n  command = gcc -c $in\n  flags = -O2\n")
    (tmp_path / "build.ninja").write_text("include rules.ninja\n")
    with pytest.raises(ShimError) as raised:
        wrap_cli.run(str(tmp_path / "build.ninja"))
    assert (raised.value.status, str(raised.value)) == (
        BAD_INPUT, "%s:3: unexpected variable 'flags'" % (tmp_path / "rules.ninja"))


def test_a_missing_manifest_and_a_directory_argument(tmp_path, capsys):
    with pytest.raises(ShimError) as raised:
        wrap_cli.run(str(tmp_path))
    assert raised.value.status == USAGE and "build.ninja" in str(raised.value)
    shutil.copy(FIXTURES / "crlf.ninja", tmp_path / "build.ninja")
    assert run_wrap(capsys, tmp_path)[1][-1] == "shim wrap: wrapped 2 rules in 1 file"


def test_the_click_command_parses_its_options_and_returns_the_status(tmp_path, capsys):
    directory = copy_fixtures(tmp_path)
    args = [str(directory / "handwritten.ninja"), "--check", "--program", "ranlib", "--rule", "cached"]
    assert wrap_cli.wrap.main(args, standalone_mode=False) == 1
    assert "would wrap rule archive (ar, ranlib)" in capsys.readouterr().out
    assert wrap_cli.wrap.main(["--help"], standalone_mode=False) == 0
    help_text = capsys.readouterr().out
    for option in ("-o OUT", "--check", "--undo", "--program PATTERN", "--rule NAME"):
        assert option in help_text


# --- reading commands -----------------------------------------------------------------------


def parts_of(command: str, variables: str = "") -> list:
    manifest = ninjafile.parse("build.ninja", "%srule r\n  command = %s\n" % (variables, command))
    return [(p.program, p.unresolved) for p in wrap.command_parts(manifest.rules[0])]


@pytest.mark.parametrize("command, variables, parts", [
    ("gcc -c $in", "", [("gcc", False)]),
    ("cd $dir && FOO=1 BAR='a b' \"/usr/bin/g++\" -c $in", "", [("cd", False), ("/usr/bin/g++", False)]),
    ("$PRE_LINK && /usr/bin/ar qc $out $in && $POST_BUILD", "",
     [("", True), ("/usr/bin/ar", False), ("", True)]),
    ("${LAUNCHER}${CODE_CHECK}/usr/bin/c++ -c $in", "", [("/usr/bin/c++", False)]),
    ("$cc -c $in 2>&1 | tee log; ld -r", "cc = clang-17\n",
     [("clang-17", False), ("tee", False), ("ld", False)]),
    ("$empty $cc -c $in", "cc = gcc\nempty =\n", [("gcc", False)]),
    ("'a b/gcc' -c $in || x\\ y", "", [("a b/gcc", False), ("x y", False)]),
    ("$BACKGROUND& gcc -c $in >$out.log 2>&1", "", [("", True), ("gcc", False)]),
])
def test_command_parts_find_the_program_of_each_simple_command(command, variables, parts):
    assert parts_of(command, variables) == parts


@pytest.mark.parametrize("command, variables, wrapped", [
    ("${LAUNCHER}/usr/bin/c++ -c $in", "", "${LAUNCHER}shim /usr/bin/c++ -c $in"),
    ("$LAUNCHER/usr/bin/c++ -c $in", "", "shim $LAUNCHER/usr/bin/c++ -c $in"),   # not `$LAUNCHERshim`
    ("$prefix$cc -c $in", "cc = gcc\nprefix =\n", "shim $prefix$cc -c $in"),
    ("$\n    gcc -c $in", "", "$\n    shim gcc -c $in"),
    ("x86_64-linux-gnu-gcc-12 -c $in && llvm-ar rcs $out", "",
     "shim x86_64-linux-gnu-gcc-12 -c $in && shim llvm-ar rcs $out"),
    # Launcher chains a generator wrote: shim goes in front of the chain, after env's assignments.
    ("/usr/bin/ccache c++ $ARGS -c $in", "", "shim /usr/bin/ccache c++ $ARGS -c $in"),
    ("sccache distcc $cc -c $in", "cc = gcc\n", "shim sccache distcc $cc -c $in"),
    ("env CCACHE_SLOPPINESS=time_macros ccache /usr/bin/cc -c $in", "",
     "env CCACHE_SLOPPINESS=time_macros shim ccache /usr/bin/cc -c $in"),
    ("cd sub && env A=1 B=2 gcc -c $in", "", "cd sub && env A=1 B=2 shim gcc -c $in"),
])
def test_shim_goes_where_the_shell_and_ninja_still_see_the_same_program(
        tmp_path, capsys, command, variables, wrapped):
    path = tmp_path / "build.ninja"
    original = "%srule r\n  command = %s\nbuild o: r i\n" % (variables, command)
    path.write_text(original)
    run_wrap(capsys, path)
    assert path.read_text().split("\n", 1)[1] == original.replace(command, wrapped)


@pytest.mark.parametrize("command", [
    "ccache -s",                          # ccache's own command: no compiler
    "ccache nvcc -c $in",                 # behind the launcher, a program wrap does not know
    "env gcc -c $in",                     # env without assignments: not read as a prefix
])
def test_a_launcher_in_front_of_no_known_compiler_is_left_alone(tmp_path, capsys, command):
    path = tmp_path / "build.ninja"
    original = "rule r\n  command = %s\nbuild o: r i\n" % command
    path.write_text(original)
    run_wrap(capsys, path)
    assert path.read_text() == original


@pytest.mark.parametrize("command, tool, why", [
    ("nice -n 5 gcc -c $in -o $out", "gcc", "behind nice, which shim wrap does not know"),
    ("/usr/bin/cmake -E __run_co_compile --tidy=clang-tidy --source=$in -- /usr/bin/cc -c $in", "cc",
     "behind cmake, which shim wrap does not know"),
    ("$CODE_CHECK ccache nvcc -c $in && time ld -r $in", "ld", "behind time, which shim wrap does not know"),
])
def test_check_names_the_rules_that_still_run_a_compiler_outside_shim_and_fails(tmp_path, capsys,
                                                                                 command, tool, why):
    path = tmp_path / "build.ninja"
    path.write_text("rule cc\n  command = gcc -c $in\nrule r\n  command = %s\n"
                    "build a: cc a.c\nbuild o: r i\n" % command)
    line = "rule r in %s runs %s outside shim: %s" % (path, tool, why)
    assert run_wrap(capsys, path, check=True) == (1, [
        line, "would wrap rule cc (gcc) in %s" % path,
        "shim wrap: 1 rule in 1 file would be wrapped; 1 rule runs a compiler, archiver or linker outside shim"],
        "")
    assert run_wrap(capsys, path)[1] == [
        line, "wrapped rule cc (gcc) in %s" % path,
        "shim wrap: wrapped 1 rule in 1 file; 1 rule runs a compiler, archiver or linker outside shim"]
    assert run_wrap(capsys, path, check=True) == (1, [
        line, "shim wrap: nothing to wrap (1 rule already wrapped); "
              "1 rule runs a compiler, archiver or linker outside shim"], "")
    # --rule wraps the first part whatever it runs: the way out when that is the wrapper,
    # not when the compiler is in a later part.
    run_wrap(capsys, path, rules=["r"])
    assert run_wrap(capsys, path, check=True)[0] == (1 if " && " in command else 0)


def test_a_program_from_inside_a_variables_value_is_reported_and_left_alone(tmp_path, capsys):
    path = tmp_path / "build.ninja"
    path.write_text("cmd = cd sub && gcc\nrule r\n  command = $cmd -c $in\nbuild o: r i\n")
    status, out, _ = run_wrap(capsys, path)
    assert out == ["rule r in %s runs gcc outside shim: its program comes from inside a variable's value" % path,
                   "shim wrap: nothing to wrap: no compile, link or archive rule found; "
                   "1 rule runs a compiler, archiver or linker outside shim"]
    assert run_wrap(capsys, path, check=True)[0] == 1


@pytest.mark.parametrize("program, expected", [
    ("/usr/bin/c++", True), ("cc", True), ("x86_64-linux-gnu-gcc-12", True), ("clang++-17", True),
    ("llvm-ar", True), ("gcc-ar-12", True), ("ld.lld", True), ("mold", True), ("cl", True),
    ("link", True), ("ranlib", False), ("cmake", False), ("ninja", False), ("ccache", False),
    ("python3", False), ("shim", False), ("/opt/bin/shim", False), (":", False), ("cd", False),
])
def test_recognised_programs(program, expected):
    assert wrap.recognised(program) is expected


# --- generated manifests ----------------------------------------------------------------------


def write_configure_py_like(path: Path) -> None:
    """A manifest as ninja's configure.py writes it: its rules and variables, ninja_syntax."""
    from ninja.ninja_syntax import Writer
    with open(path, "w") as f:
        n = Writer(f)
        n.comment("This file is used to build ninja itself.")
        n.comment("It is generated by configure.py.")
        n.newline()
        n.variable("ninja_required_version", "1.3")
        n.newline()
        n.comment("The arguments passed to configure.py, for rerunning it.")
        n.variable("configure_args", "")
        n.newline()
        n.variable("root", ".")
        n.variable("builddir", "build")
        n.variable("cxx", "c++")
        n.variable("ar", "ar")
        n.variable("cflags", ["-g", "-Wall", "-Wextra", "-Wno-deprecated", "-Wno-missing-field-initializers",
                              "-Wno-unused-parameter", "-fno-rtti", "-fno-exceptions", "-std=c++14",
                              "-fvisibility=hidden", "-pipe", "'-DNINJA_PYTHON=\"python\"'", "-O2",
                              "-DNDEBUG", "-fdiagnostics-color", "-DUSE_PPOLL", "-I."])
        n.variable("ldflags", "-L$builddir")
        n.newline()
        n.rule("cxx", command="$cxx -MMD -MT $out -MF $out.d $cflags -c $in -o $out",
               description="CXX $out", depfile="$out.d", deps="gcc")
        n.newline()
        n.rule("ar", command="rm -f $out && $ar crs $out $in", description="AR $out")
        n.newline()
        n.rule("link", command="$cxx $ldflags -o $out $in $libs", description="LINK $out")
        n.newline()
        n.comment("browse_py.h is used to inline browse.py.")
        n.rule("inline", command='"$root/src/inline.sh" $varname < $in > $out', description="INLINE $out")
        n.build("$builddir/browse_py.h", "inline", "$root/src/browse.py", implicit="$root/src/inline.sh",
                variables=[("varname", "kBrowsePy")])
        n.newline()
        objs = []
        for name in ("build", "build_log", "clean", "depfile_parser", "lexer", "manifest_parser", "util"):
            objs += n.build("$builddir/%s.o" % name, "cxx", "$root/src/%s.cc" % name,
                            order_only="$builddir/browse_py.h" if name == "build" else None)
        n.build("$builddir/libninja.a", "ar", objs)
        n.newline()
        n.build("ninja", "link", n.build("$builddir/ninja.o", "cxx", "$root/src/ninja.cc"),
                implicit="$builddir/libninja.a", variables=[("libs", "-lninja")])
        n.default("ninja")
        n.newline()
        n.rule("configure", command="${configure_env}python3 $root/configure.py $configure_args",
               generator=True)
        n.build("build.ninja", "configure", implicit=["$root/configure.py", "$root/misc/ninja_syntax.py"])
        n.newline()
        n.build("all", "phony", "ninja")


@pytest.mark.e2e
def test_a_configure_py_style_manifest_wraps_cxx_ar_and_link_and_unwraps_exactly(tmp_path, capsys):
    path = tmp_path / "build.ninja"
    write_configure_py_like(path)
    original = path.read_bytes()
    manifest = ninjafile.parse(str(path))
    assert ninjafile.encode(manifest.top.emit()) == original
    before = commands(tmp_path, "build.ninja")
    assert run_wrap(capsys, path, check=True)[0] == 1
    status, out, _ = run_wrap(capsys, path)
    assert out == ["wrapped rule cxx (c++) in %s" % path, "wrapped rule ar (ar) in %s" % path,
                   "wrapped rule link (c++) in %s" % path, "shim wrap: wrapped 3 rules in 1 file"]
    after = commands(tmp_path, "build.ninja")
    assert [without_shim_words(c) for c in after] == before
    # inline.sh, 7 compiles, the archive, ninja.o, the link, the generator
    assert [c.split()[0] for c in after] == (
        ['"./src/inline.sh"'] + ["shim"] * 7 + ["rm", "shim", "shim", "python3"])
    assert "&& shim ar crs build/libninja.a" in after[8]
    assert run_wrap(capsys, path, check=True)[0] == 0
    run_wrap(capsys, path, undo=True)
    assert path.read_bytes() == original


CMAKE_PROJECT = {
    "CMakeLists.txt": """\
        cmake_minimum_required(VERSION 3.13)
        project(tally C CXX)
        add_library(stats STATIC stats.c)
        add_executable(tally main.cpp)
        target_link_libraries(tally stats)
        """,
    "stats.c": "int stats_sum(int a, int b) { return a + b; }\n",
    "main.cpp": 'extern "C" int stats_sum(int, int);\nint main() { return stats_sum(1, -1); }\n',
}


@pytest.fixture(scope="module")
def cmake_tree(tmp_path_factory):
    """A tiny C/C++ project (a static library, a program) configured by `cmake -G Ninja`."""
    cmake = shutil.which("cmake")
    if cmake is None or shutil.which("cc") is None or shutil.which("c++") is None:
        pytest.skip("cmake, cc and c++ are needed to generate a CMake manifest")
    root = tmp_path_factory.mktemp("cmake")
    write_project(root / "src", CMAKE_PROJECT)
    result = subprocess.run([cmake, "-G", "Ninja", "-S", str(root / "src"), "-B", str(root / "build"),
                             "-DCMAKE_MAKE_PROGRAM=%s" % NINJA], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout
    return root / "build"


@pytest.fixture
def cmake_build(cmake_tree, tmp_path):
    """A private copy of the configured build directory (mtimes kept: nothing looks stale)."""
    return Path(shutil.copytree(cmake_tree, tmp_path / "build", symlinks=True))


def dry_run(build: Path) -> list:
    """The commands `ninja -n -v` would run, without the [i/n] progress prefix."""
    return [re.sub(r"^\[\d+/\d+\] ", "", line) for line in ninja(build, "-n", "-v").splitlines()
            if line.startswith("[")]


@pytest.mark.e2e
def test_a_cmake_manifest_and_its_rules_file_round_trip_and_only_the_rules_file_changes(cmake_build, capsys):
    before = snapshot(cmake_build)
    manifest = ninjafile.parse(str(cmake_build / "build.ninja"))
    assert [Path(f.path).name for f in manifest.files] == ["build.ninja", "rules.ninja"]
    for nfile in manifest.files:
        assert ninjafile.encode(nfile.emit()) == Path(nfile.real_path).read_bytes()
    status, out, _ = run_wrap(capsys, cmake_build)
    rules_file = cmake_build / "CMakeFiles" / "rules.ninja"
    assert [line.split(" (")[0] for line in out[:-1]] == [
        "wrapped rule C_COMPILER__stats_", "wrapped rule C_STATIC_LIBRARY_LINKER__stats_",
        "wrapped rule CXX_COMPILER__tally_", "wrapped rule CXX_EXECUTABLE_LINKER__tally_"]
    assert all(line.endswith(" in %s" % rules_file) for line in out[:-1])
    after = snapshot(cmake_build)
    assert [k for k in after if after[k] != before[k]] == [Path("CMakeFiles/rules.ninja")]
    wrapped = ninjafile.parse(str(cmake_build / "build.ninja"))
    untouched = {r.name: r.evaluate("command") for r in wrapped.rules
                 if r.name in ("CUSTOM_COMMAND", "RERUN_CMAKE", "CLEAN", "HELP")}
    assert untouched == {r.name: r.evaluate("command") for r in manifest.rules if r.name in untouched}
    assert ninja(cmake_build, "-t", "rules")


@pytest.mark.e2e
def test_ninja_dry_run_of_wrapped_cmake_puts_shim_before_compiler_archiver_and_linker(cmake_build, capsys):
    before = dry_run(cmake_build)
    run_wrap(capsys, cmake_build)
    after = dry_run(cmake_build)
    assert [without_shim_words(c) for c in after] == before
    compiles = [c for c in after if " -c " in c]
    archive, = [c for c in after if " qc " in c]
    link, = [c for c in after if c not in compiles and c != archive]
    assert len(compiles) == 2 and all(re.match(r"shim \S*/(cc|c\+\+) ", c) for c in compiles)
    assert re.search(r" && shim \S*ar qc libstats\.a ", archive)
    assert re.search(r" && \S*ranlib libstats\.a", archive) and "shim " + "ranlib" not in archive
    assert archive.count("shim ") == 1
    assert re.match(r": && shim \S*/c\+\+ .* -o tally ", link)


@pytest.mark.e2e
def test_wrapping_cmake_twice_changes_nothing_and_undo_restores_the_generated_bytes(cmake_build, capsys):
    before = snapshot(cmake_build)
    assert run_wrap(capsys, cmake_build, check=True)[0] == 1
    run_wrap(capsys, cmake_build)
    wrapped = snapshot(cmake_build)
    assert run_wrap(capsys, cmake_build)[1] == ["shim wrap: nothing to wrap (4 rules already wrapped)"]
    assert snapshot(cmake_build) == wrapped
    assert run_wrap(capsys, cmake_build, check=True)[0] == 0
    run_wrap(capsys, cmake_build, undo=True)
    assert snapshot(cmake_build) == before


def test_the_marker_comment_is_the_only_other_line_wrap_adds(tmp_path, capsys):
    path = tmp_path / "build.ninja"
    path.write_text("rule cc\n  command = gcc -c $in -o $out\nbuild a.o: cc a.c\n")
    run_wrap(capsys, path)
    assert path.read_text() == (
        "# shim-wrap: cc@0\nrule cc\n  command = shim gcc -c $in -o $out\nbuild a.o: cc a.c\n")
    assert os.access(path, os.R_OK)


@pytest.mark.e2e
def test_shim_build_wrap_rewraps_after_cmake_regenerates_the_manifest(tmp_path):
    """`shim build --wrap`: CMake's RERUN_CMAKE edge writes an unwrapped build.ninja; the new
    targets it adds must still run through shim (the ledger records them)."""
    import json
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed (.ci/run installs it)")
    shim = Path(sys.executable).parent / "shim"
    src, bld = tmp_path / "src", tmp_path / "bld"
    src.mkdir()
    (src / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.13)\nproject(t C)\n"
                                        "add_library(l STATIC a.c)\nadd_executable(p main.c)\n"
                                        "target_link_libraries(p l)\n")
    (src / "a.c").write_text("int a(void) { return 1; }\n")
    (src / "main.c").write_text("int a(void);\nint main(void) { return a() - 1; }\n")
    subprocess.run(["cmake", "-G", "Ninja", "-S", str(src), "-B", str(bld),
                    "-DCMAKE_MAKE_PROGRAM=%s" % (shim.parent / "ninja")], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, HOME=str(tmp_path), XDG_RUNTIME_DIR="")

    def build():
        result = subprocess.run([str(shim), "build", "-C", str(bld), "--wrap", "--budget", "off"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert result.returncode == 0, result.stdout
        report = subprocess.run([str(shim), "report", "-C", str(bld), "--json"], env=env,
                                stdout=subprocess.PIPE, text=True, check=True).stdout
        return {s["out"][0]: s["kind"] for s in json.loads(report)["steps"]}

    assert build() == {"CMakeFiles/l.dir/a.c.o": "compile", "CMakeFiles/p.dir/main.c.o": "compile",
                       "libl.a": "archive", "p": "link"}
    with open(src / "CMakeLists.txt", "a") as f:
        f.write("add_executable(q main.c)\ntarget_link_libraries(q l)\n")
    assert build() == {"CMakeFiles/q.dir/main.c.o": "compile", "q": "link"}
