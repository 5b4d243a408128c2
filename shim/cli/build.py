"""`shim build`: the command in front of shim/driver/ninja.py (which ninja, the budget, the
jobserver, the summary: shim/driver/build.py)."""

import os

import click

from shim import budget as grammar
from shim import exit_status
from shim.exit_status import ShimError


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-C", "directory", default=None, metavar="DIR",
              help="Build in DIR (where build.ninja is), as ninja -C.")
@click.option("--mode", type=click.Choice(["exec", "spawn", "auto"]),
              help="Run every step in this mode (sets SHIM_MODE for the build).")
@click.option("--budget", metavar="SIZE",
              help="Memory budget: " + grammar.DESCRIPTION + ".")
@click.option("--wrap", "rewrap", is_flag=True,
              help="Bring a generated build.ninja up to date, then `shim wrap` it, then build "
                   "(survives CMake regenerating it).")
@click.argument("ninja_args", nargs=-1, type=click.UNPROCESSED)
def build(directory, mode, budget, rewrap, ninja_args):
    """Run ninja in DIR, admitting its steps into a memory budget.

    The ninja is the one CMake or Meson configured for DIR, else the PyPI package's (1.13+).
    NINJA_ARGS go to ninja unchanged (targets, -j N, -k N, -v, -n ...). Without -j, a ninja
    1.13+ gets a jobserver with 2 tokens per core and shim admits the steps by CPU and
    memory. Ends with a summary; `shim report` tells the rest.
    """
    from shim.driver import ninja
    where = directory or "."
    if directory is not None and not os.path.isdir(directory):
        raise ShimError("-C %s: no such directory" % directory, exit_status.USAGE)
    if not os.path.isfile(os.path.join(where, "build.ninja")) and not _has_f(ninja_args):
        raise ShimError("no build.ninja in %s%s" % (os.path.abspath(where), "" if directory else " (use -C DIR)"),
                        exit_status.USAGE)
    env = dict(os.environ)
    if mode:
        env["SHIM_MODE"] = mode
    wrap = None
    if rewrap:
        from shim.cli.wrap import ensure_wrapped as wrap
    return ninja.run(where, ninja.choose(os.path.abspath(where)), list(ninja_args), env, budget, wrap=wrap)


def _has_f(args) -> bool:
    return any(a == "-f" or a.startswith("-f") and not a.startswith("-f=") for a in args)
