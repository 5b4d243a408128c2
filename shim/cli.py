"""The management commands (`shim build`, `shim config`, ...), built with click.

Only reached through shim/entry.py for a reserved word or an option, so click's
import cost (~15 ms) is never paid by a build step.
"""

import os
import sys

import click

from shim import __version__, exit_status, host
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


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="shim", message="%(prog)s %(version)s")
def shim():
    """A toolchain wrapper for Ninja and Bazel builds.

    Put `shim cc`, `shim ar`, `shim link` where a build file calls the compiler,
    archiver or linker; shim reads toolchain.toml and execs (or spawns) the real tool.
    """


# --- build ---------------------------------------------------------------------------


def ninja_binary() -> str:
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


@shim.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-C", "directory", default=".", metavar="DIR", type=click.Path(file_okay=False),
              help="Build in DIR (where build.ninja is), as ninja -C.")
@click.option("--mode", type=click.Choice(["exec", "spawn", "auto"]),
              help="Run every step in this mode (sets SHIM_MODE for the build).")
@click.argument("ninja_args", nargs=-1, type=click.UNPROCESSED)
def build(directory, mode, ninja_args):
    """Run ninja (from the PyPI package) in DIR with shim's fast launcher first on PATH.

    NINJA_ARGS go to ninja unchanged (targets, -j N, -k N, -v, -n ...).
    """
    from shim import launcher
    if not os.path.isfile(os.path.join(directory, "build.ninja")) and not _has_f(ninja_args):
        raise ShimError("no build.ninja in %s (use -C DIR)" % os.path.abspath(directory), exit_status.USAGE)
    env = dict(os.environ)
    try:
        bindir = os.path.dirname(launcher.write(os.path.join(os.path.abspath(directory), ".shim", "bin")))
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    except OSError as e:   # a read-only build dir: the installed launcher still works
        click.echo("shim: warning: cannot write the fast launcher (%s); using the installed one"
                   % (e.strerror or e), err=True)
        env["PATH"] = os.path.dirname(os.path.abspath(sys.argv[0])) + os.pathsep + env.get("PATH", "")
    if mode:
        env["SHIM_MODE"] = mode
    ninja = ninja_binary()
    argv = [ninja, "-C", directory] + list(ninja_args)
    finished = host.spawn_program(ninja, argv, env)
    if finished.signal is not None:
        host.die_of_signal(finished.signal)
    return finished.code


def _has_f(args) -> bool:
    return any(a == "-f" or a.startswith("-f") and not a.startswith("-f=") for a in args)


# --- config ----------------------------------------------------------------------------


@shim.group()
def config():
    """Show, check and document toolchain.toml."""


def _discovered():
    from shim import toolchain
    return toolchain.discover(os.getcwd(), dict(os.environ))


@config.command("show")
@click.option("--origin", is_flag=True, help="Follow each value with the file:line it came from.")
def config_show(origin):
    """Print the merged toolchain (all layers, this platform) as TOML."""
    from shim import config as config_mod
    found = _discovered()
    layers, reason = config_mod.load_layers([(role, path) for role, path, _ in found],
                                            os.environ.get("PATH", ""))
    merged, origins = config_mod.merge(layers)
    click.echo("# preset: %s (%s)" % (os.path.basename(layers[0].path)[:-5], reason))
    click.echo("# layers, lowest first:")
    for layer in layers:
        click.echo("#   %-8s %s" % (layer.role, layer.path))
    click.echo("# platform: %s-%s" % (host.PLATFORM, host.arch()))
    click.echo(config_mod.dump_toml(merged, origins if origin else None), nl=False)


@config.command("check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
def config_check(files):
    """Validate FILES (default: the toolchain.toml files in effect here)."""
    from shim import config as config_mod
    if files:
        targets = [("file", f) for f in files]
    else:
        targets = [(role, path) for role, path, _ in _discovered()]
        if not targets:
            click.echo("no toolchain.toml in effect here: only the built-in preset")
    for role, path in targets:
        config_mod.read_layer(role, path)
        click.echo("ok: %s" % path)
    return 0


@config.command("keys")
@click.option("--markdown", is_flag=True, help="As the Markdown tables README.md carries.")
def config_keys(markdown):
    """List every toolchain.toml key: type, default, meaning."""
    from shim import keys
    if markdown:
        click.echo(keys.markdown(), nl=False)
        return
    for path, typ, default, doc in keys.KEYS:
        shown = "" if default in (None, [], {}) else " = %s" % _show_default(default)
        click.echo("%s  (%s%s)" % (path, keys.TYPES[typ], shown))
        click.echo("    %s" % doc)
    click.echo("\nEnvironment:")
    for name, doc in keys.ENV:
        click.echo("%s\n    %s" % (name, doc))


def _show_default(value) -> str:
    return '"%s"' % value if isinstance(value, str) else str(value)


# --- launcher, doctor ---------------------------------------------------------------------


@shim.command("launcher")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--as", "names", multiple=True, metavar="NAME",
              help="Also write a masquerade launcher NAME (gcc, g++, ar...). Repeatable.")
def launcher_cmd(directory, names):
    """Write the fast direct launcher `shim` (and masquerades) into DIRECTORY.

    The installed `shim` starts through /bin/sh (~0.8 ms per step); these start
    Python directly. Put DIRECTORY first on PATH.
    """
    from shim import launcher
    for name in ("shim",) + tuple(names):
        click.echo(launcher.write(directory, name))


@shim.command()
def doctor():
    """Show what shim detects here: interpreter, launcher, toolchain, modes."""
    from shim import launcher, toolchain
    env = dict(os.environ)
    click.echo("shim %s, Python %s at %s" % (__version__, sys.version.split()[0], sys.executable))
    click.echo("hot-path bundle: %s" % ("yes" if launcher.bundled() else
                                        "no (editable/source install: steps import modules one by one)"))
    click.echo("exec supported: %s (%s)" % ("yes" if host.EXEC_SUPPORTED else "no, every step spawns",
                                            host.PLATFORM))
    for role, path, _ in toolchain.discover(os.getcwd(), env):
        click.echo("toolchain %-8s %s" % (role + ":", path))
    click.echo("toolchain cache: %s" % (toolchain.cache_dir(env) or "none (no HOME): parsing every step"))
    click.echo("ninja: %s" % ninja_binary())
