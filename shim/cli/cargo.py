"""`shim cargo`: the command in front of shim/driver/cargo.py."""

import os

import click

from shim import budget as grammar
from shim import exit_status
from shim.exit_status import ShimError


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-C", "directory", default=None, metavar="DIR", help="Run cargo in DIR (its workspace or package).")
@click.option("--mode", type=click.Choice(["exec", "spawn", "auto"]),
              help="Run every rustc in this mode (sets SHIM_MODE for the build).")
@click.option("--budget", metavar="SIZE",
              help="Memory budget: " + grammar.DESCRIPTION + ".")
@click.argument("cargo_args", nargs=-1, type=click.UNPROCESSED)
def cargo(directory, mode, budget, cargo_args):
    """Run cargo with every rustc through shim, under a memory budget.

    CARGO_ARGS go to cargo unchanged (build --release, test, check -p foo ...). Without
    -j, cargo gets 2 jobs per core and shim admits its rustc steps by CPU and memory.
    Ends with a summary; `shim report` in the workspace tells the rest.
    """
    from shim.driver import cargo as driver
    if directory is not None:
        try:
            os.chdir(directory)           # cargo finds its workspace and .cargo/config.toml from here
        except OSError as e:
            raise ShimError("-C %s: %s" % (directory, e.strerror or e), exit_status.USAGE) from None
    env = dict(os.environ)
    if mode:
        env["SHIM_MODE"] = mode
    return driver.run(driver.cargo_binary(env), list(cargo_args), env, budget)
