"""One ninja per build directory (shim/driver/ninja.py): `shim build` runs the ninja CMake or
Meson configured, so that ninja and `shim build` take turns in one build dir without either
rebuilding what the other built. Real CMake, Meson, Debian's ninja 1.11 and the PyPI 1.13."""

import os
import shutil
import subprocess
import textwrap

import pytest

from conftest import BIN, run_shim

pytestmark = pytest.mark.e2e

SYSTEM_NINJA = "/usr/bin/ninja"          # Debian's (1.11 here): what CMake and Meson configure
PYPI_NINJA = BIN / "ninja"

SOURCES = {
    "CMakeLists.txt": """
        cmake_minimum_required(VERSION 3.16)
        project(tally C)
        add_library(tally STATIC tally.c)
        add_executable(prog main.c)
        target_link_libraries(prog tally)
        """,
    "meson.build": """
        project('tally', 'c')
        lib = static_library('tally', 'tally.c')
        prog = executable('prog', 'main.c', link_with: lib)
        test('sum', prog)
        """,
    "tally.c": "int tally(int a, int b) { return a + b; }\n",
    "main.c": "int tally(int a, int b);\nint main(void) { return tally(2, 3) != 5; }\n",
}


def needs(*programs):
    missing = [p for p in programs if not shutil.which(p) and not os.path.exists(p)]
    if missing:
        pytest.skip("needs %s (Debian: %s)" % (", ".join(missing), " ".join(
            {"cmake": "cmake", SYSTEM_NINJA: "ninja-build", "gcc": "gcc"}[p] for p in missing)))


def run(argv, **kw):
    done = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **kw)
    assert done.returncode == 0, done.stdout
    return done.stdout


def system_first(env) -> dict:
    """PATH with /usr/bin before the venv: CMake and Meson pick Debian's ninja, shim is still found."""
    return dict(env, PATH=os.pathsep.join(["/usr/bin", "/bin", str(BIN)]))


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name, text in SOURCES.items():
        (src / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return src


def cmake_dir(source, env):
    needs("cmake", SYSTEM_NINJA, "gcc")
    build = source.parent / "build"
    run(["cmake", "-G", "Ninja", "-S", source, "-B", build, "-DCMAKE_C_COMPILER_LAUNCHER=shim",
         "-DCMAKE_C_LINKER_LAUNCHER=shim"], env=system_first(env))
    return build


def meson_dir(source, env):
    needs(SYSTEM_NINJA, "gcc")
    build = source.parent / "build"
    run([BIN / "meson", "setup", build, source], cwd=source, env=dict(system_first(env), CC="shim gcc"))
    return build


def nothing_to_do(ninja, build, env) -> bool:
    return "no work to do" in run([ninja, "-C", build, "-n"], env=env)


def version(ninja) -> tuple:
    out = run([ninja, "--version"])
    return tuple(int(n) for n in out.split(".")[:2])


@pytest.mark.parametrize("generator", [cmake_dir, meson_dir], ids=["cmake", "meson"])
def test_the_generators_ninja_finds_nothing_to_do_after_shim_build_and_the_other_way_round(
        generator, source, env):
    build = generator(source, env)
    env = system_first(env)
    from shim.driver import ninja
    assert ninja.configured(str(build))[0] == SYSTEM_NINJA          # what the generator recorded
    result = run_shim(["build", "-C", build], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[3/3]" in result.stdout or "[4/4]" in result.stdout
    assert nothing_to_do(SYSTEM_NINJA, build, env)
    if version(SYSTEM_NINJA) < (1, 13):                              # the jobserver lost, in one line
        said = [line for line in result.stderr.splitlines() if "jobserver" in line]
        assert len(said) == 1 and SYSTEM_NINJA in said[0], result.stderr
    # the generator's own runner: nothing to rebuild, no `shim: not found` even without shim on PATH
    bare = dict(env, PATH="/usr/bin:/bin")
    if generator is cmake_dir:
        assert "no work to do" in run(["cmake", "--build", build], env=bare)
    else:
        out = run([BIN / "meson", "test", "-C", build], env=bare)
        assert "Ok:" in out and "Compiling" not in out and "Linking" not in out, out
    # and the other way round: the generator's ninja builds a change, then shim build has nothing to do
    (source / "tally.c").write_text(SOURCES["tally.c"] + "int unused(void) { return 0; }\n")
    run([SYSTEM_NINJA, "-C", build], env=env)
    again = run_shim(["build", "-C", build, "-n"], env=env)
    assert again.returncode == 0 and "no work to do" in again.stdout, again.stdout + again.stderr


def test_a_v7_log_from_the_pypi_ninja_is_kept_rather_than_rebuilt_by_an_older_generator_ninja(source, env):
    build = cmake_dir(source, env)
    if version(SYSTEM_NINJA) >= (1, 13):
        pytest.skip("Debian's ninja here writes the same log as the PyPI one")
    env = system_first(env)
    run([PYPI_NINJA, "-C", build], env=env)                      # what shim build did before: a v7 log
    result = run_shim(["build", "-C", build], env=env)
    assert result.returncode == 0 and "no work to do" in result.stdout, result.stdout + result.stderr
    said = [line for line in result.stderr.splitlines() if ".ninja_log" in line]
    assert len(said) == 1 and "v7" in said[0] and str(PYPI_NINJA.resolve()) in said[0], result.stderr
    assert (build / ".ninja_log").read_text().startswith("# ninja log v7")


def test_a_newer_generator_ninja_says_once_that_it_starts_an_older_log_over(source, env, tmp_path):
    build = cmake_dir(source, env)
    env = system_first(env)
    run([SYSTEM_NINJA, "-C", build], env=env)                    # Debian's log (v5)
    newer = tmp_path / "newer" / "ninja"                         # the PyPI 1.13, as the generator's
    newer.parent.mkdir()
    shutil.copy(PYPI_NINJA.resolve(), newer)
    cache = build / "CMakeCache.txt"
    cache.write_text(cache.read_text().replace("CMAKE_MAKE_PROGRAM:FILEPATH=%s" % SYSTEM_NINJA,
                                               "CMAKE_MAKE_PROGRAM:FILEPATH=%s" % newer))
    from shim.driver import ninja
    assert ninja.configured(str(build))[0] == str(newer)
    if ninja.log_version(str(build)) >= 7:
        pytest.skip("Debian's ninja here writes a v7 log already")
    result = run_shim(["build", "-C", build], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    said = [line for line in result.stderr.splitlines() if ".ninja_log" in line]
    assert len(said) == 1 and "starts it over" in said[0] and str(newer) in said[0], result.stderr
    assert "jobserver" not in result.stderr                     # a 1.13 generator ninja gets one
    assert nothing_to_do(newer, build, env)


def test_a_hand_written_build_ninja_is_built_by_the_pypi_ninja(example, env):
    from shim.driver import ninja
    chosen = ninja.choose(str(example), say=pytest.fail)
    assert chosen.path == ninja.pypi_binary() and chosen.version >= (1, 13)
    assert ninja.configured(str(example)) == (None, None)
