"""Real projects built through shim: libuv (CMake launchers), ninja's own source (configure.py,
then `shim wrap`) and a Meson project (`CC="shim gcc"`), each checked against its ledger.

The sources come from the package registries through bench/fetch-corpus.sh, into a
cache outside the repository (`SHIM_CORPUS_DIR`, default ~/.cache/shim-corpus) that is
downloaded once and reused. Every test configures its own build directory in tmp_path, so no
test depends on another's state or on the cache's build directories. The tests are skipped
only when the registries cannot be reached; anything else that goes wrong fails them.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import BIN, REPO, run_shim
from shim.generators import ninjafile
from shim.reports import records

pytestmark = pytest.mark.e2e          # real projects from the registries, through the installed shim

NINJA = BIN / "ninja"
FETCH = REPO / "bench" / "fetch-corpus.sh"         # vendored from ../shared/corpus
# fetch-corpus.sh moves a source tree into src/ only once it is unpacked whole; sqlite's
# CMakeLists.txt is the last file it writes.
COMPLETE = ("libuv/CMakeLists.txt", "abseil/CMakeLists.txt", "googletest/CMakeLists.txt",
            "ninja/configure.py", "sqlite/CMakeLists.txt")
NEEDS = {"gcc": "gcc", "g++": "g++", "cmake": "cmake", "npm": "npm", "dpkg-source": "dpkg-dev",
         "apt-get": "apt"}
# What apt-get, pip (urllib3) and npm print when a registry cannot be reached.
UNREACHABLE = ("Temporary failure resolving", "Could not resolve", "Could not connect to",
               "Temporary failure in name resolution", "Name or service not known",
               "Network is unreachable", "No route to host", "Connection timed out",
               "Connection refused", "NewConnectionError", "ConnectTimeoutError",
               "Max retries exceeded", "ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT",
               "ENETUNREACH", "ECONNRESET")
LAUNCHERS = ["-DCMAKE_%s_%s_LAUNCHER=shim" % (lang, what)
             for lang in ("C", "CXX") for what in ("COMPILER", "LINKER")]


def unreachable_registry(output: str):
    """The line of *output* that says a registry could not be reached, or None."""
    for line in output.splitlines():
        if any(sign in line for sign in UNREACHABLE):
            return line.strip()
    return None


def npm_unreachable(script: str):
    """fetch-corpus.sh silences `npm pack`: ask npm again, and return its network error if any."""
    spec = re.search(r"^NPM_SQLITE=(\S+)", script, re.M).group(1)
    probe = subprocess.run(["npm", "view", "--fetch-retries=0", spec, "version"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
    return unreachable_registry(probe.stdout) if probe.returncode != 0 else None


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus sources (DIR/src), fetched once by fetch-corpus.sh and reused while complete."""
    dest = Path(os.environ.get("SHIM_CORPUS_DIR") or Path.home() / ".cache" / "shim-corpus")
    if all((dest / "src" / name).is_file() for name in COMPLETE):
        return dest / "src"
    missing = sorted(pkg for tool, pkg in NEEDS.items() if not shutil.which(tool))
    if missing:
        pytest.fail("fetching the corpus needs %s (.ci/run installs them)" % ", ".join(missing))
    env = dict(os.environ, LAUNCHER=str(BIN / "shim"), PYTHON=sys.executable,
               PATH="%s%s%s" % (BIN, os.pathsep, os.environ.get("PATH", "")))
    result = subprocess.run(["bash", str(FETCH), str(dest)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=1800)
    if result.returncode != 0:
        why = unreachable_registry(result.stdout)
        last = (result.stdout.rstrip().splitlines() or [""])[-1]
        if why is None and last.startswith("[fetch-corpus] npm:"):
            why = npm_unreachable(FETCH.read_text())
        if why is not None:
            pytest.skip("the package registries are unreachable: %s" % why)
        pytest.fail("fetch-corpus.sh failed (status %d):\n%s" % (result.returncode, result.stdout[-4000:]))
    assert all((dest / "src" / name).is_file() for name in COMPLETE), result.stdout
    return dest / "src"


def run(argv, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run *argv*; fail the test with its output unless it exits 0."""
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, "%s\n%s" % (" ".join(map(str, argv)), result.stdout[-6000:])
    return result


def shim_build(directory: Path, env: dict, *args: str) -> str:
    """`shim build -C DIRECTORY ARGS` with its default memory budget, as a user runs it."""
    result = run_shim(["build", "-C", directory, *args], env=env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result.stdout


def ledger_kinds(directory: Path, env: dict) -> dict:
    """{first output: step kind} of every step of the last build, from `shim report --json`."""
    result = run_shim(["report", "-C", directory, "--json"], env=env)
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["steps"]
    assert [s for s in steps if s["exit"] != 0 or s["sig"] is not None] == []
    kinds = {s["out"][0]: s["kind"] for s in steps}
    assert len(kinds) == len(steps), "a step recorded twice"
    return kinds


def files_of(directory: Path) -> dict:
    """{relative path: bytes} of every file under *directory* but ninja's own logs."""
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.startswith(".ninja_")}


def dry_run(directory: Path, env: dict) -> list:
    """The commands `ninja -n -v` would run in *directory*, progress prefix and `shim ` dropped."""
    out = run([NINJA, "-C", directory, "-n", "-v"], env=env).stdout
    return sorted(re.sub(r"^\[\d+/\d+\] ", "", line).replace("shim ", "")
                  for line in out.splitlines() if line.startswith("["))


def assert_generated_manifest_round_trips_and_wraps(directory: Path, env: dict) -> None:
    """What a generator wrote re-emits byte for byte; wrapped, the real ninja accepts it
    (`-t rules`, `-n`) and would run the same commands with shim in front; --undo gives the
    generated bytes back."""
    manifest = ninjafile.parse(str(directory / "build.ninja"))
    for nfile in manifest.files:
        assert ninjafile.encode(nfile.emit()) == Path(nfile.real_path).read_bytes(), nfile.path
    before, commands = files_of(directory), dry_run(directory, env)
    wrapped = run_shim(["wrap", directory], env=env)
    assert wrapped.returncode == 0, wrapped.stderr
    assert run([NINJA, "-C", directory, "-t", "rules"], env=env).stdout
    assert dry_run(directory, env) == commands
    undone = run_shim(["wrap", "--undo", directory], env=env)
    assert undone.returncode == 0, undone.stderr
    assert files_of(directory) == before


def expected_kinds(directory: Path, kind_of_rule) -> dict:
    """{first output: kind} of every edge ninja ran in *directory* (its .ninja_log), the kind
    told by the generator's rule name; edges of rules that run no toolchain step (symlinks,
    generators) are left out. An unknown rule fails the test: it must be classified first."""
    manifest = ninjafile.parse(str(directory / "build.ninja"))
    edge_of = {}
    for build in manifest.builds:
        first = ninjafile.canonical_path(build.outputs[0])
        for out in build.outputs + build.implicit_outputs:
            edge_of[ninjafile.canonical_path(out)] = (first, build.rule)
    expected = {}
    for out in records.read_ninja_log(str(directory)):
        first, rule = edge_of[out]
        kind = kind_of_rule(rule)
        if kind is not None:
            expected[first] = kind
    return expected


def cmake_kind(rule: str):
    """The step kind of a rule of CMake's Ninja generator."""
    if re.match(r"(C|CXX)_COMPILER__", rule):
        return "compile"
    if re.match(r"(C|CXX)_STATIC_LIBRARY_LINKER__", rule):
        return "archive"
    if re.match(r"(C|CXX)_(SHARED_LIBRARY|MODULE|EXECUTABLE)_LINKER__", rule):
        return "link"
    assert rule in ("CMAKE_SYMLINK_LIBRARY", "RERUN_CMAKE", "CUSTOM_COMMAND", "phony"), rule
    return None


def configure_py_kind(rule: str):
    """The step kind of a rule of ninja's configure.py."""
    assert rule in ("cxx", "ar", "link", "inline", "configure", "phony"), rule
    return {"cxx": "compile", "ar": "archive", "link": "link"}.get(rule)


def meson_kind(rule: str):
    """The step kind of a rule of Meson's Ninja backend."""
    assert rule in ("c_COMPILER", "STATIC_LINKER", "c_LINKER", "REGENERATE_BUILD",
                    "CUSTOM_COMMAND", "phony"), rule
    return {"c_COMPILER": "compile", "STATIC_LINKER": "archive", "c_LINKER": "link"}.get(rule)


def pinned_version(variable: str) -> str:
    """The version fetch-corpus.sh pins in VARIABLE (`PYPI_NINJA=ninja==1.13.2` -> 1.13.2)."""
    return re.search(r"^%s=\S+?==?(\S+)" % variable, FETCH.read_text(), re.M).group(1)


# --- libuv: CMake -G Ninja with the compiler and linker launchers ----------------------------


def test_libuv_configured_with_the_cmake_launchers_builds_through_shim_and_its_tests_pass(
        corpus, env, tmp_path):
    build = tmp_path / "libuv"
    run(["cmake", "-G", "Ninja", "-S", corpus / "libuv", "-B", build, "-DLIBUV_BUILD_TESTS=ON",
         "-DCMAKE_MAKE_PROGRAM=%s" % NINJA] + LAUNCHERS, env=env)
    assert_generated_manifest_round_trips_and_wraps(build, env)

    # The launchers reach every compile and link, but CMake runs `ar` for a static library
    # without them: the archive rule is the one thing left for `shim wrap` (--wrap below).
    check = run_shim(["wrap", "--check", build], env=env)
    assert check.returncode == 1
    unwrapped = re.findall(r"would wrap rule (\S+) \((\S+)\)", check.stdout)
    assert [(rule.startswith("C_STATIC_LIBRARY_LINKER__uv_a_"), program) for rule, program in unwrapped] == [
        (True, "ar")], check.stdout

    # The shared library, the static one and the test runner linked against the static one:
    # every kind of step, in half the time of the whole tree (two runners, 441 compiles).
    shim_build(build, env, "--wrap", "uv", "uv_run_tests_a")
    env["UV_RUN_AS_ROOT"] = "1"          # the runner refuses root (CI's user) without it
    for test in ("loop_alive", "timer"):
        out = run([build / "uv_run_tests_a", test], cwd=build, env=env).stdout
        assert "ok 1 - %s" % test in out.splitlines(), out

    kinds = ledger_kinds(build, env)
    assert kinds == expected_kinds(build, cmake_kind)
    assert sorted(set(kinds.values())) == ["archive", "compile", "link"]
    assert kinds["libuv_a.a"] == "archive"
    assert kinds["libuv.so.1.0.0"] == kinds["uv_run_tests_a"] == "link"
    assert list(kinds.values()).count("compile") > 200


# --- ninja's own source: configure.py, then shim wrap ---------------------------------------


def test_ninjas_source_configured_by_configure_py_and_wrapped_builds_a_ninja_that_runs(
        corpus, env, tmp_path):
    build = tmp_path / "ninja"
    build.mkdir()
    env.pop("CXX", None)                 # configure.py's default compiler, c++
    run([sys.executable, corpus / "ninja" / "configure.py"], cwd=build, env=env)
    assert_generated_manifest_round_trips_and_wraps(build, env)
    wrapped = run_shim(["wrap", build / "build.ninja"], env=env)
    assert wrapped.returncode == 0, wrapped.stderr
    assert re.findall(r"wrapped rule (\S+) \((\S+)\)", wrapped.stdout) == [
        ("cxx", "c++"), ("ar", "ar"), ("link", "c++")], wrapped.stdout

    shim_build(build, env, "ninja")
    version = run([build / "ninja", "--version"], env=env).stdout.strip()
    source = (corpus / "ninja" / "src" / "version.cc").read_text()
    assert version == re.search(r'kNinjaVersion = "([^"]+)"', source).group(1)
    assert version.startswith(pinned_version("PYPI_NINJA") + "."), version

    kinds = ledger_kinds(build, env)
    assert kinds == expected_kinds(build, configure_py_kind)
    assert kinds["build/libninja.a"] == "archive" and kinds["ninja"] == "link"
    assert list(kinds.values()).count("compile") > 25


# --- Meson: CC="shim gcc" -------------------------------------------------------------------


MESON_PROJECT = {
    "meson.build": """
        project('tally', 'c')
        lib = static_library('tally', 'tally.c')
        prog = executable('tally', 'main.c', link_with: lib)
        test('sum', prog, args: ['1', '2', '3'])
        """,
    "tally.c": """
        int tally(int n, const int *v) { int s = 0; for (int i = 0; i < n; i++) s += v[i]; return s; }
        """,
    "main.c": """
        #include <stdio.h>
        #include <stdlib.h>
        int tally(int n, const int *v);
        int main(int argc, char **argv) {
            int v[64], n = 0;
            for (int i = 1; i < argc && n < 64; i++) v[n++] = atoi(argv[i]);
            printf("sum=%d\\n", tally(n, v));
            return 0;
        }
        """,
}


@pytest.mark.parametrize("ar", [None, "shim ar"], ids=["cc-only", "cc-and-ar"])
def test_a_meson_project_builds_with_cc_shim_gcc_and_its_test_passes(env, tmp_path, ar):
    meson = BIN / "meson"                # a test dependency (pyproject.toml)
    source, build = tmp_path / "src", tmp_path / "build"
    for name, text in MESON_PROJECT.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(textwrap.dedent(text).lstrip("\n"))
    env["CC"] = "shim gcc"               # set, so Meson does not pick up ccache on its own
    if ar:
        env["AR"] = ar
    run([meson, "setup", build, source], cwd=source, env=env)
    # Meson's compiler probes (`shim gcc --version`, test compiles in scratch dirs) ran in
    # directories that are not build dirs: they leave no ledger behind.
    assert [str(p) for p in tmp_path.rglob(".shim")] == []
    assert_generated_manifest_round_trips_and_wraps(build, env)

    shim_build(build, env)
    assert run([build / "tally", "4", "5"], env=env).stdout == "sum=9\n"
    assert "Ok:                1" in run([meson, "test", "-C", build, "--no-rebuild"], env=env).stdout

    kinds = ledger_kinds(build, env)
    expected = expected_kinds(build, meson_kind)
    assert expected == {"libtally.a.p/tally.c.o": "compile", "tally.p/main.c.o": "compile",
                        "libtally.a": "archive", "tally": "link"}
    archive = re.search(r"^rule STATIC_LINKER\n command = (.*)$", (build / "build.ninja").read_text(), re.M)
    if ar:
        assert kinds == expected
        assert archive.group(1).startswith("rm -f $out && shim ar ")
    else:
        # Meson archives with the `ar` it derives from the compiler (gcc-ar), not through CC:
        # only AR="shim ar" puts the archive step in the ledger.
        del expected["libtally.a"]
        assert kinds == expected
        assert "shim" not in archive.group(1)
