"""Reading a rustc invocation (shim/rustc.py, args.py's `rustc` family): crate, kind, the files
rustc writes, probes, @argfiles, and the cargo build a call belongs to; then rustc from ninja, in
a real Meson project (RUSTC="shim rustc", and `shim wrap`). The command lines are the ones cargo
1.95 and Meson 1.12 passed to rustc on this project's machine."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, REPO, run_shim
from shim import args, rustc
from shim.reports import records

T = "/w/target"
CFG = ["--cfg", 'feature="default"', "--check-cfg", 'cfg(feature, values("default", "std"))']


def parse(argv, cwd="/nowhere"):
    return args.parse(argv, "rustc", cwd)


def cargo_lib(name="regex", out_dir=T + "/debug/deps", extra="-c148d6fbe9e0f2ae", emit="dep-info,metadata,link"):
    return ["--crate-name", name, "--edition=2018", "/reg/%s-1.7.1/src/lib.rs" % name, "--error-format=json",
            "--json=diagnostic-rendered-ansi,artifacts,future-incompat", "--crate-type", "lib",
            "--emit=" + emit, "-C", "embed-bitcode=no", "-C", "debuginfo=2"] + CFG + [
            "-C", "metadata=f6f1ee156619fa20", "-C", "extra-filename=" + extra, "--out-dir", out_dir,
            "-L", "dependency=%s/debug/deps" % T, "--extern", "memchr=%s/debug/deps/libmemchr-1.rmeta" % T,
            "--cap-lints", "allow"]


def test_the_option_table_is_sorted_and_unique():
    names = [name for name, _ in rustc.OPTIONS]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert {role for _, role in rustc.OPTIONS} <= {"", "name", "type", "emit", "codegen", "out", "out_dir",
                                                 "target", "edition", "print", "query"}


def test_cargo_lib_compiles_into_rlib_rmeta_and_dep_info_named_with_cargos_hash():
    p = parse(cargo_lib())
    assert (p.family, p.kind, p.probe, p.crate.name, p.crate.types) == ("rustc", "compile", False, "regex", ["lib"])
    assert p.inputs == ("/reg/regex-1.7.1/src/lib.rs",)
    deps = T + "/debug/deps/"
    assert p.outputs == (deps + "libregex-c148d6fbe9e0f2ae.rlib", deps + "libregex-c148d6fbe9e0f2ae.rmeta",
                         deps + "regex-c148d6fbe9e0f2ae.d")
    assert p.depfile == T + "/debug/deps/regex-c148d6fbe9e0f2ae.d" and p.crate.edition == "2018"


@pytest.mark.parametrize("crate_types, kind, first", [
    (["bin"], "link", "app-1a"),
    (["proc-macro"], "link", "libapp-1a.so"),
    (["cdylib"], "link", "libapp-1a.so"),
    (["dylib"], "link", "libapp-1a.so"),
    (["rlib"], "compile", "libapp-1a.rlib"),
    (["staticlib"], "compile", "libapp-1a.a"),
])
def test_crate_types_that_run_the_linker_are_link_steps_the_others_compile(crate_types, kind, first):
    argv = ["--crate-name", "app", "src/main.rs", "--emit=dep-info,link", "-C", "extra-filename=-1a"]
    for t in crate_types:
        argv += ["--crate-type", t]
    p = parse(argv)
    assert (p.kind, p.primary_output, p.outputs[-1]) == (kind, first, "app-1a.d")


def test_crate_types_repeat_and_come_in_comma_lists_and_any_linked_one_makes_a_link():
    p = parse(["--crate-name", "x", "lib.rs", "--crate-type=rlib,cdylib", "--crate-type", "staticlib",
               "--crate-type", "rlib"])
    assert p.crate.types == ["rlib", "cdylib", "staticlib"] and p.kind == "link"
    assert p.outputs == ("libx.rlib", "libx.so", "libx.a")


def test_metadata_only_is_a_compile_and_its_output_is_the_rmeta():
    p = parse(cargo_lib(emit="dep-info,metadata"))             # cargo check
    assert (p.kind, p.primary_output) == ("compile", T + "/debug/deps/libregex-c148d6fbe9e0f2ae.rmeta")
    p = parse(["--crate-name", "app", "src/main.rs", "--crate-type", "bin", "--emit=dep-info,metadata"])
    assert (p.kind, p.outputs) == ("compile", ("libapp.rmeta", "app.d"))


def test_a_build_script_is_a_linked_bin_named_build_script_build():
    p = parse(["--crate-name", "build_script_build", "--edition=2018", "/reg/memchr-2.5.0/build.rs",
               "--crate-type", "bin", "--emit=dep-info,link", "-C", "extra-filename=-4ebe",
               "--out-dir", T + "/debug/build/memchr-4ebe"])
    assert (p.kind, p.crate.name) == ("link", rustc.BUILD_SCRIPT)
    assert p.primary_output == T + "/debug/build/memchr-4ebe/build_script_build-4ebe"


def test_a_test_harness_is_linked_like_a_bin():
    p = parse(["--crate-name", "textkit", "textkit/src/lib.rs", "--emit=dep-info,link", "--test",
               "-C", "extra-filename=-9f"])
    assert (p.kind, p.crate.test, p.crate.types, p.primary_output) == ("link", True, [], "textkit-9f")


def test_mesons_explicit_emit_paths_and_glued_codegen_options_are_read():
    p = parse(["-C", "linker=cc", "--color=always", "-C", "debug-assertions=yes", "--crate-type", "rlib",
               "--edition=2021", "-g", "--crate-name", "greet", "--emit", "dep-info=libgreet.rlib.p/greet.d",
               "--emit", "link=libgreet.rlib", "-C", "metadata=greet@rlib", "-Ccodegen-units=4", "../src/greet.rs"])
    assert (p.kind, p.inputs) == ("compile", ("../src/greet.rs",))
    assert p.outputs == ("libgreet.rlib", "libgreet.rlib.p/greet.d")
    assert (p.depfile, p.crate.codegen_units, p.crate.edition) == ("libgreet.rlib.p/greet.d", "4", "2021")
    p = parse(["-C", "linker=cc", "--crate-type", "bin", "--crate-name", "hello", "--emit", "dep-info=hello.p/hello.d",
               "--emit", "link=hello", "--extern", "greet=libgreet.rlib", "-L.", "../src/main.rs"])
    assert (p.kind, p.outputs) == ("link", ("hello", "hello.p/hello.d"))


def test_dash_o_names_the_linked_file_and_the_others_after_it():
    p = parse(["-o", "out/prog", "main.rs", "--emit=link,dep-info"])
    assert (p.crate.name, p.outputs, p.depfile) == ("main", ("out/prog", "out/prog.d"), "out/prog.d")


def test_target_triples_name_their_files_as_that_platform_does():
    base = ["--crate-name", "app", "main.rs", "--out-dir", "o", "--target"]
    assert parse(base + ["x86_64-pc-windows-msvc"]).primary_output == "o/app.exe"
    assert parse(base + ["aarch64-apple-darwin", "--crate-type", "cdylib"]).primary_output == "o/libapp.dylib"
    assert parse(base + ["x86_64-pc-windows-gnu", "--crate-type", "dylib"]).primary_output == "o/app.dll"
    assert parse(base + ["aarch64-unknown-linux-gnu"]).crate.target == "aarch64-unknown-linux-gnu"


@pytest.mark.parametrize("argv", [
    ["-vV"],
    ["-V"],
    ["--version"],
    ["--help"],
    ["--explain", "E0463"],
    ["--print", "sysroot"],
    ["-C", "linker=cc", "--print", "sysroot"],
    ["-", "--crate-name", "___", "--print=file-names", "--crate-type", "bin", "--crate-type", "rlib",
     "--print=sysroot", "--print=cfg", "-Wwarnings"],
    ["--print=cfg", "src/lib.rs"],
])
def test_calls_that_only_ask_rustc_something_are_probes(argv):
    assert parse(argv).probe


@pytest.mark.parametrize("argv", [
    ["src/main.rs"],
    ["-", "-o", "prog"],                         # the source on stdin
    ["-C", "linker=cc", "--crate-type", "staticlib", "--print", "native-static-libs", "sanity.rs"],
])
def test_calls_that_build_something_are_not_probes(argv):
    p = parse(argv)
    assert not p.probe and p.inputs


def test_an_argfile_holds_one_argument_per_line_spaces_and_all(tmp_path):
    (tmp_path / "args").write_text("--crate-name\nmy crate\n--crate-type\nlib\r\n--out-dir\nout dir\nsrc/lib.rs\n")
    p = parse(["@args", "--edition", "2021"], cwd=str(tmp_path))
    assert (p.crate.name, p.crate.types, p.inputs, p.rsp_files) == ("my crate", ["lib"], ("src/lib.rs",), ("args",))
    assert p.primary_output == "out dir/libmy crate.rlib" and p.crate.edition == "2021"


def test_rustc_is_the_family_of_rustc_and_its_versioned_and_prefixed_names():
    for name in ("rustc", "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc", "rustc-1.95",
                 "x86_64-unknown-linux-gnu-rustc"):
        assert args.family_of(name) == "rustc", name


# --- cargo's build: target dir, build dir, profile, the estimates' unit ----------------------------


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "Cargo.toml").write_text("[workspace]\n")
    target = tmp_path / "target"
    for d in ("debug/deps", "release/build/serde-1a", "x86_64-unknown-linux-gnu/release/deps"):
        (target / d).mkdir(parents=True)
    (target / rustc.CARGO_MARKER).write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    return tmp_path


@pytest.mark.parametrize("out_dir, profile", [
    ("target/debug/deps", "debug"),
    ("target/release/build/serde-1a", "release"),
    ("target/x86_64-unknown-linux-gnu/release/deps", "release"),
])
def test_a_cargo_step_builds_in_the_workspace_of_the_target_dir_its_out_dir_lies_in(workspace, out_dir, profile):
    argv = ["--crate-name", "x", "--out-dir", str(workspace / out_dir), "--target", "x86_64-unknown-linux-gnu"]
    assert rustc.cargo_build(argv, "/usr/share/cargo/registry/x-1.0.0") == (str(workspace), profile)


def test_a_target_dir_outside_any_workspace_is_its_own_build_dir(workspace):
    (workspace / "Cargo.toml").unlink()
    argv = ["--out-dir=%s/target/debug/deps" % workspace]
    assert rustc.cargo_build(argv, "/") == (str(workspace / "target"), "debug")
    assert rustc.build_dir_of_target(str(workspace / "target")) == str(workspace / "target")


def test_an_out_dir_in_no_target_dir_is_no_cargo_build(tmp_path):
    assert rustc.cargo_build(["--out-dir", str(tmp_path)], "/") is None
    assert rustc.cargo_build(["-o", "x"], "/") is None


def test_the_unit_names_package_version_type_target_and_profile_not_cargos_hashes():
    env = {"CARGO_PKG_NAME": "regex-syntax", "CARGO_PKG_VERSION": "0.6.27"}
    crate = parse(cargo_lib("regex_syntax", extra="-7bdf17e576e13a70")).crate
    same = parse(cargo_lib("regex_syntax", extra="-0000000000000000")).crate
    assert rustc.unit(crate, env, "debug") == rustc.unit(same, env, "debug") == "regex-syntax 0.6.27 lib debug"
    check = parse(cargo_lib("regex_syntax", emit="dep-info,metadata")).crate
    assert rustc.unit(check, env, "debug") == "regex-syntax 0.6.27 lib check debug"
    script = parse(["--crate-name", "build_script_build", "build.rs", "--crate-type", "bin"]).crate
    assert rustc.unit(script, {"CARGO_PKG_NAME": "serde", "CARGO_PKG_VERSION": "1.0.152"}, "release") == \
        "serde 1.0.152 build-script release"
    tool = parse(["--crate-name", "fmt_tool", "src/bin/fmt_tool.rs", "--crate-type", "bin",
                  "--target", "aarch64-unknown-linux-gnu"]).crate
    assert rustc.unit(tool, {"CARGO_PKG_NAME": "tools", "CARGO_PKG_VERSION": "2.0.0"}, "debug") == \
        "tools 2.0.0 fmt_tool bin aarch64-unknown-linux-gnu debug"
    assert rustc.unit(crate, {}, "debug") is None and rustc.unit(crate, env, None) is None


# --- rustc from ninja: Meson's Rust support -------------------------------------------------------

RUSTC = shutil.which("rustc")


@pytest.fixture
def meson_project(env, tmp_path):
    """A copy of tests/fixtures/meson-rust (a static library and a program) and an environment
    with rustup's toolchains (the env fixture's HOME is private)."""
    if not RUSTC:
        pytest.skip("rustc is not installed")
    env["RUSTUP_HOME"] = os.environ.get("RUSTUP_HOME") or str(Path.home() / ".rustup")
    source = tmp_path / "src"
    shutil.copytree(REPO / "tests" / "fixtures" / "meson-rust", source)
    return source


def meson(args, cwd, env):
    done = subprocess.run([str(BIN / "meson")] + [str(a) for a in args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert done.returncode == 0, done.stdout
    return done.stdout


def assert_built_through_shim(build: Path):
    steps = records.load(str(build / ".shim"), str(build), "all")[1]
    assert sorted((s["crate"], s["crate_type"], s["kind"], s["out"][0]) for s in steps) == [
        ("greet", "rlib", "compile", "libgreet.rlib"), ("hello", "bin", "link", "hello")]
    assert all(s["tool"] == "rustc" and s["exit"] == 0 and s["unit"] is None for s in steps)
    done = subprocess.run([str(build / "hello")], stdout=subprocess.PIPE, text=True, check=True)
    assert done.stdout == "hello, meson\n"


def test_meson_builds_a_rust_library_and_program_with_rustc_shim_rustc(meson_project, env, tmp_path):
    env["RUSTC"] = "shim rustc"
    build = tmp_path / "build"
    assert "Rust compiler for the host machine: shim rustc" in meson(["setup", build, meson_project], tmp_path, env)
    assert not (build / ".shim").exists()              # its probes (rustc --version, sanity checks) left nothing
    result = run_shim(["build", "-C", build], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_built_through_shim(build)


def test_shim_wrap_routes_mesons_rust_rule_through_shim(meson_project, env, tmp_path):
    build = tmp_path / "build"
    meson(["setup", build, meson_project], tmp_path, env)
    wrapped = run_shim(["wrap", build], env=env)
    assert "wrapped rule rust_COMPILER (rustc)" in wrapped.stdout, wrapped.stdout + wrapped.stderr
    assert "command = shim rustc " in (build / "build.ninja").read_text()
    done = subprocess.run([str(BIN / "ninja"), "-C", str(build)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout
    assert_built_through_shim(build)
