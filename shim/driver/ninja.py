"""`shim build`'s ninja: which ninja runs a build dir, and the run under a memory budget.

One ninja per build directory. CMake and Meson record the ninja they configured
(CMakeCache.txt's CMAKE_MAKE_PROGRAM; the `-t clean` command Meson writes into
build.ninja), and `cmake --build` runs that one later. Ninja 1.13 writes `.ninja_log`
v7 (another command hash) and starts over on an older log; ninja 1.11 reads a v7 log
but finds every command changed. So two ninjas in turn in one build dir rebuild
everything each time. shim therefore runs the generator's ninja; the PyPI package's
ninja (1.13+) only for a hand-written build.ninja, when the generator's is gone, or
when `.ninja_log` is a v7 log an older generator ninja could not read. A jobserver
client needs ninja >= 1.13: under an older generator ninja shim serves no jobserver
and says so in one line.
"""

import os
import re
import shutil
import subprocess
import time
from typing import NamedTuple, Optional

from shim import exit_status, host
from shim.driver import build
from shim.exit_status import ShimError

JOBSERVER_CLIENT = (1, 13)     # ninja learned --jobserver-auth=fifo: then
LOG_V7 = (1, 13)               # and writes `# ninja log v7` from then on (rapidhash)

# `shim` run by name in a command: CMake's launcher `shim`, Meson's CC="shim gcc", `shim wrap`.
_BY_NAME = re.compile(r"^[ \t]+command = (?:.*[\s;&|(])?shim[ \t]", re.M)
_CLEAN = re.compile(r"^build meson-internal__clean: .*\n(?:[ \t]+\S.*\n)*?[ \t]+COMMAND = (.+?) -t clean[ \t]*$",
                    re.M)


class Ninja(NamedTuple):
    path: str
    version: tuple        # (1, 11, 1); () when it would not say
    whose: str            # "the PyPI package's", "CMake's", "Meson's"

    def named(self) -> str:
        return "%s ninja %s (%s)" % (self.whose, ".".join(map(str, self.version)) or "?", self.path)


def pypi_binary() -> str:
    """The ninja of the PyPI `ninja` package (1.13+), not whatever is first on PATH."""
    try:
        import ninja
    except ImportError:
        raise ShimError("the Python package 'ninja' is not installed (pip install ninja)",
                        exit_status.NOT_FOUND) from None
    path = os.path.join(ninja.BIN_DIR, "ninja.exe" if host.PLATFORM == "windows" else "ninja")
    if not os.path.isfile(path):
        raise ShimError("the ninja package has no binary at %s" % path, exit_status.NOT_FOUND)
    return path


def version_of(path: str) -> tuple:
    """`ninja --version` as numbers ("1.13.2.git.kitware..." -> (1, 13, 2)); () if it fails."""
    try:
        out = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    match = re.match(r"\s*(\d+(?:\.\d+)*)", out)
    return tuple(int(n) for n in match.group(1).split(".")) if match else ()


def configured(build_dir: str):
    """(the ninja the generator configured for *build_dir*, the generator), or (None, None)."""
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt"), errors="replace") as f:
            for line in f:
                if line.startswith("CMAKE_MAKE_PROGRAM:"):
                    return line.split("=", 1)[1].strip() or None, "CMake's"
    except OSError:
        pass
    if os.path.isdir(os.path.join(build_dir, "meson-private")):
        # Meson records nothing else: `meson compile` looks ninja up on PATH every time.
        try:
            with open(os.path.join(build_dir, "build.ninja"), errors="replace") as f:
                found = _CLEAN.search(f.read())
        except OSError:
            found = None
        if found:
            return found.group(1).strip().strip("'\""), "Meson's"
    return None, None


def log_version(build_dir: str) -> Optional[int]:
    """N of `.ninja_log`'s `# ninja log vN` line; None without a readable log."""
    try:
        with open(os.path.join(build_dir, ".ninja_log"), "rb") as f:
            first = f.readline(64)
    except OSError:
        return None
    match = re.match(rb"# ninja log v(\d+)", first)
    return int(match.group(1)) if match else None


def choose(build_dir: str, say=build.note) -> Ninja:
    """The ninja for *build_dir* (the module docstring); *say* gets the one line that
    explains a choice other than the generator's ninja, or what a log change costs."""
    path, whose = configured(build_dir)
    pypi = pypi_binary()
    if path and (not os.access(path, os.X_OK) or os.path.isdir(path)):
        say("%s ninja %s is not there any more: building with the PyPI package's" % (whose, path))
        path = None
    if not path or _same(path, pypi):
        return Ninja(pypi, version_of(pypi), "the PyPI package's")
    chosen = Ninja(path, version_of(path), whose)
    log = log_version(build_dir)
    if log is None or not chosen.version:
        return chosen
    if log >= 7 and chosen.version < LOG_V7:
        other = Ninja(pypi, version_of(pypi), "the PyPI package's")
        say("building with %s: .ninja_log is a v7 log (ninja >= 1.13), which %s would take as every "
            "command changed; remove .ninja_log (one full build) to build with it" % (other.named(), chosen.named()))
        return other
    if log < 7 and chosen.version >= LOG_V7:
        say(".ninja_log is a v%d log (ninja < 1.13): %s starts it over, so everything is built once"
            % (log, chosen.named()))
    return chosen


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def runs_shim_by_name(build_dir: str) -> bool:
    """Whether a rule of *build_dir*'s manifest (or CMake's rules.ninja) runs `shim` found on PATH."""
    for name in ("build.ninja", os.path.join("CMakeFiles", "rules.ninja")):
        try:
            with open(os.path.join(build_dir, name), errors="replace") as f:
                if _BY_NAME.search(f.read()):
                    return True
        except OSError:
            pass
    return False


