"""`shim report` and `shim compdb` on real builds of examples/ninja."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from conftest import one_error_line, run_shim, write_tool, write_toml
from shim import size
from shim.reports import fields, records
from shim.reports import report

NINJA = Path(sys.executable).parent / "ninja"
MIB = 1 << 20
KINDS = {"compile": 6, "archive": 1, "link": 1}



def seconds(text: str) -> float:
    """A duration as the report prints it (`850ms`, `12.3s`), in seconds."""
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text[:-1])


def ninja_log(example):
    entries = {}
    for line in (example / "build" / ".ninja_log").read_text().splitlines()[1:]:
        start, end, _mtime, output, _hash = line.split("\t")
        entries[output] = (int(end) - int(start)) / 1000.0
    return entries


@pytest.fixture
def built(example, env):
    """examples/ninja built by `shim build` without a memory budget (so compiles exec and
    the link spawns, as its toolchain says, instead of auto mode measuring everything)."""
    result = run_shim(["build", "-C", example, "--budget", "off"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return example


def test_report_shows_every_step_with_durations_from_ninja_log_and_the_links_peak_rss(built, env):
    out = run_shim(["report", "-C", built], env=env).stdout
    logged = ninja_log(built)
    listed = out.split("Steps, in start order:\n")[1].split("\n\n")[0].splitlines()[1:]
    assert len(listed) == len(logged) == 8
    for line in listed:
        duration, rss, kind, mode, exit_code, output = line.split()
        assert exit_code == "0"
        # Measured by shim (spawn) or ninja's less the waits for a core (exec: the JSON test checks
        # how much less): inside ninja's either way.
        slack = 0.002 if duration.endswith("ms") else 0.05    # what rounding to ms or to 0.1 s hides
        assert seconds(duration) <= logged[output] + slack
        assert (rss != "?") == (mode == "spawn") and (mode == "spawn") == (kind == "link")
    assert "8 steps" in out and "failures: none" in out


def test_report_json_validates_against_its_schema_field_by_field(built, env):
    result = run_shim(["report", "-C", built, "--json"], env=env)
    data = json.loads(result.stdout)
    from shim.reports import compare
    schema = json.loads(run_shim(["report", "--schema"], env=env).stdout)
    assert schema == compare.report_schema() and schema["properties"]["steps"]["items"] == report.STEP_SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema)

    logged = ninja_log(built)
    t = data["totals"]
    assert t["steps"] == len(data["steps"]) == len(logged)
    assert t["by_kind"] == KINDS
    assert t["by_mode"] == {"exec": 7, "spawn": 1}
    assert t["by_timing"] == {"ninja_log": 7, "measured": 1}
    assert t["failures"] == 0 and data["failures"] == []
    assert data["build"]["exit"] == 0 and data["build"]["argv"] == ["-C", str(built)]
    assert t["wall"] == pytest.approx(data["build"]["t1"] - data["build"]["t0"])
    for step in data["steps"]:
        assert step["build"] == data["build"]["id"]
        assert step["out"][0] in logged
        if step["mode"] == "exec":
            assert step["dur"] == pytest.approx(logged[step["out"][0]] - (step["wait"] or 0) - step["cpu_wait"])
            assert step["rss"] is None and step["timing"] == "ninja_log"
        else:
            assert step["rss"] > 1 << 20 and step["ut"] is not None and step["timing"] == "measured"
    assert t["max_rss"] == max(s["rss"] for s in data["steps"] if s["rss"])
    assert [s["id"] for s in data["top_memory"]] == [s["id"] for s in data["steps"] if s["rss"]]


def test_report_shows_the_last_build_and_all_with_all(built, env):
    (built / "src" / "main.c").touch()
    assert run_shim(["build", "-C", built, "--budget", "off"], env=env).returncode == 0
    last = json.loads(run_shim(["report", "-C", built, "--json"], env=env).stdout)
    assert last["totals"]["by_kind"] == {"compile": 1, "link": 1}
    every = json.loads(run_shim(["report", "-C", built, "--json", "--all"], env=env).stdout)
    assert every["totals"]["steps"] == 10


def test_report_lists_failed_steps_with_their_status(example, env):
    (example / "lib" / "hist.c").write_text("#error broken on purpose\n")
    result = run_shim(["build", "-C", example, "--mode", "spawn", "-k", "0"], env=env)
    assert result.returncode == 1
    data = json.loads(run_shim(["report", "-C", example, "--json"], env=env).stdout)
    assert [s["in"] for s in data["failures"]] == ["lib/hist.c"]
    assert data["failures"][0]["exit"] == 1 and data["build"]["exit"] == 1
    assert "failures: build/obj/hist.o (1)" in run_shim(["report", "-C", example], env=env).stdout


def test_suggest_turns_measured_peaks_into_a_budget_and_pool_depths(example, env):
    assert run_shim(["build", "-C", example, "--mode", "spawn"], env=env).returncode == 0
    data = json.loads(run_shim(["report", "-C", example, "--json", "--suggest", "--ram", "4GiB"], env=env).stdout)
    s = data["suggestion"]
    assert s["budget"] == (4 << 30) - (512 << 20) and s["unmeasured_steps"] == 0
    for kind, pool in s["pools"].items():
        peak = max(x["rss"] for x in data["steps"] if x["kind"] == kind)
        assert pool["max_rss"] == peak
        assert pool["depth"] == max(1, min(len(__import__("os").sched_getaffinity(0)), s["budget"] // peak))
    text = run_shim(["report", "-C", example, "--suggest", "--ram", "4GiB"], env=env).stdout
    assert "shim build --budget 3.5GiB" in text and "Why:" in text


def test_report_writes_a_trace_and_an_html_page(built, env, tmp_path):
    trace, page = tmp_path / "t.json", tmp_path / "r.html"
    result = run_shim(["report", "-C", built, "--trace", trace, "--html", page, "--brief"], env=env)
    assert result.returncode == 0, result.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    assert len([e for e in events if e["ph"] == "X"]) == 8
    assert page.read_text().count('<rect class="step ') == 8


def test_report_without_a_ledger_says_so(tmp_path, env):
    one_error_line(run_shim(["report", "-C", tmp_path], env=env), 2, "no steps recorded in %s/.shim" % tmp_path)


def test_a_ledger_dir_from_toolchain_toml_is_used_by_steps_and_report(example, env):
    write_toml(example / "toolchain.toml", (example / "toolchain.toml").read_text() + '\n[ledger]\ndir = "out/ledger"\n')
    assert run_shim(["build", "-C", example], env=env).returncode == 0
    assert (example / "out" / "ledger" / "ledger-v1.jsonl").exists() and not (example / ".shim" / "ledger-v1.jsonl").exists()
    assert json.loads(run_shim(["report", "-C", example, "--json"], env=env).stdout)["totals"]["steps"] == 8


def test_compdb_matches_ninjas_own_for_the_same_build(built, env):
    ours = json.loads(run_shim(["compdb", "-C", built], env=env).stdout)
    theirs = json.loads(subprocess.run([str(NINJA), "-C", str(built), "-t", "compdb"], env=env,
                                       stdout=subprocess.PIPE, text=True, check=True).stdout)
    theirs = [e for e in theirs if e["command"].startswith("shim cc ")]
    assert len(ours) == len(theirs) == KINDS["compile"]
    by_file = {e["file"]: e for e in theirs}
    for entry in ours:
        ninja_entry = by_file[entry["file"]]
        assert entry["directory"] == ninja_entry["directory"]
        assert entry["output"] == ninja_entry["output"]
        assert entry["arguments"][0] == shutil.which("gcc")            # the real compiler, resolved
        assert entry["arguments"][1:] == ninja_entry["command"].split()[2:]   # what gcc got


@pytest.mark.skipif(not shutil.which("clangd"), reason="clangd is not installed (.ci/run installs it)")
def test_clangd_consumes_the_compdb(built, env):
    assert run_shim(["compdb", "-C", built, "-o", built / "compile_commands.json"], env=env).returncode == 0
    check = subprocess.run(["clangd", "--check=%s" % (built / "lib" / "stats.c"),
                            "--compile-commands-dir=%s" % built], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
    assert check.returncode == 0, check.stdout[-3000:]
    assert "Compile command from CDB is" in check.stdout
    assert "-std=c11" in check.stdout and "All checks completed, 0 errors" in check.stdout


def test_records_module_reads_what_the_build_wrote(built):
    build, steps = records.load(str(built / ".shim"))
    assert build["exit"] == 0 and len(steps) == 8


# --- comparing two builds: terminal, JSON, HTML, Markdown, the CI gate ----------------------------


def heavy_source(statements=1200) -> str:
    """A C function gcc takes seconds to optimise (and more memory at -O2 than at -O0)."""
    body = ["  a = (a * %d + b) ^ (c >> %d); b += a %% %d; c ^= b * %d;"
            % (i % 97 + 3, i % 7 + 1, i % 13 + 2, i % 31 + 5) for i in range(statements)]
    return "\n".join(["int heavy(int *v) {", "  int a = v[0], b = v[1], c = v[2];"] + body
                     + ["  return a + b + c;", "}"]) + "\n"


@pytest.fixture
def three_builds(example, env):
    """examples/ninja plus lib/heavy.c, built clean three times through `shim build`: heavy.o
    at -O0, then at -O2 (the planted regression: slower and bigger), then at -O2 again."""
    (example / "lib" / "heavy.c").write_text(heavy_source())
    manifest = example / "build.ninja"
    base = manifest.read_text() + "\nbuild $builddir/obj/heavy.o: cc lib/heavy.c\n  cflags = {}\ndefault $builddir/obj/heavy.o\n"
    for opt in ("-O0", "-O2", "-O2"):
        manifest.write_text(base.replace("{}", opt))
        shutil.rmtree(example / "build", ignore_errors=True)          # a clean build each time
        result = run_shim(["build", "-C", example, "--mode", "spawn"], env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    groups, _ = records.load_builds(str(example / ".shim"))
    assert len(groups) == 3
    return example, [g[0]["id"] for g in groups]


def test_a_planted_regression_shows_in_the_terminal_json_and_html_comparison(three_builds, env, tmp_path):
    from shim.reports import compare
    example, ids = three_builds
    against_first = ["report", "-C", example, "--compare", ids[0]]        # the last (-O2) vs the -O0 one, by id
    data = json.loads(run_shim(against_first + ["--json"], env=env).stdout)
    jsonschema.validate(data, compare.report_schema())
    assert data["build"]["id"] == ids[2]
    c = data["comparison"]
    (slower,) = [r for r in c["duration"]["regressions"] if r["key"] == "build/obj/heavy.o"]
    (bigger,) = [r for r in c["memory"]["regressions"] if r["key"] == "build/obj/heavy.o"]
    assert slower["new"] > 1.3 * slower["old"] and bigger["delta"] > 16 * MIB
    assert c["duration"]["regressions"][0]["key"] == "build/obj/heavy.o"   # the largest change first
    assert (c["matched"], c["new"], c["gone"]) == (9, [], [])

    text = run_shim(against_first, env=env)
    assert text.returncode == 0, text.stderr
    assert "build/obj/heavy.o" in text.stdout.split("Slower:")[1].split("\n\n")[0]
    assert "build/obj/heavy.o" in text.stdout.split("More memory:")[1].split("\n\n")[0]
    assert "matched steps unchanged" in text.stdout

    page = tmp_path / "compared.html"
    assert run_shim(against_first + ["--html", page], env=env).returncode == 0
    html_text = page.read_text()
    assert '<table class="compared">' in html_text
    timelines = [svg.split("</svg>")[0] for svg in html_text.split('<svg class="timeline"')[1:]]
    assert len(timelines) == 2                                             # the earlier build above
    groups = records.load_builds(str(example / ".shim"))[0]
    (old_heavy,) = [s for s in groups[0][1] if s["out"][0] == "build/obj/heavy.o"]
    (new_heavy,) = [s for s in groups[2][1] if s["out"][0] == "build/obj/heavy.o"]

    def width(svg, step):
        return float(re.search(r'data-id="%s" x="[^"]+" y="[^"]+" width="([^"]+)"' % step["id"], svg).group(1))

    # One time scale for both: the bars' widths are in the ratio of the durations.
    ratio = width(timelines[0], old_heavy) / width(timelines[1], new_heavy)
    assert abs(ratio - old_heavy["dur"] / new_heavy["dur"]) < 0.02, ratio


def test_fail_over_exits_1_on_the_planted_regression_and_0_without_one(three_builds, env):
    example, ids = three_builds
    regressed = run_shim(["report", "-C", example, "--compare", ids[0], "--fail-over", "20", "--brief"], env=env)
    assert regressed.returncode == 1, regressed.stderr
    (line,) = [l for l in regressed.stderr.splitlines() if l.startswith("shim: ")]
    assert line.startswith("shim: grew more than 20%: wall +"), line
    steady = run_shim(["report", "-C", example, "--fail-over", "60", "--brief"], env=env)    # vs the build before
    assert steady.returncode == 0, steady.stderr
    assert steady.stderr.startswith("shim: OK, within 60%: wall ")


def test_markdown_of_a_comparison_renders_as_tables(three_builds, env, tmp_path):
    from markdown_it import MarkdownIt
    example, ids = three_builds
    md = run_shim(["report", "-C", example, "--compare", ids[0], "--markdown"], env=env)
    assert md.returncode == 0 and md.stdout.startswith("### shim: build ")
    html_text = MarkdownIt("commonmark").enable("table").render(md.stdout)
    assert html_text.count("<table>") >= 3 and "heavy.o" in html_text
    assert "<th>measure</th>" in html_text and "<td>wall</td>" in html_text
    out = tmp_path / "summary.md"
    assert run_shim(["report", "-C", example, "--compare", "--markdown", out], env=env).returncode == 0
    assert out.read_text().startswith("### shim: build ")


def test_compare_names_what_it_cannot_find_in_one_line(example, env, tmp_path):
    assert run_shim(["build", "-C", example], env=env).returncode == 0
    one_error_line(run_shim(["report", "-C", example, "--compare"], env=env), 2, "only one build")
    one_error_line(run_shim(["report", "-C", example, "--compare", tmp_path / "nowhere"], env=env), 2,
                   "neither a build id", "nor a directory with a ledger")


WAITER_SLEEP = 2.5        # seconds each fake step runs: the third waits twice that, > records.NINJA_SLACK


@pytest.mark.parametrize("mode", ["exec", "spawn"])
def test_steps_that_waited_for_memory_keep_their_durations_without_the_wait(tmp_path, env, mode):
    """Three steps that each need the whole budget run one at a time under plain ninja -j3: the
    later ones wait for memory longer than .ninja_log matching once allowed (2 s)."""
    tool = write_tool(tmp_path / "tools", "slow", 'sleep %s; for out; do :; done; : > "$out"\n' % WAITER_SLEEP)
    (tmp_path / "build.ninja").write_text("rule cc\n  command = shim slow -c $in -o $out\n" + "".join(
        "build %s.o: cc %s.c\n" % (name, name) for name in ("a", "b", "c")))
    for name in ("a", "b", "c"):
        (tmp_path / (name + ".c")).write_text("")
    write_toml(tmp_path / "toolchain.toml", '''
        [tool.slow]
        program = "%s"
        family = "gcc"
        memory = "1GiB"
        ''' % tool)
    env.update(SHIM_MEMORY_BUDGET="64MiB", SHIM_MODE=mode)
    result = subprocess.run([str(NINJA), "-C", str(tmp_path), "-j3"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120)
    assert result.returncode == 0, result.stdout
    data = json.loads(run_shim(["report", "-C", tmp_path, "--json"], env=env).stdout)
    steps = sorted(data["steps"], key=lambda s: s["t0"])
    assert [s["mode"] for s in steps] == [mode] * 3
    assert max(s["wait"] for s in steps) > records.NINJA_SLACK        # the premise: a long wait
    assert data["totals"]["by_timing"] == {"ninja_log" if mode == "exec" else "measured": 3}
    for earlier, later in zip(steps, steps[1:]):
        # Each held the whole budget, so the tools ran one after another: a duration holding
        # the wait (seconds) would overlap the next step; shim's own start-up (not a wait) may.
        assert earlier["t1"] < later["t0"] + 1.0, (earlier, later)
    out = run_shim(["report", "-C", tmp_path], env=env).stdout
    assert "no duration" not in out and "timing: %s 3" % ("ninja_log" if mode == "exec" else "measured") in out


def test_control_characters_in_file_names_reach_neither_the_terminal_nor_the_markdown_raw(tmp_path, env):
    tool = write_tool(tmp_path / "tools", "cc", 'for out; do :; done; : > "$out"\n')
    evil = "red\x1b[31m\x07sneaky.o"
    (tmp_path / "build.ninja").write_text("rule cc\n  command = shim cc -c $in -o '$out'\n"
                                          "build %s: cc a.c\n" % evil)
    (tmp_path / "a.c").write_text("")
    write_toml(tmp_path / "toolchain.toml", '[tool.cc]\nprogram = "%s"\nfamily = "gcc"\n' % tool)
    result = subprocess.run([str(NINJA), "-C", str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120)
    assert result.returncode == 0 and (tmp_path / evil).exists(), result.stdout
    data = json.loads(run_shim(["report", "-C", tmp_path, "--json"], env=env).stdout)
    assert data["steps"][0]["out"] == [evil]                        # JSON keeps the name as it is
    out = run_shim(["report", "-C", tmp_path], env=env).stdout
    markdown = run_shim(["report", "-C", tmp_path, "--markdown"], env=env).stdout
    assert "\x1b" not in out + markdown and "\x07" not in out + markdown
    assert "red\\x1b[31m\\x07sneaky.o" in out
    assert "red\\\\x1b\\[31m\\\\x07sneaky.o" in markdown            # the backslash itself escaped


def test_a_warm_build_shows_its_sampled_peak_and_learned_peaks_and_compares_only_like_with_like(
        example, env, tmp_path):
    """Cold: every step spawned and measured. Warm (outputs removed, auto mode): the compiles are
    known, so they exec, unmeasured; `shim build` still sampled the whole build's peak."""
    for mode in (["--mode", "spawn"], []):       # then auto, and links spawn (examples/ninja/toolchain.toml)
        shutil.rmtree(example / "build", ignore_errors=True)
        result = run_shim(["build", "-C", example, "--budget", "1GiB"] + mode, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(run_shim(["report", "-C", example, "--json"], env=env).stdout)
    t = data["totals"]
    learned = [s for s in data["steps"] if s["mode"] == "exec"]
    assert len(learned) >= KINDS["compile"] and all(s["learned"] and s["rss"] is None for s in learned)
    assert t["learned_steps"] == len(learned) and t["sampled_peak"] > 0
    sampled = size.format(t["sampled_peak"])

    out = run_shim(["report", "-C", example, "--html", tmp_path / "r.html", "--markdown", tmp_path / "r.md"],
                   env=env).stdout
    assert "sampled build peak: %s" % sampled in out
    top = out.split("Top 8 by peak memory:\n")[1].split("\n\n")[0]
    assert top.count(" ~") == len(learned) and fields.LEARNED_NOTE in top      # every step, learned ones marked
    assert "CPU %.2fs user" % t["cpu_user"] in out and "(1 of 8 steps measured, the rest exec'd)" in out
    md = (tmp_path / "r.md").read_text()
    assert "| sampled build peak |" in md and "| %s |" % sampled in md
    page = (tmp_path / "r.html").read_text()
    assert "<span>sampled build peak <b>%s</b></span>" % sampled in page
    assert ">sampled build peak %s</text>" % sampled in page

    compared = json.loads(run_shim(["report", "-C", example, "--compare", "--json"], env=env).stdout)["comparison"]
    for name in ("cpu", "max_rss", "peak_memory_in_use"):
        c = compared["totals"][name]
        assert c["pct"] is None and c["unmeasured"] == {"old": 0, "new": len(learned)}, name
    assert compared["totals"]["sampled_peak"]["pct"] is not None and compared["totals"]["wall"]["pct"] is not None
    text = run_shim(["report", "-C", example, "--compare", "--brief"], env=env).stdout
    rows = text.split("compared with an earlier build (old -> new)\n")[1].split("\n\n")[0].splitlines()
    for label in ("CPU (spawned steps)", "concurrent step peaks", "largest step peak"):
        (row,) = [r for r in rows if r.strip().startswith(label)]
        assert "%" not in row and "not alike: exec'd steps unmeasured, old 0, new %d" % len(learned) in row
