"""shim as the compiler and archiver of a Bazel cc_toolchain, on a real Bazel.

The workspace is tests/fixtures/bazel (a C library, a C++ program, two genrules
running a fake tool), with stub rules_cc/rules_java repositories so that Bazel
(Debian's bazel-bootstrap 4.2) builds offline. `shim bazel init` writes the
toolchain package into a copy of it. Every Bazel run is `bazel --batch
--output_base=<tmp>`, so no server outlives a test; Bazel 4 takes seconds to
start, so the two builds are module fixtures, shared by the tests that read them:

- `crosstool`: `--config=shim` (the toolchain chosen by --crosstool_top) with a
  small memory budget, which the genrules' fake tool needs most of;
- `resolution`: the same with --incompatible_enable_cc_toolchain_resolution, no
  budget, and gcc/ar on PATH replaced by recorders of what they were given.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, REPO, one_error_line, run_shim, write_tool, write_toml

pytestmark = pytest.mark.e2e         # a real Bazel, and the installed shim in its toolchain
from shim.generators import bazel as bazel_mod
from shim.reports import records

FIXTURE = REPO / "tests" / "fixtures" / "bazel"
BAZEL = shutil.which("bazel")
needs_bazel = pytest.mark.skipif(BAZEL is None, reason="bazel is not installed (.ci/run installs bazel-bootstrap)")

BUDGET = "1GiB"          # 16 slots of 64 MiB ...
HOG_MEMORY = "640MiB"    # ... and each hog needs 10 of them: two never fit together
HOLD = 2.0               # seconds a hog runs, looking out for the other one

# The fake tool of the genrules: holds 32 MiB, notes when it ran and whether the
# other hog was running meanwhile (a rendezvous, so overlap never depends on timing).
HOG = """
import os, sys, time
name, out = sys.argv[1], sys.argv[2]
d = os.environ["HOG_DIR"]
other = {"a": "b", "b": "a"}[name]
hold = b"x" * (32 << 20)
start = time.time()
open(os.path.join(d, name + ".start"), "w").close()
saw_other = False
deadline = time.monotonic() + %r
while time.monotonic() < deadline and not saw_other:
    saw_other = (os.path.exists(os.path.join(d, other + ".start"))
                 and not os.path.exists(os.path.join(d, other + ".end")))
    time.sleep(0.01)
line = "%%.6f %%.6f %%d %%d\\n" %% (start, time.time(), saw_other, os.getpid())
for path in (os.path.join(d, name + ".end"), out):
    with open(path, "w") as f:
        f.write(line)
""" % HOLD

# gcc and ar as Bazel's actions see them on PATH in the `resolution` build: they
# keep a copy of each @params file, their arguments and the environment shim gave
# them (/proc/$$/environ: as execve passed it), then run the real tool.
RECORDER = """
for a in "$@"; do
  case "$a" in
    @*) f="${a#@}"; n=$(basename "$f"); cp "$f" "%(log)s/$n"; printf '%%s\\n' "$@" > "%(log)s/$n.argv"
        tr '\\0' '\\n' < /proc/$$/environ > "%(log)s/$n.env" ;;
  esac
done
exec %(real)s "$@"
"""


def _env(tmp: Path) -> dict:
    """As conftest's `env` fixture, for module-scoped fixtures."""
    home = tmp / "home"
    home.mkdir()
    run = tmp / "run"
    run.mkdir(mode=0o700)
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("SHIM_", "XDG_", "NINJA_", "MAKEFLAGS", "CCACHE_"))}
    e.update(HOME=str(home), XDG_RUNTIME_DIR=str(run), PATH="%s%s%s" % (BIN, os.pathsep, os.environ["PATH"]))
    return e


def _copy_workspace(dest: Path) -> Path:
    shutil.copytree(FIXTURE, dest)
    return dest


