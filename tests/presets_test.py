"""The built-in presets in toolchains/: valid, selectable, layered; the msvc ones unit-tested.

cl, link and lib cannot run here, so the msvc and clang-cl presets are checked as far
as POSIX allows: the tools they define, how their arguments and @files are read, that
/showIncludes reaches the compiler, and that Windows spawns every step.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHIM, last_step, run_shim, write_tool, write_toml

PRESETS = sorted(p.stem for p in (REPO / "toolchains").glob("*.toml"))


def runtime_config(tmp_path: Path, text: str, path: str = "/usr/bin:/bin") -> dict:
    """What a step would read: the merged, compiled config of a layer *text* over its preset."""
    from shim.config import layers as config
    layer = write_toml(tmp_path / "layer.toml", text)
    return config.build([("env", str(layer))], path)[0]


def c_tools(config: dict) -> dict:
    """The tools a preset defines itself: all but rustc and Go's, which every one gets from rust.toml
    and go.toml."""
    return {t: rules for t, rules in config["tools"].items() if t != "rustc" and not t.startswith("go-")}


@pytest.mark.parametrize("name", [p for p in PRESETS if p != "go"])     # go.toml lies below rust.toml
def test_every_preset_reads_rustc_with_the_rustc_family_and_a_measured_prior(tmp_path, name):
    config = runtime_config(tmp_path, 'preset = "%s"\n' % name)
    rustc = config["tools"]["rustc"]
    assert (rustc["program"], rustc["family"], config["names"]["rustc"]) == ("rustc", "rustc", "rustc")
    assert 128 << 20 <= rustc["memory"] <= 1 << 30
    if sys.platform.startswith("linux"):            # GNU ld keeping less in memory, on a retry
        assert "link-arg=-Wl,--no-keep-memory" in rustc["low_memory"]["append"]


@pytest.mark.e2e
def test_every_preset_file_passes_config_check():
    result = run_shim(["config", "check"] + [REPO / "toolchains" / (name + ".toml") for name in PRESETS])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ok: %s" % (REPO / "toolchains" / (n + ".toml")) for n in PRESETS]
    assert {"gcc", "clang", "ccache", "distcc", "zig", "msvc", "clang-cl", "rust"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_can_be_picked_and_config_show_names_it_and_its_base(tmp_path, env, name):
    write_toml(tmp_path / "toolchain.toml", 'preset = "%s"\n' % name)
    result = run_shim(["config", "show"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    # every base preset lies on rust.toml (rustc), which lies on go.toml; ccache and distcc on gcc
    base = {"ccache": " on gcc on rust on go", "distcc": " on gcc on rust on go", "rust": " on go",
            "go": ""}.get(name, " on rust on go")
    assert first == "# preset: %s%s (preset = %r in toolchain.toml)" % (name, base, name)


def test_the_default_is_gcc_when_gcc_is_installed_and_config_show_says_why(tmp_path, env):
    env["PATH"] = "%s:/usr/bin:/bin" % SHIM.parent
    result = run_shim(["config", "show"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "# preset: gcc on rust on go (gcc found at /usr/bin/gcc)"
    env["PATH"] = str(SHIM.parent)                  # neither gcc nor clang
    result = run_shim(["config", "show"], cwd=tmp_path, env=env)
    assert result.stdout.splitlines()[0] == \
        "# preset: gcc on rust on go (neither gcc nor clang found on PATH; gcc is the fallback)"


def test_the_ccache_preset_is_gcc_with_ccache_in_front_of_compiles_and_a_stats_log(tmp_path):
    config = runtime_config(tmp_path, 'preset = "ccache"\n')
    assert config["steps"]["compile"]["launcher"] == ["ccache"]
    assert not config["steps"]["link"]["launcher"]
    assert config["tools"]["cc"]["program"] == "gcc"          # from gcc.toml, below it
    assert config["launchers"]["ccache"] == {"remote": False, "memory_factor": 1.0, "jobs": None,
                                             "env_set": {"CCACHE_STATSLOG": "{ledger_dir}/ccache-stats.log"}}


def test_the_distcc_preset_is_remote_needs_little_local_memory_and_widens_the_build(tmp_path):
    config = runtime_config(tmp_path, 'preset = "distcc"\n')
    assert config["steps"]["compile"]["launcher"] == ["distcc"]
    assert not config["steps"]["link"]["launcher"]             # links stay here
    distcc = config["launchers"]["distcc"]
    assert distcc["remote"] is True and distcc["memory_factor"] == 0.1 and distcc["jobs"] == 16
    assert "DISTCC_HOSTS" not in distcc["env_set"]              # the user's, never overridden
    from shim.driver import build
    assert build.remote_jobs(config) == 16
    mine = runtime_config(tmp_path, 'preset = "distcc"\n[launcher.distcc]\njobs = 40\n')
    assert build.remote_jobs(mine) == 40


def test_the_zig_preset_runs_zig_subcommands_and_looks_beside_shim_first(tmp_path):
    from shim.config import layers
    config = runtime_config(tmp_path, 'preset = "zig"\n')
    tools = c_tools(config)
    assert {t: (tools[t]["program"], tools[t]["family"], tools[t]["prepend"]) for t in tools} == {
        "cc": ("zig", "gcc", ["cc"]), "cxx": ("zig", "gcc", ["c++"]), "link": ("zig", "gcc", ["cc"]),
        "ar": ("zig", "ar", ["ar"]), "ld": ("zig", "ld", ["ld.lld"])}
    beside = os.path.join(os.path.dirname(os.path.dirname(layers.preset_dir())), "ziglang")
    assert {t: [os.path.normpath(p) for p in tools[t]["path_prepend"]] for t in tools} == \
        dict.fromkeys(tools, [beside])             # site-packages/ziglang, seen from shim/toolchains


# --- msvc and clang-cl -------------------------------------------------------------


@pytest.mark.parametrize("preset, programs", [
    ("msvc", {"cc": "cl", "cxx": "cl", "link": "link", "ar": "lib"}),
    ("clang-cl", {"cc": "clang-cl", "cxx": "clang-cl", "link": "lld-link", "ar": "llvm-lib"}),
])
def test_the_msvc_presets_define_cl_link_and_lib_with_msvc_argument_families(tmp_path, preset, programs):
    config = runtime_config(tmp_path, 'preset = "%s"\n' % preset)
    tools = c_tools(config)
    assert {t: tools[t]["program"] for t in tools} == programs
    assert {t: tools[t]["family"] for t in tools} == {
        "cc": "msvc", "cxx": "msvc", "link": "msvc-link", "ar": "msvc-lib"}
    assert config["names"][programs["cc"]] == "cc" and config["names"][programs["ar"]] == "ar"


@pytest.mark.parametrize("program, family", [
    ("C:\\Program Files\\Microsoft Visual Studio\\2022\\VC\\Tools\\MSVC\\bin\\Hostx64\\x64\\cl.exe", "msvc"),
    ("CL.EXE", "msvc"), ("clang-cl.exe", "msvc"), ("C:\\LLVM\\bin\\clang-cl.exe", "msvc"),
    ("link.exe", "msvc-link"), ("lld-link.exe", "msvc-link"),
    ("lib.exe", "msvc-lib"), ("llvm-lib.exe", "msvc-lib"),
])
def test_msvc_tools_are_recognised_by_their_windows_program_names(monkeypatch, program, family):
    from shim import args, host_windows
    monkeypatch.setattr(args.host, "program_stem", host_windows.program_stem)
    assert args.family_of(program) == family


# What CMake's Ninja generator writes for a cl compile (with a response file), plus the
# quoting cases CommandLineToArgvW defines: a quoted path with spaces, an escaped quote
# inside a define, a trailing backslash before a space (literal), \\" (one backslash,
# then the quote toggles).
CL_RSP = (
    r'/nologo /TP -DWIN32 -D_WINDOWS "-DGREETING=\"hello world\"" /EHsc /O2 /Ob2 /DNDEBUG -MD '
    r'/showIncludes /I"C:\Program Files\Lib\include" -IC:\src\include\ -I"C:\deps\\" '
    r'/FoCMakeFiles\app.dir\src\main.cpp.obj /FdCMakeFiles\app.dir\ /FS -c "C:\src\my app\main.cpp"'
    "\r\n"
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])   # MSBuild and VS write UTF-16 with a BOM
def test_a_cl_response_file_is_read_with_windows_quoting(tmp_path, encoding):
    from shim import args
    (tmp_path / "main.cpp.obj.rsp").write_bytes(CL_RSP.encode(encoding))
    parsed = args.parse(["@main.cpp.obj.rsp"], "msvc", str(tmp_path))
    assert parsed.kind == "compile"
    assert parsed.primary_input == "C:\\src\\my app\\main.cpp"
    assert parsed.primary_output == "CMakeFiles\\app.dir\\src\\main.cpp.obj"
    assert parsed.rsp_files == ("main.cpp.obj.rsp",)
    assert '-DGREETING="hello world"' in parsed.expanded
    assert "/IC:\\Program Files\\Lib\\include" in parsed.expanded
    assert "-IC:\\src\\include\\" in parsed.expanded
    assert "-IC:\\deps\\" in parsed.expanded
    assert "/showIncludes" in parsed.expanded and parsed.inputs == ("C:\\src\\my app\\main.cpp",)


@pytest.mark.parametrize("argv, kind, output", [
    (["/c", "/Foobj\\", "src\\a.cpp"], "compile", "obj\\a.obj"),          # a directory: named after the source
    (["/c", "/Fo:obj\\b.obj", "b.c"], "compile", "obj\\b.obj"),          # VS 2019+: /Fo:path
    (["-c", "-Foobj/c.obj", "/showIncludes", "c.c"], "compile", "obj/c.obj"),   # clang-cl's dashes
    (["/c", "d.c"], "compile", "d.obj"),
    (["/showIncludes", "/E", "e.c"], "preprocess", None),
    (["/nologo", "main.obj", "/Feapp.exe", "/link", "/DEBUG"], "link", "app.exe"),
])
def test_msvc_compile_steps_and_their_outputs_come_from_c_and_fo(monkeypatch, argv, kind, output):
    from shim import args, host_windows
    monkeypatch.setattr(args.host, "basename", host_windows.basename)    # paths as Windows splits them
    parsed = args.parse(argv, "msvc", "/build")
    assert (parsed.kind, parsed.primary_output) == (kind, output)
    assert "/showIncludes" not in parsed.inputs


@pytest.mark.parametrize("family, argv, kind, output", [
    ("msvc-link", ["/nologo", "/OUT:app.exe", "/DEBUG", "main.obj", "tally.lib"], "link", "app.exe"),
    ("msvc-lib", ["/nologo", "/OUT:tally.lib", "vec.obj", "fmt.obj"], "archive", "tally.lib"),
])
def test_link_and_lib_steps_name_their_output_with_out(family, argv, kind, output):
    from shim import args
    parsed = args.parse(argv, family, "/build")
    assert (parsed.kind, parsed.primary_output) == (kind, output)


def test_show_includes_reaches_cl_untouched_with_english_messages(tmp_path, env):
    """A stand-in `cl` on PATH: the msvc preset runs it with the step's arguments as given."""
    write_tool(tmp_path / "vc", "cl", 'printf "%s\\n" "$@"; echo "VSLANG=$VSLANG"\n')
    env["PATH"] = "%s:%s" % (tmp_path / "vc", env["PATH"])
    write_toml(tmp_path / "toolchain.toml", 'preset = "msvc"\n')
    (tmp_path / "build.ninja").touch()              # a build dir: steps run here leave a ledger
    argv = ["/nologo", "/showIncludes", "/c", "src\\a.c", "/Foobj\\a.obj"]
    result = run_shim(["cc"] + argv, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == argv + ["VSLANG=1033"]
    record = last_step(tmp_path)
    assert (record["kind"], record["in"], record["out"]) == ("compile", "src\\a.c", ["obj\\a.obj"])
    assert record["prog"] == "cl" and record["args"] == argv


@pytest.mark.parametrize("preset", ["msvc", "clang-cl", "gcc", "clang", "zig"])
def test_on_windows_the_presets_spawn_every_step(tmp_path, monkeypatch, preset):
    from shim import host, step
    from shim.config import layers as config
    layer = write_toml(tmp_path / "layer.toml", 'preset = "%s"\n' % preset)
    monkeypatch.setattr(host, "PLATFORM", "windows")
    layers, _ = config.load_layers([("env", str(layer))], "/usr/bin")
    merged, _ = config.merge(layers)
    assert merged["defaults"]["mode"] == "spawn"
    for requested in ("exec", "auto", "spawn"):       # whatever a layer asks: no exec there
        assert step.choose_mode(requested, exec_supported=False, known=True) == "spawn"
