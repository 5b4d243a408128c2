"""`shim go`'s driver: go run as a CI build, every go tool through shim, under a memory budget.

What it adds around the user's go command (`shim go build ./...`, `shim go test`...), with
shim/driver/build.py's pieces:
- `-toolexec` = the fast launcher in the build dir's .shim/bin: go runs each tool as
  `shim /usr/lib/go/pkg/tool/linux_amd64/compile ARGS`, and shim records it, learns its
  peak and admits it (shim/golang.py, toolchains/go.toml);
- the build dir is the directory go runs in; SHIM_GO_DIR tells every step so (asm, vet and
  cgo's first run start in the package's source directory), so this command and a plain
  `go build -toolexec=shim` here share one ledger;
- a memory budget, passed to the steps as SHIM_MEMORY_BUDGET;
- without -p (or GOFLAGS=-p=N): 2 per core for go and SHIM_CPU_SLOTS=<cores> for the
  steps, so a compile waiting for memory holds a go slot, not a core;
- the sampled peak of go's process tree, a `build` record and the closing summary.

-toolexec is put in GOFLAGS, not on the command line: `go run`, `go test` and `go build`
all take it there, and the user's own arguments stay as given. go's cache keys do not
change: a toolexec program is not part of them, and the tools' `-V=full` answers pass
through shim untouched.
"""

import os
import shutil

from shim import exit_status, host
from shim.driver import build
from shim.exit_status import ShimError

# go itself and this process (measured: go build of godoc peaked at 45 MiB outside its tools)
GO_FOOTPRINT = 64 << 20
# The go subcommands that build, and so take -p and -toolexec.
BUILDING = frozenset(("build", "install", "test", "run", "vet", "list", "get"))


def go_binary(env: dict) -> str:
    found = shutil.which("go", path=env.get("PATH"))
    if not found:
        raise ShimError("go not found on PATH (install Go, e.g. Debian's golang-go)", exit_status.NOT_FOUND)
    return found


def given_jobs(go_args, env: dict):
    """The -p the user chose (text): -p N or -p=N before the packages, else in GOFLAGS;
    None when they chose none."""
    for i, arg in enumerate(go_args):
        if arg == "--":
            break
        if arg in ("-p", "--p"):
            return go_args[i + 1] if i + 1 < len(go_args) else ""
        if arg.startswith(("-p=", "--p=")):
            return arg.partition("=")[2]
    for word in env.get("GOFLAGS", "").split():
        if word.startswith(("-p=", "--p=")):
            return word.partition("=")[2]
    return None


def given_toolexec(go_args, env: dict):
    """A -toolexec the user gave (on the command line or in GOFLAGS), or None."""
    for arg in list(go_args) + env.get("GOFLAGS", "").split():
        if arg.startswith(("-toolexec", "--toolexec")):
            return arg
    return None


def run(go: str, go_args: list, env: dict, budget_option=None, spawn=None) -> int:
    """Run go with *go_args* in the current directory; returns its exit status (or dies of
    its signal). *spawn* runs go (host.spawn_program's signature): the tests' seam."""
    spawn = spawn or host.spawn_program
    theirs = given_toolexec(go_args, env)
    if theirs:
        raise ShimError("%s: shim go runs every go tool through shim itself; to put another program in "
                        "front of a tool, set tool.go-compile.launcher (toolchain.toml)" % theirs, exit_status.USAGE)
    plan = build.Plan(os.getcwd(), env, "go")
    launcher = build.start(plan)
    env["SHIM_GO_DIR"] = plan.build_dir
    building = bool(go_args) and go_args[0] in BUILDING
    flags = env.get("GOFLAGS", "").split()
    if building:
        flags.append("-toolexec=" + launcher)
    build.choose_budget(plan, budget_option)
    jobs, cores = None, build.cores()
    chosen = given_jobs(go_args, env)
    if chosen is None and building:
        jobs = 2 * cores
        flags.append("-p=%d" % jobs)
        env["SHIM_CPU_SLOTS"] = str(cores)
    env["GOFLAGS"] = " ".join(flags)
    return build.run_tool(plan, go, go_args, spawn, jobs, chosen, GO_FOOTPRINT, 'packages')
