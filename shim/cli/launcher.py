"""`shim launcher DIR`: write fast direct launchers (and masquerades) for PATH."""

import click

from shim.cli import outfile


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--as", "names", multiple=True, metavar="NAME",
              help="Also write a masquerade launcher NAME (gcc, g++, ar...). Repeatable.")
def launcher(directory, names):
    """Write the fast direct launcher `shim` (and masquerades) into DIRECTORY.

    The installed `shim` starts through /bin/sh (~0.8 ms per step); these start
    Python directly. Put DIRECTORY first on PATH.
    """
    from shim.generators import launcher as launchers
    for name in ("shim",) + tuple(names):
        try:
            click.echo(launchers.write(directory, name))
        except OSError as e:
            raise outfile.cannot("%s/%s" % (directory, name), e, "the launcher", "create") from None
