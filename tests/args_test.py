"""Reading what an invocation does from its arguments (shim/args.py)."""

import pytest

from shim import args


def parse(argv, family="gcc", cwd="/nowhere", kind=""):
    return args.parse(argv, family, cwd, kind)


def test_the_gcc_option_table_is_sorted_unique_and_consistent():
    names = [name for name, _ in args._GCC_OPTIONS]
    assert names == sorted(names) and len(set(names)) == len(names)
    for name, bits in args._GCC_OPTIONS + args._MSVC_OPTIONS:
        assert not (bits & args.OUTPUT and bits & args.DEPFILE), name
        assert not (bits & (args.OUTPUT | args.DEPFILE)) or bits & (args.SEP | args.JOINED), name


def test_dash_c_compiles_and_names_its_object_and_depfile():
    p = parse(["-MD", "-MF", "obj/a.o.d", "-O2", "-Iinclude", "-c", "src/a.c", "-o", "obj/a.o"])
    assert (p.kind, p.primary_input, p.primary_output, p.depfile) == ("compile", "src/a.c", "obj/a.o", "obj/a.o.d")
    assert p.inputs == ("src/a.c",) and p.outputs == ("obj/a.o", "obj/a.o.d")


def test_options_with_separate_values_do_not_count_as_inputs():
    p = parse(["-c", "-I", "inc", "-D", "X=1", "-include", "pre.h", "-x", "c", "-isystem", "sys",
               "a.c", "-MT", "target", "-o", "a.o"])
    assert p.inputs == ("a.c",)


def test_joined_values_are_recognised():
    p = parse(["-c", "a.c", "-oout/a.o", "-MMD", "-MFdeps/a.d", "-Iinc", "-DX"])
    assert (p.primary_output, p.depfile) == ("out/a.o", "deps/a.d")


def test_dash_md_without_dash_mf_puts_the_depfile_beside_the_output():
    assert parse(["-MD", "-c", "a.c", "-o", "obj/a.o"]).depfile == "obj/a.d"
    assert parse(["-MMD", "-c", "src/b.c"]).depfile == "b.d"
    assert parse(["-MD", "-c", "x.c", "-o", "dir.v1/out"]).depfile == "dir.v1/out.d"


def test_without_dash_o_gcc_writes_beside_the_cwd():
    assert parse(["-c", "src/a.c"]).primary_output == "a.o"
    assert parse(["-S", "src/a.c"]).primary_output == "a.s"
    assert parse(["main.o", "-lm"]).primary_output == "a.out"


@pytest.mark.parametrize("argv, kind", [
    (["-E", "a.c"], "preprocess"),
    (["-M", "a.c"], "preprocess"),
    (["-MM", "-MF", "a.d", "a.c"], "preprocess"),
    (["-fsyntax-only", "a.c"], "compile"),
    (["-S", "a.c"], "compile"),
    (["a.o", "b.o", "-o", "prog", "-lm"], "link"),
    (["-shared", "a.o", "-o", "liba.so"], "link"),
    (["a.c", "-o", "prog"], "link"),
    (["--version"], "other"),
    (["-print-search-dirs"], "other"),
    ([], "other"),
])
def test_gcc_step_kinds(argv, kind):
    assert parse(argv).kind == kind


def test_a_forced_kind_wins():
    assert parse(["-c", "a.c"], kind="other").kind == "other"


@pytest.mark.parametrize("argv, kind, output, members", [
    (["rcs", "lib.a", "a.o", "b.o"], "archive", "lib.a", ("a.o", "b.o")),
    (["-rcs", "lib.a", "a.o"], "archive", "lib.a", ("a.o",)),
    (["qc", "lib.a", "a.o"], "archive", "lib.a", ("a.o",)),
    (["--plugin", "/x/liblto.so", "cr", "lib.a", "a.o"], "archive", "lib.a", ("a.o",)),
    (["rcsb", "pos.o", "lib.a", "a.o"], "archive", "lib.a", ("a.o",)),
    (["t", "lib.a"], "other", None, ()),
    ([], "other", None, ()),
])
def test_ar(argv, kind, output, members):
    p = parse(argv, "ar")
    assert (p.kind, p.primary_output, p.inputs) == (kind, output, members)


