"""Go through shim: `go build -toolexec=shim` and `shim go build` (shim/golang.py, shim/driver/go.py,
toolchains/go.toml). The end-to-end tests build godoc (golang.org/x/tools/cmd/godoc: 25 packages,
goldmark's among them) with Debian's Go 1.19 from Debian's sources, offline, in GOPATH mode
(GO111MODULE=off GOPATH=/usr/share/gocode; .ci/run installs golang-go and
golang-golang-x-tools-dev): the ledger's records, peaks learned for a second build from a clean go
cache, go's cache hitting across plain go and shim both ways, and a real memory cgroup in which plain
`go build -p 2` is OOM-killed and `shim go build` is not. The driver's decisions are unit-tested
without go.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import memcg
from conftest import BIN, one_error_line, run_shim, write_tool
from shim.driver import go as driver
from shim.reports import records

GO = shutil.which("go")
GOPATH = Path("/usr/share/gocode")
PROGRAM = "golang.org/x/tools/cmd/godoc"
MISSING = ("go is not installed (.ci/run installs golang-go)" if not GO else
           "godoc's sources are missing from %s (.ci/run installs golang-golang-x-tools-dev)" % GOPATH
           if not (GOPATH / "src" / PROGRAM).is_dir() else None)
needs_go = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
MIB = 1 << 20


def e2e(test):
    return pytest.mark.e2e(needs_go(test))


def go_env(tmp: Path, cache: str = "gocache") -> dict:
    """A build's environment: GOPATH mode on Debian's sources, a go cache of the test's own, a
    private HOME and runtime dir, no SHIM_* or GO* settings of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIM_", "XDG_", "GO", "MAKEFLAGS"))}
    for name in ("home", "run"):
        (tmp / name).mkdir(mode=0o700, exist_ok=True)
    env.update(HOME=str(tmp / "home"), XDG_RUNTIME_DIR=str(tmp / "run"), GO111MODULE="off", GOPATH=str(GOPATH),
               GOCACHE=str(tmp / cache), GOFLAGS="", PATH="%s%s%s" % (BIN, os.pathsep, os.environ.get("PATH", "")))
    return env


def run(argv, cwd, env, timeout=900):
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def shim_go(cwd, env, *more):
    return run([BIN / "shim", "go", "build"] + list(more) + ["-o", "godoc", PROGRAM], cwd, env)


def steps_of(directory: Path, build=None) -> list:
    steps = records.load(str(directory / ".shim"), str(directory), "all")[1]
    return [s for s in steps if build is None or s.get("build") == build]


def last_build(directory: Path) -> str:
    recs = records.read(str(directory / ".shim"))
    return [r for r in recs if r.get("rec") == "build"][-1]["id"]


def compiles_run_by(plain_x_output: str) -> int:
    """The compiles `go build -x` ran (a cache hit runs none)."""
    return sum(1 for line in plain_x_output.splitlines() if "/compile -o " in line)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """godoc built once with `shim go build` from a clean go cache, no flags."""
    tmp = tmp_path_factory.mktemp("go")
    env = go_env(tmp)
    result = shim_go(tmp, env)
    assert result.returncode == 0, result.stderr[-4000:]
    return tmp, env, result


@e2e
def test_every_package_is_one_compile_named_by_it_and_the_link_by_the_main_package_with_no_probes(first):
    tmp, _env, result = first
    steps = steps_of(tmp)
    compiles = [s for s in steps if s["kind"] == "compile"]
    links = [s for s in steps if s["kind"] == "link"]
    assert len(compiles) >= 20 and len(steps) == len(compiles) + len(links)   # no probe, no `other`
    packages = [s["pkg"] for s in compiles]
    assert len(set(packages)) == len(packages) and None not in packages and "main" not in packages
    assert {PROGRAM, "github.com/yuin/goldmark/util", "golang.org/x/tools/godoc"} <= set(packages)
    assert [(s["pkg"], s["tool"]) for s in links] == [(PROGRAM, "go-link")]
    assert all(s["tool"] == "go-compile" and s["unit"] == "go compile %s linux/amd64 exe" % s["pkg"]
               for s in compiles) or os.uname().machine != "x86_64"
    assert all("go-build" not in s["unit"] for s in steps)       # never go's $WORK
    assert "shim: %d steps" % len(steps) in result.stdout + result.stderr


