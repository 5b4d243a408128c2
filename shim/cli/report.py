"""`shim report` and `shim compdb`: what the ledger of a build dir tells, for people and tools."""

import os

import click

from shim import exit_status
from shim.cli import outfile
from shim.exit_status import ShimError


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
    from shim.reports import compact
    compact.maybe(ledger_dir, config)       # the bound holds under plain ninja too
    return ledger_dir, build_dir


def _load_steps(directory: str, which: str):
    from shim.reports import records
    ledger_dir, build_dir = _ledger_for(directory)
    build, steps, skipped = records.load_counted(ledger_dir, build_dir, which)
    if not steps:
        raise ShimError("no steps recorded in %s (run a build through shim first, or use -C DIR; "
                        "steps record only in a build dir: build.ninja, a Makefile or .shim/ in it)"
                        % ledger_dir, exit_status.USAGE)
    return ledger_dir, build_dir, build, steps, skipped


@click.command()
@click.option("-C", "directory", default=".", metavar="DIR", type=click.Path(file_okay=False),
              help="The build directory (where the steps ran).")
@click.option("--all", "every", is_flag=True, help="Every recorded build, not only the last one.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (see --schema).")
@click.option("--brief", is_flag=True, help="Summary and top lists only, not every step.")
@click.option("--trace", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write a Chrome trace (Perfetto, chrome://tracing) to FILE.")
@click.option("--html", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML timeline to FILE (both builds' with --compare).")
@click.option("--compare", "compare_ref", is_flag=False, flag_value="", default=None, metavar="[REF]",
              help="Compare the last build with REF: a build id of this ledger, a directory holding a "
                   "ledger (another build dir, a restored CI cache), or alone the build before the last.")
@click.option("--fail-over", type=click.FloatRange(min=0), metavar="PCT",
              help="Exit 1 when wall time or the aggregate peak grew by more than PCT percent against "
                   "the compared build (a CI gate; implies --compare).")
@click.option("--markdown", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
              help="GitHub-flavoured Markdown of the summary (and the comparison) to FILE, or alone "
                   "to standard output instead of the report: >> $GITHUB_STEP_SUMMARY.")
@click.option("--suggest", is_flag=True, help="Suggest a memory budget and pool depths (with --ram).")
@click.option("--ram", metavar="SIZE", help="RAM of the machine to plan for (default: this one's).")
@click.option("--schema", is_flag=True, help="Print the JSON schema of --json and exit.")
def report(directory, every, as_json, brief, trace, html, compare_ref, fail_over, markdown, suggest, ram,
           schema):
    """Summarise the last build: steps, wall, CPU, memory, failures."""
    import json
    from shim import size
    from shim.reports import compare
    from shim.reports import report as report_mod
    if schema:
        click.echo(json.dumps(compare.report_schema(), indent=2))
        return 0
    if fail_over is not None and compare_ref is None:
        compare_ref = ""
    if every and compare_ref is not None:
        raise ShimError("--all and --compare do not go together: a comparison is of one build with another",
                        exit_status.USAGE)
    ledger_dir, build_dir, build, steps, skipped = _load_steps(directory, "all" if every else "last")
    from shim.reports import records
    usage = records.usage_of(ledger_dir, steps, None if every else build)
    data = report_mod.summary(steps, build, build_dir, ledger_dir, skipped, usage)
    data["estimate_misses"] = compare.estimate_misses(steps)
    earlier = None
    if compare_ref is not None:
        earlier = _earlier(compare_ref, ledger_dir, build_dir)
        data["comparison"] = compare.compare(earlier, (build, steps))
    if suggest or ram:
        try:
            ram_bytes = size.parse(ram) if ram else _machine_ram()
        except ValueError as e:
            raise ShimError("--ram %s: %s" % (ram, e), exit_status.USAGE) from None
        data["suggestion"] = report_mod.suggest(steps, ram_bytes)
    _write_files(data, steps, build, earlier, trace, html, markdown, usage)
    if as_json:
        click.echo(json.dumps(data, indent=1))
    elif markdown != "-":
        _echo_report(data, brief, trace, html, markdown)
    if fail_over is None:
        return 0
    status, message = compare.gate(data["comparison"], fail_over)
    click.echo("shim: %s" % message, err=True)
    return status


def _write_files(data, steps, build, earlier, trace, html, markdown, usage=()) -> None:
    from shim.reports import compare, markdown as markdown_mod
    if trace:
        from shim.reports import trace as trace_mod
        outfile.write(trace, trace_mod.render(steps, build, usage), what="the trace")
    if html:
        from shim.reports import html as html_mod
        rows = compare.total_rows(data["comparison"]) if earlier else ()
        page = html_mod.render(steps, build, earlier=earlier, compared=rows, usage=usage)
        outfile.write(html, html_mod.encode(page), what="the HTML timeline")
    if markdown:
        text = markdown_mod.document(data, data.get("comparison"), data["estimate_misses"])
        if markdown == "-":
            click.echo(text, nl=False)
        else:
            outfile.write(markdown, text, what="the Markdown summary")


def _echo_report(data, brief, trace, html, markdown) -> None:
    from shim.reports import compare, fields
    from shim.reports import report as report_mod

    def echo(text: str = "") -> None:      # file names from the ledger: no raw ESC to the terminal
        click.echo(fields.printable(text, keep="\n"))

    echo(report_mod.render(data, list_steps=not brief).rstrip("\n"))
    echo()
    echo("\n".join(compare.render_estimates(data["estimate_misses"])))
    if "comparison" in data:
        echo()
        echo("\n".join(compare.render(data["comparison"])))
    if "suggestion" in data:
        echo()
        echo(report_mod.render_suggestion(data["suggestion"]).rstrip("\n"))
    for what, path in (("trace", trace), ("HTML timeline", html), ("Markdown summary", markdown)):
        if path:
            echo("wrote %s: %s" % (what, path))


def _earlier(ref: str, ledger_dir: str, build_dir: str):
    """(build record, steps) to compare the last build with: see --compare."""
    from shim import ledger
    from shim.reports import records
    groups, _ = records.load_builds(ledger_dir, build_dir, last=0 if ref else 2)
    if not ref:
        if len(groups) < 2:
            raise ShimError("--compare: %s holds only one build: nothing to compare with (--compare DIR "
                            "compares with another build dir or a restored ledger)" % ledger_dir, exit_status.USAGE)
        return groups[-2]
    named = [g for g in groups if g[0] and g[0].get("id") == ref]
    if named:
        return named[-1]
    for d in (ref, os.path.join(ref, ledger.DIRNAME)):
        if os.path.isfile(os.path.join(d, ledger.FILENAME)):
            theirs, _ = records.load_builds(d, ledger.build_dir(os.path.abspath(d)), last=1)
            if not theirs:
                raise ShimError("--compare %s: no build recorded in %s" % (ref, d), exit_status.USAGE)
            return theirs[-1]
    raise ShimError("--compare %s: neither a build id of %s nor a directory with a ledger (%s)"
                    % (ref, ledger_dir, ledger.FILENAME), exit_status.USAGE)


def _machine_ram() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise ShimError("cannot read MemTotal from /proc/meminfo; pass --ram SIZE", exit_status.USAGE)


@click.command()
@click.option("-C", "directory", default=".", metavar="DIR", type=click.Path(file_okay=False),
              help="The build directory (where the steps ran).")
@click.option("-o", "output", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write to FILE (e.g. compile_commands.json) instead of standard output.")
def compdb(directory, output):
    """Write compile_commands.json for the compile steps shim ran (all builds, newest wins)."""
    import json
    from shim.reports import compdb as compdb_mod
    _ledger_dir, build_dir, _build, steps, _skipped = _load_steps(directory, "all")
    text = json.dumps(compdb_mod.entries(steps, build_dir), indent=2) + "\n"
    if output:
        outfile.write(output, text, what="the compilation database")
        click.echo("wrote %d entries to %s" % (text.count('"directory"'), output), err=True)
    else:
        click.echo(text, nl=False)
    return 0
