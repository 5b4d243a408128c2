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


class _Group(click.Group):
    """Subcommands whose modules are heavy are imported only when asked for."""

    LAZY = {"wrap": ("shim.wrap", "wrap_command"), "bazel": ("shim.bazel", "bazel_command")}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.LAZY))

    def get_command(self, ctx, name):
        if name in self.LAZY:
            import importlib
            module, attr = self.LAZY[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=_Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--budget", metavar="SIZE",
              help="Memory budget: auto (default: cgroup or RAM limit minus a reserve), off, "
                   "a size (6GiB) or a percentage of the limit (75%).")
@click.option("--wrap", "rewrap", is_flag=True,
              help="Bring a generated build.ninja up to date, then `shim wrap` it, then build "
                   "(survives CMake regenerating it).")
@click.argument("ninja_args", nargs=-1, type=click.UNPROCESSED)
def build(directory, mode, budget, rewrap, ninja_args):
    """Run ninja (from the PyPI package) in DIR, admitting steps into a memory budget.

    NINJA_ARGS go to ninja unchanged (targets, -j N, -k N, -v, -n ...). Without -j,
    ninja gets a jobserver with 2 tokens per core and shim admits the steps by CPU
    and memory. Ends with a summary; `shim report` tells the rest.
    """
    from shim import build as build_mod
    if not os.path.isfile(os.path.join(directory, "build.ninja")) and not _has_f(ninja_args):
        raise ShimError("no build.ninja in %s (use -C DIR)" % os.path.abspath(directory), exit_status.USAGE)
    env = dict(os.environ)
    if mode:
        env["SHIM_MODE"] = mode
    return build_mod.run(directory, ninja_binary(), list(ninja_args), env, budget,
                         echo=lambda line: click.echo(line, err=line.startswith("shim: warning")),
                         rewrap_first=rewrap)


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
    chosen = [layer for layer in layers if layer.role == "preset"]
    click.echo("# preset: %s (%s)" % (" on ".join(os.path.basename(p.path)[:-5] for p in reversed(chosen)),
                                      reason))
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
        shown = "" if default is None or default in ([], {}) else " = %s" % _show_default(default)
        click.echo("%s  (%s%s)" % (path, keys.type_text(path, typ), shown))
        click.echo("    %s" % doc)
    click.echo("\nEnvironment:")
    for name, doc in keys.ENV:
        click.echo("%s\n    %s" % (name, doc))


def _show_default(value) -> str:
    return '"%s"' % value if isinstance(value, str) else str(value).lower()


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
@click.option("--budget", metavar="SIZE", help="Explain this budget instead of the default one.")
def doctor(budget):
    """Show what shim detects here: interpreter, launcher, toolchain, memory budget, slots."""
    from shim import admission, budget as budget_mod, launcher, rundir, size, toolchain
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
    try:
        config = toolchain.load(os.getcwd(), env)
    except ShimError:
        config = {"memory": {"budget": None, "unit": admission.DEFAULT_UNIT}}
    request = budget or env.get("SHIM_MEMORY_BUDGET") or config["memory"]["budget"] or "auto"
    try:
        value, lines = budget_mod.resolve(request)
    except ValueError as e:
        raise ShimError("memory budget %r: %s" % (request, e), exit_status.USAGE) from None
    click.echo("memory budget (%s, from %s):" % (request, "--budget" if budget else "SHIM_MEMORY_BUDGET"
                                                   if env.get("SHIM_MEMORY_BUDGET") else "memory.budget"
                                                   if config["memory"]["budget"] else "the default"))
    for line in lines:
        click.echo("  " + line)
    try:
        run_dir = rundir.ensure(env)
    except OSError as e:
        click.echo("slot directory: unusable: %s" % e)
        return 0
    click.echo("slot directory: %s" % run_dir)
    if value:
        unit, total = admission.geometry(value, config["memory"]["unit"])
        path = admission.pool_path(run_dir, unit, total)
        held = admission.usage(path, total)
        click.echo("  pool %s: %d slots of %s, %d held now" % (path, total, size.format(unit), len(held)))
        for slot, owner in held[:20]:
            click.echo("    slot %d: pid %s" % (slot, owner))
    return 0


# --- report, compdb -----------------------------------------------------------------------


