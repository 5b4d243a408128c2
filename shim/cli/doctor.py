"""`shim doctor`: what shim detects here, for a bug report or a puzzled CI log."""

import os
import sys

import click

from shim import budget as grammar

from shim import __version__, host
from shim.exit_status import ShimError


@click.command()
@click.option("--budget", metavar="SIZE", help="Explain this budget instead of the one in force: "
              + grammar.DESCRIPTION + ".")
def doctor(budget):
    """Show what shim detects here: interpreter, launcher, toolchain, memory budget, slots."""
    from shim import admission, rundir, size, toolchain
    from shim import budget as detect
    from shim.driver import ninja
    from shim.generators import launcher
    env = dict(os.environ)
    click.echo("shim %s, Python %s at %s" % (__version__, sys.version.split()[0], sys.executable))
    click.echo("hot-path bundle: %s" % ("yes" if launcher.bundled() else
                                        "no (editable/source install: steps import modules one by one)"))
    click.echo("exec supported: %s (%s)" % ("yes" if host.EXEC_SUPPORTED else "no, every step spawns",
                                            host.PLATFORM))
    for role, path, _ in toolchain.discover(os.getcwd(), env):
        click.echo("toolchain %-8s %s" % (role + ":", path))
    click.echo("toolchain cache: %s" % (toolchain.cache_dir(env) or "none (no HOME): parsing every step"))
    click.echo("ninja: %s" % ninja.choose(os.getcwd(), say=lambda line: None).named())
    try:
        config = toolchain.load(os.getcwd(), env)
    except ShimError:
        config = {"memory": {"budget": None, "unit": admission.DEFAULT_UNIT}}
    value = admission.budget(env, config, budget, default="auto")     # a bad request: one line, exit 2
    text, origin = admission.budget_request(env, config, budget, default="auto")
    click.echo("memory budget (%s):" % origin)
    for line in detect.explain(text)[1]:
        click.echo("  " + line)
    try:
        run_dir = rundir.ensure(env)
    except OSError as e:
        click.echo("slot directory: unusable: %s" % e)
        return 0
    click.echo("slot directory: %s" % run_dir)
    if value:
        found = grammar.limit(env)
        unit, total = admission.geometry(value, config["memory"]["unit"], found[0] if found else None)
        path = admission.pool_path(run_dir, unit)
        held = admission.usage(path, total)
        click.echo("  pool %s: %d slots of %s, %d held now" % (path, total, size.format(unit), len(held)))
        for slot, owner in held[:20]:
            click.echo("    slot %d: pid %s" % (slot, owner))
    return 0
