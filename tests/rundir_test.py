"""The per-user runtime directory (shim/rundir.py): memory slots, CPU slots and the jobserver
fifo live there, so another user must not be able to take it, and admission must not turn
off when they try."""

import json
import os
import stat

import pytest

from conftest import plant, run_shim

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