def _ledger_for(directory: str):
    """(ledger dir, build dir) for a build in *directory*, as its steps resolve it."""
    from shim import ledger, toolchain
    build_dir = os.path.abspath(directory)
    env = dict(os.environ)
    try:
        config = toolchain.load(build_dir, env)
    except ShimError:
        config = {}
    ledger_dir = ledger.directory(build_dir, env, config, require_build_dir=False)
    if ledger_dir is None:
        raise ShimError("the ledger is off here (SHIM_LEDGER or ledger.enabled = false)", exit_status.USAGE)
    return ledger_dir, build_dir


def _load_steps(directory: str, which: str):
    from shim import records
    ledger_dir, build_dir = _ledger_for(directory)
    build, steps, skipped = records.load_counted(ledger_dir, build_dir, which)
    if not steps:
        raise ShimError("no steps recorded in %s (run a build through shim first, or use -C DIR; "
                        "steps record only in a build dir: build.ninja, a Makefile or .shim/ in it)"
                        % ledger_dir, exit_status.USAGE)
    return ledger_dir, build_dir, build, steps, skipped


@shim.command()
@click.option("-C", "directory", default=".", metavar="DIR", type=click.Path(file_okay=False),
              help="The build directory (where the steps ran).")
@click.option("--all", "every", is_flag=True, help="Every recorded build, not only the last one.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (see --schema).")
@click.option("--brief", is_flag=True, help="Summary and top lists only, not every step.")
@click.option("--trace", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write a Chrome trace (Perfetto, chrome://tracing) to FILE.")
@click.option("--html", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML timeline to FILE.")
@click.option("--suggest", is_flag=True, help="Suggest a memory budget and pool depths (with --ram).")
@click.option("--ram", metavar="SIZE", help="RAM of the machine to plan for (default: this one's).")
@click.option("--schema", is_flag=True, help="Print the JSON schema of --json and exit.")
def report(directory, every, as_json, brief, trace, html, suggest, ram, schema):
    """Summarise the last build: steps, wall, CPU, memory, failures."""
    import json
    from shim import report as report_mod
    from shim import size
    if schema:
        click.echo(json.dumps(report_mod.SCHEMA, indent=2))
        return 0
    ledger_dir, build_dir, build, steps, skipped = _load_steps(directory, "all" if every else "last")
    data = report_mod.summary(steps, build, build_dir, ledger_dir, skipped)
    if suggest or ram:
        try:
            ram_bytes = size.parse(ram) if ram else _machine_ram()
        except ValueError as e:
            raise ShimError("--ram %s: %s" % (ram, e), exit_status.USAGE) from None
        data["suggestion"] = report_mod.suggest(steps, ram_bytes)
    if trace:
        from shim import trace as trace_mod
        trace_mod.write(trace, steps, build)
    if html:
        from shim import html as html_mod
        html_mod.write(html, steps, build)
    if as_json:
        click.echo(json.dumps(data, indent=1))
    else:
        click.echo(report_mod.render(data, list_steps=not brief), nl=False)
        if "suggestion" in data:
            click.echo()
            click.echo(report_mod.render_suggestion(data["suggestion"]), nl=False)
        for what, path in (("trace", trace), ("HTML timeline", html)):
            if path:
                click.echo("wrote %s: %s" % (what, path))
    return 0


def _machine_ram() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise ShimError("cannot read MemTotal from /proc/meminfo; pass --ram SIZE", exit_status.USAGE)


@shim.command()
@click.option("-C", "directory", default=".", metavar="DIR", type=click.Path(file_okay=False),
              help="The build directory (where the steps ran).")
@click.option("-o", "output", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write to FILE (e.g. compile_commands.json) instead of standard output.")
def compdb(directory, output):
    """Write compile_commands.json for the compile steps shim ran (all builds, newest wins)."""
    import json
    from shim import compdb as compdb_mod
    _ledger_dir, build_dir, _build, steps, _skipped = _load_steps(directory, "all")
    text = json.dumps(compdb_mod.entries(steps, build_dir), indent=2) + "\n"
    if output:
        from shim import outfile
        outfile.write(output, text, what="the compilation database")
        click.echo("wrote %d entries to %s" % (text.count('"directory"'), output), err=True)
    else:
        click.echo(text, nl=False)
    return 0