class Site:
    """A workspace with the shim toolchain in it, and one Bazel output base."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.env = _env(tmp)
        self.ws = _copy_workspace(tmp / "ws")
        self.output_base = tmp / "output_base"
        hog = write_tool(tmp / "tools", "hog", HOG, shebang="#!%s -I" % sys.executable)
        write_toml(self.ws / "toolchain.toml", """
            [tool.hog]
            program = "%s"
            kind = "other"

            [step.other]
            memory = "%s"

            # A rule that would change the link's -Wl,-O1 if shim rewrote inside @params files.
            [tool.cc]
            args.replace = { "-Wl,-O1" = "-Wl,-O2" }
            """ % (hog, HOG_MEMORY))
        self.init = run_shim(["bazel", "init", self.ws], env=self.env)
        assert self.init.returncode == 0, self.init.stderr

    def build(self, name: str, *flags: str, path: str = "/usr/bin:/bin"):
        """`bazel build //...` through the shim config, with its own ledger and hog dir."""
        ledger, hogs = self.tmp / name / "ledger", self.tmp / name / "hogs"
        ledger.mkdir(parents=True)
        hogs.mkdir()
        run = self.env["XDG_RUNTIME_DIR"]
        argv = [BAZEL, "--batch", "--output_base=%s" % self.output_base, "build", "--config=shim",
                "--nosandbox_debug", "--color=no", "--curses=no", "--jobs=8", "--local_cpu_resources=8",
                "--action_env=SHIM_LEDGER=%s" % ledger, "--action_env=HOG_DIR=%s" % hogs,
                "--action_env=XDG_RUNTIME_DIR=%s" % run, "--action_env=PATH=%s" % path,
                "--sandbox_writable_path=%s" % ledger, "--sandbox_writable_path=%s" % hogs,
                "--sandbox_writable_path=%s" % run] + list(flags) + ["//..."]
        result = subprocess.run(argv, cwd=self.ws, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        return Build(self, result, ledger, hogs)


class Build:
    def __init__(self, site, result, ledger, hogs):
        self.site, self.result, self.ledger, self.hogs = site, result, ledger, hogs
        self.steps = records.load(str(ledger), which="all")[1]
        self.sandboxed = " linux-sandbox." in result.stderr

    def step(self, tail: str) -> dict:
        found = [s for s in self.steps if s["out"] and s["out"][0].endswith(tail)]
        assert len(found) == 1, (tail, [s["out"] for s in self.steps])
        return found[0]

    def hog_runs(self) -> list:
        """[(start, end, saw the other running)] of hogs a and b."""
        runs = []
        for name in "ab":
            start, end, saw, _pid = (self.hogs / (name + ".end")).read_text().split()
            runs.append((float(start), float(end), saw == "1"))
        return runs

    def shim(self, *args):
        env = dict(self.site.env, SHIM_LEDGER=str(self.ledger))
        result = run_shim(list(args), cwd=self.site.ws, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return Site(tmp_path_factory.mktemp("bazel"))


@pytest.fixture(scope="module")
def crosstool(site):
    return site.build("crosstool", "--action_env=SHIM_MEMORY_BUDGET=%s" % BUDGET)


@pytest.fixture(scope="module")
def resolution(site):
    log = site.tmp / "recorded"
    log.mkdir()
    fake = site.tmp / "fakebin"
    for tool in ("gcc", "ar"):
        write_tool(fake, tool, RECORDER % {"log": log, "real": shutil.which(tool)})
    build = site.build("resolution", "--incompatible_enable_cc_toolchain_resolution",
                       "--action_env=SHIM_MEMORY_BUDGET=off", "--sandbox_writable_path=%s" % log,
                       path="%s:/usr/bin:/bin" % fake)
    build.recorded = log
    return build


# --- shim bazel init (no Bazel needed) -------------------------------------------------


def test_the_installed_shim_carries_the_bazel_toolchain_package():
    installed = Path(subprocess.run([sys.executable, "-I", "-c", "import shim; print(shim.__file__)"],
                                    stdout=subprocess.PIPE, text=True).stdout.strip()).parent
    for source in sorted((REPO / "toolchains" / "bazel").iterdir()):
        copy = installed / "toolchains" / "bazel" / source.name
        assert copy.exists() and copy.read_bytes() == source.read_bytes(), \
            "reinstall shim (pip install '.[test]'): %s differs" % copy


def test_init_writes_the_package_and_a_config_and_rerunning_it_changes_nothing(tmp_path, env):
    ws = _copy_workspace(tmp_path / "ws")
    (ws / ".bazelrc").write_text("build --verbose_failures\n")
    first = run_shim(["bazel", "init", ws], env=env)
    assert first.returncode == 0, first.stderr
    pkg = ws / "shim_toolchain"
    for name in ("BUILD", "cc_toolchain_config.bzl", "local.bzl", "toolchain.toml", "gcc", "ar", "shim"):
        assert "shim_toolchain/%s" % name in first.stdout, first.stdout
        assert (pkg / name).is_file()
    assert (pkg / "BUILD").read_text() == (REPO / "toolchains" / "bazel" / "BUILD").read_text()
    for name in ("gcc", "ar", "shim"):
        text = (pkg / name).read_text()
        first = text.partition("\n")[0]              # python or python3: whichever pip wrote into bin/shim
        assert first.startswith("#!%s/python" % BIN) and first.endswith(" -IS"), first   # never /usr/bin/env
        assert "/usr/bin/env" not in text
        assert "b'SHIM_TOOLCHAIN', %r" % str(pkg / "toolchain.toml").encode() in text
        assert "b'SHIM_CACHE_DIR', %r" % str(tmp_path / "home" / ".cache" / "shim").encode() in text
        assert os.access(pkg / name, os.X_OK)
    assert '"/usr/include",' in (pkg / "local.bzl").read_text()     # detected with gcc -E -v
    rc = (ws / ".bazelrc").read_text()
    assert rc.startswith("build --verbose_failures\n")
    assert "build:shim --crosstool_top=//shim_toolchain:suite\n" in rc
    assert "build:shim --extra_toolchains=//shim_toolchain:toolchain\n" in rc
    assert "build:shim --action_env=SHIM_LEDGER=%s\n" % (ws / ".shim") in rc
    assert (ws / ".shim").is_dir() and (tmp_path / "home" / ".cache" / "shim").is_dir()

    (pkg / "toolchain.toml").write_text("[step.link]\nmemory = \"2GiB\"\n")
    before = {p: p.read_bytes() for p in list(pkg.iterdir()) + [ws / ".bazelrc"]}
    again = run_shim(["bazel", "init", ws], env=env)
    assert again.returncode == 0, again.stderr
    assert "wrote" not in again.stdout and "updated" not in again.stdout, again.stdout
    assert "kept      shim_toolchain/toolchain.toml" in again.stdout
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(pkg.iterdir()) == sorted(p for p in before if p.parent == pkg)


def test_init_replaces_its_own_block_in_bazelrc_and_nothing_else():
    old = bazel_mod.with_block("build -c opt\n", ["build:shim --old"])
    text = "# mine\n" + old + "test --test_output=errors"
    new = bazel_mod.with_block(text, ["build:shim --new"])
    assert new.startswith("# mine\nbuild -c opt\n\n# >>> shim bazel init >>>")
    assert "--old" not in new and "build:shim --new\n# <<< shim bazel init <<<\n" in new
    assert new.endswith("<<<\ntest --test_output=errors")
    assert bazel_mod.with_block(new, ["build:shim --new"]) == new


def test_init_with_a_budget_and_an_own_bazelrc_file(tmp_path, env):
    ws = _copy_workspace(tmp_path / "ws")
    result = run_shim(["bazel", "init", ws, "--budget", "3GiB", "--bazelrc", ws / "user.bazelrc"], env=env)
    assert result.returncode == 0, result.stderr
    assert "build:shim --action_env=SHIM_MEMORY_BUDGET=3GiB\n" in (ws / "user.bazelrc").read_text()
    assert not (ws / ".bazelrc").exists()


def test_init_refuses_a_directory_that_is_not_a_workspace(tmp_path, env):
    one_error_line(run_shim(["bazel", "init", tmp_path], env=env), 2, "not a Bazel workspace", str(tmp_path))
    one_error_line(run_shim(["bazel", "init", FIXTURE, "--budget", "lots"], env=env), 2, "--budget lots")


def test_bazel_help_names_init():
    for args in (["bazel", "--help"], ["bazel", "init", "--help"]):
        result = run_shim(args)
        assert result.returncode == 0 and "init" in result.stdout, result.stderr


def test_a_wrapper_bakes_in_defaults_that_the_environment_overrides(tmp_path, env):
    ws = _copy_workspace(tmp_path / "ws")
    assert run_shim(["bazel", "init", ws], env=env).returncode == 0
    wrapper = ws / "shim_toolchain" / "shim"
    baked = run_shim(["config", "show"], cwd=tmp_path, env=env, shim=wrapper)
    assert "env      %s" % (ws / "shim_toolchain" / "toolchain.toml") in baked.stdout, baked.stdout
    mine = write_toml(tmp_path / "mine.toml", "[step.link]\nmemory = \"3GiB\"\n")
    chosen = run_shim(["config", "show"], cwd=tmp_path, env=dict(env, SHIM_TOOLCHAIN=str(mine)), shim=wrapper)
    assert "env      %s" % mine in chosen.stdout and "toolchain.toml" not in chosen.stdout.split("# platform")[0]
    # The wrapper named gcc is the gcc driver: it compiles with the gcc found on PATH.
    (tmp_path / "a.c").write_text("int a;\n")
    compiled = run_shim(["-c", "a.c", "-o", "a.o"], cwd=tmp_path, env=env, shim=ws / "shim_toolchain" / "gcc")
    assert compiled.returncode == 0 and (tmp_path / "a.o").exists(), compiled.stderr


# --- real Bazel builds -------------------------------------------------------------------


def _kinds(report: dict) -> dict:
    return {s["out"][0].rpartition("/bin/")[2]: s["kind"] for s in report["steps"] if s["out"]}


@needs_bazel
def test_a_crosstool_top_build_compiles_archives_and_links_through_shim(site, crosstool):
    ran = subprocess.run([str(site.ws / "bazel-bin" / "main" / "hello")], stdout=subprocess.PIPE, text=True)
    assert ran.stdout == "hello from C and C++\n"
    report = json.loads(crosstool.shim("report", "--json"))
    kinds = _kinds(report)
    assert kinds["main/_objs/greet/greet.pic.o"] == "compile"          # C
    assert kinds["main/_objs/hello/hello.pic.o"] == "compile"          # C++
    assert kinds["main/libgreet.a"] == "archive"                       # ar @params
    assert kinds["main/hello"] == "link"                               # gcc @params
    assert report["totals"]["by_kind"]["other"] == 2                   # the hogs
    text = crosstool.shim("report")
    assert "main/libgreet.a" in text and "archive" in text and "link" in text
    compile_step = crosstool.step("/greet.pic.o")
    assert compile_step["exe"] == "/usr/bin/gcc"     # the masquerade found the real gcc from inside the sandbox


@needs_bazel
def test_compile_commands_from_a_bazel_build_have_its_compile_steps(site, crosstool):
    out = site.tmp / "compile_commands.json"
    crosstool.shim("compdb", "-o", out)
    entries = {e["file"]: e for e in json.loads(out.read_text())}
    assert sorted(entries) == ["main/greet.c", "main/hello.cc"]
    for entry in entries.values():
        assert entry["arguments"][0] == "/usr/bin/gcc" and "-c" in entry["arguments"]
    assert '-DGREETING="hello"' in entries["main/greet.c"]["arguments"]


@needs_bazel
def test_sandboxed_actions_share_the_memory_budget_and_never_overlap_beyond_it(crosstool):
    (a_start, a_end, a_saw), (b_start, b_end, b_saw) = crosstool.hog_runs()
    assert a_end <= b_start or b_end <= a_start, crosstool.hog_runs()
    assert not a_saw and not b_saw
    hogs = [s for s in crosstool.steps if s["tool"] == "hog"]
    assert len(hogs) == 2
    assert all(s["res"] >= 640 << 20 for s in hogs)
    assert max(s["wait"] for s in hogs) > HOLD / 4     # Bazel did start both at once: shim held one back
    started = [r for r in records.read(str(crosstool.ledger)) if r.get("rec") in ("start", "step")]
    assert len({r["id"] for r in started}) == len(started) == len(crosstool.steps)
    if crosstool.sandboxed:                            # every action is pid 2 of its own namespace
        assert {r["pid"] for r in started} == {2}


@needs_bazel
def test_cc_toolchain_resolution_selects_the_shim_toolchain(site, resolution):
    ran = subprocess.run([str(site.ws / "bazel-bin" / "main" / "hello")], stdout=subprocess.PIPE, text=True)
    assert ran.stdout == "hello from C and C++\n"
    kinds = _kinds(json.loads(resolution.shim("report", "--json")))
    assert kinds["main/_objs/greet/greet.pic.o"] == kinds["main/_objs/hello/hello.pic.o"] == "compile"
    assert kinds["main/libgreet.a"] == "archive" and kinds["main/hello"] == "link"


@needs_bazel
def test_without_a_budget_the_same_actions_do_overlap(resolution):
    (a_start, a_end, a_saw), (b_start, b_end, b_saw) = resolution.hog_runs()
    assert max(a_start, b_start) < min(a_end, b_end) and (a_saw or b_saw), resolution.hog_runs()


@needs_bazel
def test_params_files_reach_gcc_and_ar_untouched_and_classify_their_steps(site, resolution):
    recorded = {p.name: p for p in resolution.recorded.glob("*.params")}
    assert {"hello-2.params", "libgreet.a-2.params"} <= set(recorded), sorted(recorded)
    for name, copy in recorded.items():
        argv = (resolution.recorded / (name + ".argv")).read_text().splitlines()
        assert len(argv) == 1 and argv[0].startswith("@bazel-out/") and argv[0].endswith("/" + name)
        assert copy.read_bytes() == (site.ws / argv[0][1:]).read_bytes()     # as Bazel wrote it
    link = recorded["hello-2.params"].read_text().splitlines()
    assert "-Wl,-O1" in link and "-Wl,-O2" not in link      # tool.cc's rewrite rule stayed outside
    environment = (resolution.recorded / "hello-2.params.env").read_text().splitlines()
    assert "PWD=/proc/self/cwd" in environment                # as Bazel sets it for the action
    step = resolution.step("/bin/main/hello")
    assert step["kind"] == "link" and step["in"].endswith("/_objs/hello/hello.pic.o")
    archive = resolution.step("/bin/main/libgreet.a")
    assert archive["kind"] == "archive" and archive["in"].endswith("/_objs/greet/greet.pic.o")


@needs_bazel
def test_compile_commands_of_sandboxed_steps_name_directories_that_exist(crosstool):
    entries = json.loads(crosstool.shim("compdb"))
    assert entries
    # Actions run in OUTPUT_BASE/sandbox/<strategy>/<N>/execroot/WS, deleted afterwards: the ledger
    # must name OUTPUT_BASE/execroot/WS instead, or these would not exist.
    assert all(os.path.isdir(e["directory"]) for e in entries), [e["directory"] for e in entries]
    assert not any("/sandbox/" in e["directory"] for e in entries)
