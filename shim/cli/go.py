"""`shim go`: the command in front of shim/driver/go.py."""

import os

import click

from shim import budget as grammar
from shim import exit_status
from shim.exit_status import ShimError


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-C", "directory", default=None, metavar="DIR", help="Run go in DIR (its module or GOPATH package).")
@click.option("--mode", type=click.Choice(["exec", "spawn", "auto"]),
              help="Run every go tool in this mode (sets SHIM_MODE for the build).")
@click.option("--budget", metavar="SIZE",
              help="Memory budget: " + grammar.DESCRIPTION + ".")
@click.argument("go_args", nargs=-1, type=click.UNPROCESSED)
def go(directory, mode, budget, go_args):
    """Run go with every compile and link through shim, under a memory budget.

    GO_ARGS go to go unchanged (build ./..., test -race, install ./cmd/x ...). Without -p,
    go gets 2 packages in flight per core and shim admits its compile and link steps by CPU
    and memory. Ends with a summary; `shim report` in this directory tells the rest.
    """
    from shim.driver import go as driver
    if directory is not None:
        try:
            os.chdir(directory)           # go finds its module (go.mod) from here
        except OSError as e:
            raise ShimError("-C %s: %s" % (directory, e.strerror or e), exit_status.USAGE) from None
    env = dict(os.environ)
    if mode:
        env["SHIM_MODE"] = mode
    return driver.run(driver.go_binary(env), list(go_args), env, budget)
