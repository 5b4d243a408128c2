"""The per-user runtime directory (shim/rundir.py): memory slots, CPU slots and the jobserver
fifo live there, so another user must not be able to take it, and admission must not turn
off when they try."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHIM, plant, run_shim

pytestmark = pytest.mark.usefixtures("other_user")


def build_records(example):
    lines = (example / ".shim" / "ledger-v1.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


def assert_admitted_under_shim_build(example, env, run):
    result = run_shim(["build", "-C", example, "--budget", "1GiB"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no memory admission" not in result.stdout + result.stderr
    assert "no jobserver" not in result.stdout + result.stderr
    recs = build_records(example)
    steps = [r for r in recs if r["rec"] in ("start", "step")]
    assert steps and all(r.get("res") for r in steps), steps        # every step held a reservation
    build = [r for r in recs if r["rec"] == "build"][-1]
    assert build["jobs"], build                                      # ninja ran under the jobserver
    assert [p.name for p in (run / "shim.1").iterdir() if p.name.startswith("pool-")]
    return result


@pytest.mark.parametrize("planted_as", ["directory", "symlink"])
def test_a_runtime_dir_taken_by_another_user_falls_back_and_admission_stays_on(
        tmp_path, env, other_user, example, planted_as):
    run = tmp_path / "run"
    theirs = plant(tmp_path / "theirs", other_user, directory=True, mode=0o777)
    if planted_as == "directory":
        plant(run / "shim", other_user, directory=True, mode=0o700)
    else:
        (run / "shim").symlink_to(theirs)
        os.chown(run / "shim", *other_user, follow_symlinks=False)
    result = assert_admitted_under_shim_build(example, env, run)
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "runtime directory" in line]
    assert len(warnings) == 1 and "using %s" % (run / "shim.1") in warnings[0], warnings
    assert stat.S_IMODE((run / "shim.1").stat().st_mode) == 0o700
    assert list(theirs.iterdir()) == []                              # nothing of ours in their directory


def test_our_own_runtime_dir_left_open_is_closed_and_used(tmp_path, env, example):
    run = tmp_path / "run"
    (run / "shim").mkdir(mode=0o777)
    (run / "shim").chmod(0o777)
    result = run_shim(["build", "-C", example, "--budget", "1GiB"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "runtime directory" not in result.stdout + result.stderr
    assert stat.S_IMODE((run / "shim").stat().st_mode) == 0o700
    assert [p.name for p in (run / "shim").iterdir() if p.name.startswith("pool-")]


UNSHARE = shutil.which("unshare")


def run_with_private_tmp(args, env, tmp_path, setup: str = ""):
    """`shim ARGS` in a mount namespace of its own with an empty tmpfs on /tmp (after the
    shell commands *setup* ran there): the real /tmp/shim-$UID of other runs stays out.
    What must stay visible and lies under /tmp (the test's *tmp_path*; the checkout and its
    venv when CI cloned it there) is bound back into it from the /tmp it hides."""
    if not UNSHARE:
        pytest.skip("unshare (util-linux) is not installed")
    keep = [str(tmp_path), sys.prefix, str(REPO)]
    binds = "".join("mkdir -p '%s' && mount --no-canonicalize --bind '/proc/self/fd/3/%s' '%s' || exit 99\n"
                    % (p, os.path.relpath(p, "/tmp"), p)
                    for p in sorted(set(os.path.realpath(k) for k in keep))
                    if not os.path.relpath(p, "/tmp").startswith(".."))
    script = "exec 3</tmp && mount -t tmpfs tmpfs /tmp || exit 99\n%sexec 3<&-\n%s\nexec \"$@\"" % (binds, setup)
    result = subprocess.run([UNSHARE, "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                             str(SHIM)] + [str(a) for a in args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=120)
    if result.returncode == 99:
        pytest.skip("cannot mount a private /tmp here: %s" % result.stderr.strip())
    return result


def test_a_symlink_planted_as_the_pool_file_is_never_followed_and_the_step_still_runs(tmp_path, env):
    # Root, with a runtime directory whose pool file is a link to a file of root's: shim must
    # not write into it. The step runs, unadmitted, with one warning.
    precious = tmp_path / "precious"
    precious.write_text("do not touch\n")
    run = tmp_path / "run" / "shim"
    run.mkdir(mode=0o700)
    for unit in (16, 23, 24):                       # whichever slot size this machine's limit gives
        (run / ("pool-%d" % unit)).symlink_to(precious)
    env["SHIM_MEMORY_BUDGET"] = "1GiB"
    result = run_shim(["sh", "-c", "echo ran"], env=env)
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr
    assert precious.read_text() == "do not touch\n"
    assert result.stderr.count("no memory admission") == 1, result.stderr


def test_a_runtime_dir_that_is_a_link_to_another_users_directory_gets_nothing_written_in_it(
        tmp_path, env, other_user):
    theirs = plant(tmp_path / "theirs", other_user, directory=True, mode=0o700)
    (tmp_path / "run" / "shim").symlink_to(theirs)
    env["SHIM_MEMORY_BUDGET"] = "1GiB"
    result = run_shim(["true"], env=env)
    assert result.returncode == 0, result.stderr
    assert list(theirs.iterdir()) == []
    assert any(p.name.startswith("pool-") for p in (tmp_path / "run" / "shim.1").iterdir())


def test_every_tmp_name_taken_by_another_user_falls_back_to_home_and_admission_stays_on(
        tmp_path, env, other_user, example):
    # Another user pre-creates /tmp/shim-UID and .1 to .16 (17 mkdirs); XDG_RUNTIME_DIR unset.
    del env["XDG_RUNTIME_DIR"]
    uid = os.getuid()
    setup = "for n in '' .1 .2 .3 .4 .5 .6 .7 .8 .9 .10 .11 .12 .13 .14 .15 .16; do " \
            "mkdir -m 700 /tmp/shim-%d$n && chown %d:%d /tmp/shim-%d$n; done" % (uid, other_user[0], other_user[1], uid)
    result = run_with_private_tmp(["build", "-C", example, "--budget", "1GiB"], env, tmp_path, setup)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no memory admission" not in result.stdout + result.stderr
    home_run = Path(env["HOME"]) / ".cache" / "shim" / "run"
    assert [p.name for p in home_run.iterdir() if p.name.startswith("pool-")]
    steps = [r for r in build_records(example) if r["rec"] in ("start", "step")]
    assert steps and all(r.get("res") for r in steps)


def test_a_missing_xdg_runtime_dir_falls_back_instead_of_ending_admission(tmp_path, env, example):
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "no-such-dir")
    result = run_with_private_tmp(["build", "-C", example, "--budget", "1GiB"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no memory admission" not in result.stdout + result.stderr
    steps = [r for r in build_records(example) if r["rec"] in ("start", "step")]
    assert steps and all(r.get("res") for r in steps)


def test_builds_with_different_budgets_and_jobs_share_one_pool(tmp_path, env, example):
    # One budget per user and machine, whatever the geometry: a second build with another -j
    # (so another budget for its steps) reserves in the same pool file as the first.
    import shutil as sh
    other = tmp_path / "other"
    sh.copytree(example, other)
    for directory, jobs in ((example, "-j8"), (other, "-j4")):
        result = run_shim(["build", "-C", directory, jobs], env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    env["SHIM_MEMORY_BUDGET"] = "700MiB"
    assert run_shim(["true"], cwd=example, env=env).returncode == 0
    pools = [p.name for p in (tmp_path / "run" / "shim").iterdir() if p.name.startswith("pool-")]
    assert len(pools) == 1, pools
