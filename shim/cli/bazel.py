"""`shim bazel init`: put shim into a Bazel workspace as its cc_toolchain's compiler and archiver.

What gets written is shim/generators/bazel.py (it returns the lines printed here).
"""

import click

from shim import budget as grammar

from shim.cli import outfile
from shim.generators import bazel as bazel_toolchain


@click.group()
def bazel():
    """Use shim as the compiler and archiver of a Bazel cc_toolchain."""


@bazel.command("init")
@click.argument("directory", default=".", metavar="[DIR]", type=click.Path(file_okay=False))
@click.option("--package", default=bazel_toolchain.PACKAGE, show_default=True, metavar="NAME",
              help="Workspace package to write the toolchain into.")
@click.option("--toolchain", "toolchain_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="toolchain.toml for the actions (default: DIR/toolchain.toml if there is one, "
                   "else NAME/toolchain.toml, written if missing).")
@click.option("--budget", metavar="SIZE",
              help="A memory budget for the actions other than the default (auto): "
                   "adds --action_env=SHIM_MEMORY_BUDGET to the config. " + grammar.DESCRIPTION + ".")
@click.option("--bazelrc", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the build:shim config here instead of DIR/.bazelrc "
                   "(e.g. a git-ignored user.bazelrc that .bazelrc try-imports).")
@click.option("--remote", is_flag=True,
              help="For remote execution: the actions carry shim and need only a Python 3 on the "
                   "workers; no path of this checkout in any action (checkouts share the remote cache).")
@click.option("--worker-python", metavar="PATH",
              help="With --remote: the workers' Python 3 [default: %s]." % bazel_toolchain.REMOTE_PYTHON)
@click.option("--worker-ledger", metavar="DIR",
              help="With --remote: a directory on the workers for shim's ledger and learned "
                   "estimates (--action_env=SHIM_LEDGER); default: none.")
def init(directory, package, toolchain_file, budget, bazelrc, remote, worker_python, worker_ledger):
    """Write a shim cc_toolchain and a `build:shim` config into Bazel workspace DIR.

    Then `bazel build --config=shim //...` compiles, archives and links through
    shim. Safe to re-run (after moving shim, or changing compilers).
    """
    try:
        lines = bazel_toolchain.write_all(directory, package, toolchain_file, budget, bazelrc,
                                          remote, worker_python, worker_ledger)
    except OSError as e:
        raise outfile.cannot(e.filename or directory, e) from None
    for line in lines:
        click.echo(line)
    return 0
