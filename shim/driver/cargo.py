"""`shim cargo`'s driver: cargo run as a CI build, every rustc through shim, under a memory budget.

What it adds around the user's cargo (`shim cargo build --release`, `shim cargo test`...),
with shim/driver/build.py's pieces:
- RUSTC_WRAPPER = the fast launcher in the build dir's .shim/bin: cargo runs each rustc as
  `shim /path/to/rustc ARGS`, and shim records it, learns its peak and admits it;
- the build dir is the workspace of cargo's target dir (`cargo metadata`, then
  rustc.build_dir_of_target: the rule each rustc step applies to its own --out-dir, so
  this command and a plain RUSTC_WRAPPER=shim build share one ledger and `shim report`
  in the workspace shows either);
- a memory budget, passed to the steps as SHIM_MEMORY_BUDGET, with the estimates index
  rebuilt from the ledger;
- without -j/--jobs (or CARGO_BUILD_JOBS): 2 jobs per core for cargo (1 where the budget
  holds no more than a rustc per core at its prior: build.worth_in_flight) and
  SHIM_CPU_SLOTS=<cores> for the steps, so a rustc waiting for memory holds a job, not a core;
- the sampled peak of cargo's process tree, a `build` record and the closing summary.

The process runner is a parameter, as for `shim build`: the unit tests drive it without cargo.
"""

import json
import os
import shutil
import subprocess

from shim import exit_status, host, rustc
from shim.driver import build
from shim.exit_status import ShimError

# cargo itself (measured: 30 MiB at its peak on regex + serde_json) and this process
CARGO_FOOTPRINT = 56 << 20


def cargo_binary(env: dict) -> str:
    found = shutil.which("cargo", path=env.get("PATH"))
    if not found:
        raise ShimError("cargo not found on PATH (install Rust, e.g. with rustup)", exit_status.NOT_FOUND)
    return found


def target_dir(cargo: str, env: dict):
    """The target dir cargo would build in here (`cargo metadata`), or None when cargo
    cannot tell (no workspace here: then cargo itself says what is wrong)."""
    try:
        done = subprocess.run([cargo, "metadata", "--format-version", "1", "--no-deps"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
        return json.loads(done.stdout)["target_directory"] if done.returncode == 0 else None
    except (OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError):
        return None


def given_jobs(cargo_args, env: dict):
    """The jobs the user chose (text): -j N, -jN, --jobs N, --jobs=N before `--`, else
    CARGO_BUILD_JOBS; None when they chose none."""
    for i, arg in enumerate(cargo_args):
        if arg == "--":
            break
        if arg in ("-j", "--jobs"):
            return cargo_args[i + 1] if i + 1 < len(cargo_args) else ""
        if arg.startswith("--jobs="):
            return arg[7:]
        if arg.startswith("-j"):
            return arg[2:]
    return env.get("CARGO_BUILD_JOBS") or None


def run(cargo: str, cargo_args: list, env: dict, budget_option=None, spawn=None, where=None) -> int:
    """Run cargo with *cargo_args* in the current directory; returns its exit status (or dies
    of its signal). *spawn* runs cargo (host.spawn_program's signature) and *where* stands
    for `cargo metadata`'s target dir: the tests' seams."""
    spawn = spawn or host.spawn_program
    tdir = where if where is not None else target_dir(cargo, env)
    plan = build.Plan(rustc.build_dir_of_target(os.path.abspath(tdir)) if tdir else os.getcwd(), env, "cargo")
    launcher = build.start(plan)
    wrapper = env.get("RUSTC_WRAPPER", "")
    if wrapper and os.path.basename(wrapper) != "shim":
        build.warn("RUSTC_WRAPPER=%s is replaced by shim; to keep it, set tool.rustc.launcher = [%r] in "
                   "toolchain.toml" % (wrapper, os.path.basename(wrapper)))
    env["RUSTC_WRAPPER"] = launcher
    build.choose_budget(plan, budget_option)
    jobs, cores = None, build.cores()
    chosen = given_jobs(cargo_args, env)
    if chosen is None:
        jobs = build.worth_in_flight(plan, "compile", "rustc", CARGO_FOOTPRINT)
        env["CARGO_BUILD_JOBS"] = str(jobs)
        env["SHIM_CPU_SLOTS"] = str(cores)
    return build.run_tool(plan, cargo, cargo_args, spawn, jobs, chosen, CARGO_FOOTPRINT, 'jobs')
