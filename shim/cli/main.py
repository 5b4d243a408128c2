"""The click group: `shim --help`, `shim help [COMMAND]`, and each subcommand loaded lazily.

Only reached through shim/entry.py for a reserved word or an option, so click's import cost
(~15 ms) is never paid by a build step. The subcommands are shim/commands.py's table: the
group lists them from it (without importing them) and imports a command's module only
when that command runs. Errors become one `shim: error:` line and an exit status.
"""

import importlib
import os

import click

from shim import __version__, exit_status
from shim.commands import COMMANDS
from shim.exit_status import ShimError


def main(argv) -> int:
    """Run the CLI with *argv* (without the program name); return the exit status."""
    try:
        result = shim.main(args=list(argv), prog_name="shim", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":    # `shim config` alone: its help is the answer
            click.echo(e.ctx.get_help())
            return 0
        command = e.ctx.command_path if e.ctx else "shim"
        return exit_status.report(ShimError("%s (see '%s --help')" % (_lower(e.format_message()), command),
                                            exit_status.USAGE))
    except click.Abort:
        return exit_status.INTERRUPTED
    except click.ClickException as e:
        return exit_status.report(ShimError(e.format_message(), e.exit_code))
    except ShimError as e:
        return exit_status.report(e)
    except OSError:
        try:
            os.getcwd()           # relative paths (-C ., the ledger) resolve against it
        except OSError as e:
            return exit_status.report(ShimError("cannot get the current directory: %s" % (e.strerror or e),
                                                exit_status.OS_ERROR))
        raise


def _lower(message: str) -> str:
    message = message.strip().replace("\n", " ").rstrip(".")
    return message[:1].lower() + message[1:]


EPILOG = """\b
Build steps (the hot path, no subcommand):
  shim TOOL ARGS...       run tool TOOL of toolchain.toml (cc, cxx, ar, link...)
                          or program TOOL (launcher form: shim gcc -c a.c)
  shim run TOOL ARGS...   the same, when TOOL is also a subcommand's name
  gcc ARGS...             through a symlink named after the tool (masquerade)

\b
Exit statuses: the tool's own, or the tool's signal re-raised; shim's own errors:
""" + "\n".join("  %3d  %s" % (code, doc) for code, _name, doc in exit_status.TABLE)

_TABLE = {name: (module, attribute, summary) for name, module, attribute, summary in COMMANDS}


def load(name: str) -> click.Command:
    """The click command *name* of shim/commands.py's table (its module imported now)."""
    module, attribute, _summary = _TABLE[name]
    return getattr(importlib.import_module(module), attribute)


class _Group(click.Group):
    """The subcommands of shim/commands.py, imported only when one is run."""

    def list_commands(self, ctx):
        return [name for name, _module, _attribute, _summary in COMMANDS]

    def get_command(self, ctx, name):
        return load(name) if name in _TABLE else None

    def format_commands(self, ctx, formatter):
        # From the table: listing the commands must not import every command's module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, _module, _attribute, summary in COMMANDS])


@click.group(cls=_Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="shim", message="%(prog)s %(version)s")
def shim():
    """A toolchain wrapper for Ninja and Bazel builds.

    Put `shim cc`, `shim ar`, `shim link` where a build file calls the compiler,
    archiver or linker; shim reads toolchain.toml and execs (or spawns) the real tool.
    """


@click.command("help")
@click.argument("command", required=False, metavar="[COMMAND]")
@click.pass_context
def help_command(ctx, command):
    """Show the help of shim, or of COMMAND."""
    top = ctx.find_root()
    if not command:
        click.echo(top.get_help())
        return 0
    if command not in _TABLE:
        raise ShimError("no such command %r (commands: %s)" % (command, ", ".join(_TABLE)), exit_status.USAGE)
    sub = load(command)
    with click.Context(sub, info_name=command, parent=top) as sub_ctx:
        click.echo(sub.get_help(sub_ctx))
    return 0