def _jobs(ninja_args, cores: int) -> int:
    """The -j N of *ninja_args*, else ninja's default (cores + 2)."""
    for i, a in enumerate(ninja_args):
        if a.startswith("-j"):
            value = a[2:] or (ninja_args[i + 1] if i + 1 < len(ninja_args) else "")
            if value.isdigit() and int(value) > 0:
                return int(value)
    return cores + 2


def cap_jobs(ninja_args, most: int) -> list:
    """*ninja_args* with a -j above *most* brought down to it (and said in one line): past
    what the budget admits, more edges only add shims that wait, each holding memory, and
    enough of them get the build itself OOM-killed (-j200 in 512 MiB did)."""
    jobs = _jobs(ninja_args, 0)
    if not any(a.startswith("-j") for a in ninja_args) or jobs <= most:
        return list(ninja_args)
    out, skip = [], False
    for i, a in enumerate(ninja_args):
        if skip:
            skip = False
            continue
        if a.startswith("-j"):
            skip = a == "-j"
            out.append("-j%d" % most)
        else:
            out.append(a)
    build.note("-j%d is more than the memory budget can admit at once: running ninja -j%d "
               "(each edge in flight waits in a shim that holds memory)" % (jobs, most))
    return out


def gives_jobs(ninja_args) -> bool:
    """Whether the user chose ninja's parallelism (-j N) or runs a tool/dry run."""
    return any(a.startswith("-j") or a.startswith("-t") or a == "-n" for a in ninja_args)


def rewrap(directory: str, ninja: str, env: dict, wrap, spawn=host.spawn_program) -> int:
    """`--wrap`: let the generator bring build.ninja up to date first (CMake's RERUN_CMAKE
    edge regenerates it, unwrapped), then *wrap* it; 0 or ninja's failing status.

    Ninja reloads a manifest it has just regenerated and goes on with it, so wrapping
    must happen between the two: building the manifest alone, then the targets, does it.
    Wrapping is idempotent, so an unchanged manifest costs a parse and nothing else.
    """
    finished = spawn(ninja, [ninja, "-C", directory, "build.ninja"], dict(env, MAKEFLAGS=""),
                     die_with_parent=True)
    if finished.code != 0:
        return finished.code if finished.code is not None else 128 + finished.signal
    wrap(os.path.join(directory, "build.ninja"))
    return 0


def run(directory: str, ninja, ninja_args: list, env: dict, budget_option=None,
        wrap=None, spawn=host.spawn_program) -> int:
    """Build in *directory* with *ninja* (a Ninja, or a path: a ninja >= 1.13); returns
    ninja's exit status (or dies of its signal). *wrap* (a function of build.ninja's path)
    asks for `--wrap` first. *spawn* runs ninja (host.spawn_program's signature): tests
    pass a stand-in."""
    if isinstance(ninja, str):
        ninja = Ninja(ninja, (), "the PyPI package's")
    plan = build.Plan(os.path.abspath(directory), env)
    unfound = not shutil.which("shim", path=env.get("PATH", "")) and runs_shim_by_name(plan.build_dir)
    launcher = build.start(plan)
    if unfound:
        build.note("the build runs `shim` by name, which is not on PATH: shim build puts %s first, but a later "
                   "`ninja` or `cmake --build` fails with `shim: not found` unless %s is on PATH"
                   % (os.path.dirname(launcher), os.path.dirname(build.installed_launcher()) or "shim's bin"))
    if wrap:
        status = rewrap(directory, ninja.path, env, wrap, spawn)
        if status:
            return status
    build.choose_budget(plan, budget_option)
    if plan.budget:
        ninja_args = cap_jobs(ninja_args, build.max_in_flight(plan.budget))
    if not gives_jobs(ninja_args):
        if ninja.version and ninja.version < JOBSERVER_CLIENT:
            build.note("%s has no jobserver client (ninja >= 1.13): it runs its own -j%d and a step "
                       "waiting for memory holds one of them" % (ninja.named(), _jobs(ninja_args, build.cores())))
        else:
            build.serve_jobs(plan)
    in_flight = plan.jobserver.tokens + 1 if plan.jobserver else _jobs(ninja_args, build.cores())
    plan.steps_budget = build.for_steps(plan.budget, in_flight) if plan.budget else None
    env["SHIM_MEMORY_BUDGET"] = str(plan.steps_budget) if plan.budget else "off"
    t0 = time.time()
    finished, peak = build.run_sampled(plan, ninja.path, [ninja.path, "-C", directory] + list(ninja_args), spawn)
    jobs = plan.jobserver.tokens + 1 if plan.jobserver else None
    build.record_build(plan, ["-C", directory] + list(ninja_args), t0, time.time(), finished, peak, jobs)
    return build.finish(finished)
