"""`shim wrap`: wrap, check or undo a generated build.ninja in place, and say what changed.

What a rule's plan is and how the files change is shim/generators/wrap.py; this module
prints and writes.
"""

import os
from typing import Optional, Sequence

import click

from shim import exit_status, host
from shim.cli import outfile
from shim.exit_status import ShimError
from shim.generators import ninjafile
from shim.generators import wrap as wrapping


def run(manifest_path: str = "build.ninja", output: Optional[str] = None, check: bool = False,
        undo: bool = False, programs: Sequence[str] = (), rules: Sequence[str] = (),
        quiet: bool = False) -> int:
    """`shim wrap`: wrap (or undo, or check) the manifest and its includes; the exit status.

    Prints one line per rule changed (or that would change), one per rule that stays
    outside shim (a compiler, archiver or linker it runs not through shim: behind an
    unknown wrapper, or from inside a variable's value) and a summary (*quiet*: only the
    summary, and with *check* nothing at all). With *check* nothing is written and the
    status is 1 when something would change or some rule stays outside. With *output*
    only the top file may change and it is written there; rules in included files make
    that a ShimError (USAGE), since their file would have to change in place.
    """
    if check and output:
        raise ShimError("--check writes nothing: -o makes no sense with it", exit_status.USAGE)
    if undo and (programs or rules):
        raise ShimError("--undo removes what the '%s' lines name: --program and --rule do not "
                        "apply" % wrapping.MARKER, exit_status.USAGE)
    if os.path.isdir(manifest_path):
        manifest_path = os.path.join(manifest_path, "build.ninja")
    manifest = ninjafile.parse(manifest_path)
    if undo:
        verb, done = "unwrap", "unwrapped"
        changes, warnings = wrapping.undo_changes(manifest)
        for warning in warnings:
            click.echo("shim: warning: %s" % warning, err=True)
        idle, aside = "nothing to undo: no file starts with a '%s' line" % wrapping.MARKER, ""
        outside = []
    else:
        verb, done = "wrap", "wrapped"
        plans = wrapping.plan(manifest, programs, rules)
        changes = wrapping.wrap_changes(manifest, plans)
        outside = [p for p in plans if p.outside]
        if not (check and quiet):
            for p in outside:
                for part in p.outside:
                    tool, why = wrapping.outside_reason(part, programs)
                    click.echo("rule %s in %s runs %s outside shim: %s"
                               % (p.rule.name, p.rule.file.path, host.program_stem(tool), why))
        already = sum(1 for p in plans if p.wrapped and not p.wrap)
        aside = _count(already, "rule already wrapped", "rules already wrapped") if already else ""
        idle = ("nothing to wrap (%s)" % aside if already
                else "nothing to wrap: no compile, link or archive rule found")
    if output and any(c.file is not manifest.top for c in changes):
        included = next(c.file.path for c in changes if c.file is not manifest.top)
        raise ShimError("-o writes only %s, but rules to %s live in %s (included): run without -o "
                        "to rewrite the files in place" % (manifest.top.path, verb, included),
                        exit_status.USAGE)
    count = 0
    for change in changes:
        for name, programs_run in change.rules:
            count += 1
            if not quiet:
                click.echo("%s rule %s (%s) in %s" % ("would " + verb if check else done, name,
                                                      ", ".join(programs_run), change.file.path))
    where = "%s in %s" % (_count(count, "rule", "rules"), _count(len(changes), "file", "files"))
    if check:
        if not quiet:
            click.echo("shim wrap: %s%s" % ("%s would be %s" % (where, done) if changes else idle,
                                            _outside(outside)))
        return 1 if changes or outside else 0
    if output:
        top = next((c.text for c in changes if c.file is manifest.top), manifest.top.text)
        _write(output, top, output if os.path.exists(output) else manifest.top.real_path)
    else:
        for change in changes:
            _write(change.file.real_path, change.text, change.file.real_path)
    if not changes:
        click.echo("shim wrap: %s%s" % (idle, _outside(outside)))
    else:
        click.echo("shim wrap: %s %s%s%s" % (done, where, " (%s)" % aside if aside else "", _outside(outside)))
    if output:
        click.echo("wrote %s" % output)
    return 0


def _write(path: str, text: str, mode_from: str) -> None:
    try:
        wrapping.write_atomically(path, text, mode_from)
    except OSError as e:
        raise outfile.cannot(path, e) from None


def ensure_wrapped(manifest_path: str) -> None:
    """Wrap *manifest_path* unless it already is (`shim build --wrap`): quiet when it is
    (rules that stay outside shim are named when it wraps)."""
    if os.path.isdir(manifest_path):
        manifest_path = os.path.join(manifest_path, "build.ninja")
    manifest = ninjafile.parse(manifest_path)
    if wrapping.wrap_changes(manifest, wrapping.plan(manifest)):
        run(manifest_path)


def _outside(plans) -> str:
    if not plans:
        return ""
    return "; %s outside shim" % _count(len(plans), "rule runs a compiler, archiver or linker",
                                        "rules run a compiler, archiver or linker")


def _count(n: int, one: str, many: str) -> str:
    return "%d %s" % (n, one if n == 1 else many)


@click.command("wrap")
@click.argument("manifest", default="build.ninja", metavar="[BUILD.NINJA]",
                type=click.Path(exists=False))
@click.option("-o", "output", metavar="OUT", type=click.Path(dir_okay=False),
              help="Write the wrapped top file to OUT instead of in place (then every rule to "
                   "wrap must be in the top file; use it with ninja -f OUT from the same directory).")
@click.option("--check", is_flag=True,
              help="Change nothing; exit 1 (and name the rules) if wrapping would change something "
                   "or a rule runs a compiler, archiver or linker outside shim.")
@click.option("--undo", is_flag=True,
              help="Remove exactly what shim wrap inserted, as the '# shim-wrap:' lines record it.")
@click.option("--program", "programs", multiple=True, metavar="PATTERN",
              help="Also wrap programs matching PATTERN (wildcards; basename, or whole word if it "
                   "has a /), e.g. --program 'nvcc' --program 'ranlib'. Repeatable.")
@click.option("--rule", "rules", multiple=True, metavar="NAME",
              help="Wrap rule NAME whatever its program (the first part that is not a shell "
                   "builtin). Repeatable.")
def wrap(manifest, output, check, undo, programs, rules):
    """Put shim in front of the compilers and linkers of a generated build.ninja.

    BUILD.NINJA (default: build.ninja; a directory means its build.ninja) and the files it
    reaches through include and subninja are rewritten in place: `shim ` goes before the
    program of each compile, link and archive rule (/usr/bin/c++ ... becomes
    shim /usr/bin/c++ ...; a launcher chain: ccache c++ ... becomes shim ccache c++ ...) and
    a comment line on top of each changed file records where, for --undo. No other byte
    changes; wrapping again changes nothing. Rules that still run a compiler, archiver or
    linker outside shim are named. Re-run it after the generator rewrites the file (CMake
    does when CMakeLists.txt changes).
    """
    return run(manifest, output=output, check=check, undo=undo, programs=programs, rules=rules)