def test_ld():
    p = parse(["-o", "prog", "-L/lib", "-l", "m", "crt1.o", "main.o", "-soname", "x.so.1"], "ld")
    assert (p.kind, p.primary_output, p.inputs) == ("link", "prog", ("crt1.o", "main.o"))
    assert parse(["--version"], "ld").kind == "other"


def test_msvc_compile_link_and_lib():
    p = parse(["/nologo", "/c", "/Fobuild\\a.obj", "/Iinc", "/showIncludes", "src\\a.cpp"], "msvc")
    assert (p.kind, p.primary_input, p.primary_output) == ("compile", "src\\a.cpp", "build\\a.obj")
    assert parse(["-c", "-Fo:out\\", "x.c"], "msvc").primary_output == "out\\x.obj"
    assert parse(["/E", "x.c"], "msvc").kind == "preprocess"
    assert parse(["a.obj", "/link", "/OUT:x.exe"], "msvc").kind == "link"
    link = parse(["/nologo", "/OUT:app.exe", "a.obj", "b.lib"], "msvc-link")
    assert (link.kind, link.primary_output) == ("link", "app.exe")
    lib = parse(["/OUT:x.lib", "a.obj"], "msvc-lib")
    assert (lib.kind, lib.primary_output) == ("archive", "x.lib")


@pytest.mark.parametrize("program, family", [
    ("gcc", "gcc"), ("/usr/bin/cc", "gcc"), ("x86_64-linux-gnu-gcc-12", "gcc"), ("g++-12", "gcc"),
    ("clang++", "gcc"), ("clang-17", "gcc"), ("aarch64-linux-gnu-g++", "gcc"),
    ("ar", "ar"), ("llvm-ar-15", "ar"), ("gcc-ar", "ar"), ("x86_64-linux-gnu-ar", "ar"),
    ("ld", "ld"), ("ld.gold", "ld"), ("ld.lld", "ld"), ("mold", "ld"),
    ("cl", "msvc"), ("clang-cl", "msvc"), ("link", "msvc-link"), ("lld-link", "msvc-link"),
    ("lib", "msvc-lib"), ("python3", "other"), ("sh", "other"),
])
def test_family_from_the_program_name(program, family):
    assert args.family_of(program) == family


def test_the_result_is_frozen():
    p = parse(["-c", "a.c"])
    with pytest.raises(AttributeError):
        p.kind = "link"


def test_response_files_are_read_for_the_analysis_and_reported(tmp_path):
    (tmp_path / "c.rsp").write_text("-c 'src/my file.c'\n-o \"obj/my file.o\" @more.rsp\n")
    (tmp_path / "more.rsp").write_text("-MD -MF obj/x.d\n")
    p = parse(["-O2", "@c.rsp"], cwd=str(tmp_path))
    assert (p.kind, p.primary_input, p.primary_output, p.depfile) == (
        "compile", "src/my file.c", "obj/my file.o", "obj/x.d")
    assert p.rsp_files == ("c.rsp", "more.rsp")


def test_a_bazel_params_file_classifies_a_link(tmp_path):
    # Bazel: one argument per line, no quoting, always one @file for archive and link.
    (tmp_path / "bin.params").write_text("-o\nbazel-out/k8/bin/app\nbazel-out/k8/bin/_objs/app/main.o\n"
                                         "-Wl,-S\n-lstdc++\n")
    p = parse(["@bin.params"], cwd=str(tmp_path))
    assert (p.kind, p.primary_output) == ("link", "bazel-out/k8/bin/app")