@e2e
def test_the_report_names_go_as_the_runner_and_steps_by_package(first):
    tmp, env, _ = first
    report = run_shim(["report"], cwd=tmp, env=env)
    assert report.returncode == 0, report.stderr
    assert ", go exit 0 in " in report.stdout.splitlines()[0]
    assert "go compile github.com/yuin/goldmark/util" in report.stdout


@e2e
def test_a_second_build_from_a_clean_go_cache_admits_every_step_at_its_learned_peak(first):
    tmp, env, _ = first
    learned = {s["unit"]: s["rss"] for s in steps_of(tmp)}
    shutil.rmtree(env["GOCACHE"])
    (tmp / "godoc").unlink()              # go skips a link whose binary is up to date
    result = shim_go(tmp, env)
    assert result.returncode == 0, result.stderr[-4000:]
    second = steps_of(tmp, last_build(tmp))
    assert len(second) == len(learned)
    assert [(s["unit"], s["src"], s["est"]) for s in second] == [(s["unit"], "history", learned[s["unit"]])
                                                                for s in second]


@e2e
def test_a_build_cached_by_plain_go_hits_under_shim_and_the_reverse(tmp_path):
    env = go_env(tmp_path, "plain-first")
    plain = run([GO, "build", "-o", "godoc", PROGRAM], tmp_path, env)
    assert plain.returncode == 0, plain.stderr[-4000:]
    (tmp_path / "godoc").unlink()
    result = shim_go(tmp_path, env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert [s["kind"] for s in steps_of(tmp_path, last_build(tmp_path))] == ["link"]     # every compile a hit

    env = go_env(tmp_path, "shim-first")
    (tmp_path / "godoc").unlink()     # an up-to-date binary: go would skip the link and main's compile
    result = shim_go(tmp_path, env)
    assert result.returncode == 0, result.stderr[-4000:]
    (tmp_path / "godoc").unlink()
    plain = run([GO, "build", "-x", "-o", "godoc", PROGRAM], tmp_path, env)
    assert plain.returncode == 0, plain.stderr[-4000:]
    assert compiles_run_by(plain.stderr) == 0 and "/link -o " in plain.stderr, plain.stderr[-3000:]


@e2e
def test_plain_go_build_toolexec_shim_records_into_the_same_ledger_from_gos_directory(first, tmp_path):
    env = go_env(tmp_path)
    (tmp_path / ".shim").mkdir()
    result = run([GO, "build", "-toolexec=shim", "-o", "godoc", PROGRAM], tmp_path, env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout == "" and result.stderr == ""           # nothing of shim's replayed by go's cache
    steps = steps_of(tmp_path)
    assert {s["kind"] for s in steps} == {"compile", "link"} and all(s["pkg"] for s in steps)


@e2e
@pytest.mark.skipif(memcg.available() is not None, reason=str(memcg.available()))
@pytest.mark.parametrize("learned", [False, True], ids=["cold", "learned"])
def test_in_a_memory_cgroup_where_go_build_p2_is_oom_killed_shim_go_build_gets_no_kill(first, tmp_path, learned):
    """goldmark/util's compile alone peaks at 280-310 MiB (the Go collector's timing), so plain
    `go build -p 2` is killed at 288 MiB in some runs and at 272 or 256 MiB in most: the first
    of these limits at which it is killed is the test's. Cold (no ledger), shim admits that
    compile at the 64 MiB prior and gives it the room it was admitted into as GOMEMLIMIT
    (family.soft_limit): ~195 MiB, 0 kills at 288, 272 and 256 (it was killed once and retried
    before). With what the first build learned, shim runs it alone with its room (the whole
    budget less what is in use) as GOMEMLIMIT and GOGC=50 (toolchains/go.toml): ~205 MiB."""
    ledger_of_first = first[0] / ".shim"
    for n, mib in enumerate((288, 272, 256)):
        plain_dir = tmp_path / ("plain-%d" % n)
        plain_dir.mkdir()
        with memcg.MemCg(mib * MIB) as cg:
            plain = run(cg.wrap([GO, "build", "-p", "2", "-o", "godoc", PROGRAM]), plain_dir, go_env(plain_dir))
            plain_kills = cg.oom_kills()
        if plain.returncode != 0 and plain_kills >= 1:
            break
    assert plain.returncode != 0 and plain_kills >= 1, "plain go build -p 2 survived 256 MiB"
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    if learned:
        shutil.copytree(ledger_of_first, shim_dir / ".shim", ignore=shutil.ignore_patterns("bin"))
    with memcg.MemCg(mib * MIB) as cg:
        result = run(cg.wrap([BIN / "shim", "go", "build", "-o", "godoc", PROGRAM]), shim_dir, go_env(shim_dir))
        kills = cg.oom_kills()
    assert result.returncode == 0, (mib, result.stderr[-4000:])
    assert kills == 0, mib
    assert (shim_dir / "godoc").is_file()
    if not learned:           # every compile ran with a soft limit: the room it was admitted into
        compiles = [s for s in memcg.ledger_steps(shim_dir) if s["kind"] == "compile"]
        assert compiles and all(0 < s["soft_limit"] < mib * MIB for s in compiles), compiles


# --- the driver, without go ------------------------------------------------------------


class Finished:
    code, signal, max_rss = 0, None, 0


def test_shim_go_hands_go_the_fast_launcher_as_toolexec_two_packages_per_core_and_a_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = {}

    def spawn(program, argv, env, **kw):
        seen.update(argv=argv, env=dict(env))
        return Finished()

    env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(tmp_path), "GOFLAGS": "-mod=mod"}
    assert driver.run("/usr/bin/go", ["build", "./..."], env, "1GiB", spawn=spawn) == 0
    flags = seen["env"]["GOFLAGS"].split()
    launcher = str(tmp_path / ".shim" / "bin" / "shim")
    assert flags == ["-mod=mod", "-toolexec=" + launcher, "-p=%d" % (2 * driver.build.cores())]
    assert seen["argv"] == ["/usr/bin/go", "build", "./..."]            # the user's arguments as given
    assert seen["env"]["SHIM_GO_DIR"] == str(tmp_path)
    assert seen["env"]["SHIM_CPU_SLOTS"] == str(driver.build.cores())
    assert 0 < int(seen["env"]["SHIM_MEMORY_BUDGET"]) < 1 << 30


@pytest.mark.parametrize("go_args, goflags, given", [
    (["build", "-p", "3", "./..."], "", "3"), (["build", "-p=1", "."], "", "1"), (["test", "."], "-p=2", "2"),
    (["build", "--", "-p", "5"], "", None),
])
def test_the_parallelism_the_user_chose_is_left_alone(go_args, goflags, given):
    assert driver.given_jobs(go_args, {"GOFLAGS": goflags}) == given


def test_a_toolexec_of_the_users_own_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(tmp_path)}
    with pytest.raises(driver.ShimError, match="-toolexec=strace.*tool.go-compile.launcher"):
        driver.run("/usr/bin/go", ["build", "-toolexec=strace", "."], env, "1GiB",
                   spawn=lambda *a, **k: Finished())


@e2e
def test_shim_go_says_in_one_line_when_the_directory_or_go_is_missing(tmp_path):
    env = go_env(tmp_path)
    one_error_line(run_shim(["go", "-C", tmp_path / "nope", "build"], env=env), 2, "-C", "nope")
    env["PATH"] = str(BIN)
    one_error_line(run_shim(["go", "build"], cwd=tmp_path, env=env), 127, "go not found on PATH")
