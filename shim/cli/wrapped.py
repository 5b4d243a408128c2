"""What `shim cargo` and `shim go` share: their options and how they start their driver."""

import os

import click

from shim import budget as grammar
from shim import exit_status
from shim.exit_status import ShimError


def command(tool: str, where: str, steps: str):
    """The click command of `shim TOOL`: -C DIR (*where*), --mode (for its *steps*), --budget,
    and the tool's own arguments, passed through unchanged."""
    def decorate(function):
        for option in reversed((
                click.option("-C", "directory", default=None, metavar="DIR", help="Run %s in DIR (%s)." % (tool, where)),
                click.option("--mode", type=click.Choice(["exec", "spawn", "auto"]),
                             help="Run every %s in this mode (sets SHIM_MODE for the build)." % steps),
                click.option("--budget", metavar="SIZE", help="Memory budget: " + grammar.DESCRIPTION + "."),
                click.argument("%s_args" % tool, nargs=-1, type=click.UNPROCESSED))):
            function = option(function)
        return click.command(context_settings={"ignore_unknown_options": True,
                                               "allow_interspersed_args": False})(function)
    return decorate


def run(driver, binary, directory, mode, budget, args) -> int:
    """*driver*.run with the tool *binary*(env) found, in *directory* (where the tool finds
    its workspace or module)."""
    if directory is not None:
        try:
            os.chdir(directory)
        except OSError as e:
            raise ShimError("-C %s: %s" % (directory, e.strerror or e), exit_status.USAGE) from None
    env = dict(os.environ)
    if mode:
        env["SHIM_MODE"] = mode
    return driver.run(binary(env), list(args), env, budget)
