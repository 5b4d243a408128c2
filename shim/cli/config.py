"""`shim config show|check|keys`: the merged toolchain, validation, the key reference."""

import os

import click


@click.group()
def config():
    """Show, check and document toolchain.toml."""


def _discovered():
    from shim import toolchain
    return toolchain.discover(os.getcwd(), dict(os.environ))


@config.command("show")
@click.option("--origin", is_flag=True, help="Follow each value with the file:line it came from.")
def config_show(origin):
    """Print the merged toolchain (all layers, this platform) as TOML."""
    from shim.config import layers as layers_mod
    found = _discovered()
    layers, reason = layers_mod.load_layers([(role, path) for role, path, _ in found], os.environ.get("PATH", ""))
    merged, origins = layers_mod.merge(layers)
    chosen = [layer for layer in layers if layer.role == "preset"]
    click.echo("# preset: %s (%s)" % (" on ".join(os.path.basename(p.path)[:-5] for p in reversed(chosen)),
                                      reason))
    click.echo("# layers, lowest first:")
    for layer in layers:
        click.echo("#   %-8s %s" % (layer.role, layer.path))
    click.echo("# platform: %s" % layers_mod.this_platform())
    click.echo(layers_mod.dump_toml(merged, origins if origin else None), nl=False)


@config.command("check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
def config_check(files):
    """Validate FILES (default: the toolchain.toml files in effect here)."""
    from shim.config import layers
    if files:
        targets = [("file", f) for f in files]
    else:
        targets = [(role, path) for role, path, _ in _discovered()]
        if not targets:
            click.echo("no toolchain.toml in effect here: only the built-in preset")
    for role, path in targets:
        layers.read_layer(role, path)
        click.echo("ok: %s" % path)
    return 0


@config.command("keys")
@click.option("--markdown", is_flag=True, help="As the Markdown tables README.md carries.")
def config_keys(markdown):
    """List every toolchain.toml key: type, default, meaning."""
    from shim.config import keys
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
