"""Small runners are not serial (issue 23): real compiles and cargo inside small memory cgroups.

    .venv/bin/python bench/smallrunner.py [--limit 512MiB] [--cargo-limit 384MiB] [--write BENCHMARKS.md]

Part 1: ninja's own sources (the corpus, bench/fetch-corpus.sh), `configure.py` then `shim wrap`,
built cold (no `.shim/`) in a fresh cgroup of --limit by `shim build` (no flags), beside bare
`ninja -j1` and `ninja -j2` of the same manifest unwrapped. For shim: the most steps that ran at once
(from the ledger's start and end times) and how many steps were admitted at the prior, at what
this build's own earlier steps measured ("build"), or by history.
Part 2: tests/fixtures/cargo (Debian's crates) in a fresh cgroup of --cargo-limit: `cargo build
-j1`, `-j2` and `shim cargo build` (no flags), clean, cold.
With --rounds N every build runs N times, the variants interleaved (j1, j2, shim, j1, ...) so
that a load change on a shared machine hits them alike; the table shows the median wall, every
run's wall, and shim's median over the best surviving `-jN`'s (the issue's target: at most 1.15x
for cargo). Root is needed for the cgroups (tests/memcg.py).
"""

import argparse
import json
import os
import resource
import statistics
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, HERE)

import memcg  # noqa: E402
from overhead import write_section  # noqa: E402
from shim import size  # noqa: E402

BEGIN, END = "<!-- smallrunner:begin -->", "<!-- smallrunner:end -->"
CORPUS = os.path.expanduser(os.environ.get("SHIM_CORPUS_DIR", "~/.cache/shim-corpus"))


def cpu_of_children() -> float:
    """User + system seconds of every waited-for descendant so far (a build and all under it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_in(limit, argv, cwd, env):
    with memcg.MemCg(limit, prefix="shimbench-") as cg:
        start, cpu = time.perf_counter(), cpu_of_children()
        done = subprocess.run(cg.wrap(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        wall = time.perf_counter() - start
        done.cpu = cpu_of_children() - cpu      # less sensitive than wall to other work on the machine
        return done, wall, cg.oom_kills(), cg.max_usage()


def ledger_steps(directory):
    path = os.path.join(directory, ".shim", "ledger-v1.jsonl")
    steps = []
    if not os.path.exists(path):
        return steps
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("rec") == "step":
                steps.append(rec)
    return steps


def most_at_once(steps) -> int:
    events = sorted([(s["t0"], 1) for s in steps] + [(s["t1"], -1) for s in steps])
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


def ninja_project(root, env):
    src = os.path.join(CORPUS, "src", "ninja")
    if not os.path.exists(os.path.join(src, "configure.py")):
        raise SystemExit("no corpus at %s: run bench/fetch-corpus.sh" % src)
    d = os.path.join(root, "ninja-%d" % len(os.listdir(root)))
    os.makedirs(d)
    subprocess.run([sys.executable, os.path.join(src, "configure.py")], cwd=d, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return d


def part_compiles(limit, env, say, rounds=1):
    root = tempfile.mkdtemp(prefix="shim-small-")
    ninja = os.path.join(BIN, "ninja")
    rows = []
    for label in ("ninja -j1", "ninja -j2", "shim build") * rounds:
        d = ninja_project(root, env)
        if label == "shim build":
            subprocess.run([os.path.join(BIN, "shim"), "wrap", "build.ninja"], cwd=d, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            argv = [os.path.join(BIN, "shim"), "build", "ninja"]
        else:
            argv = [ninja, label.split()[1], "ninja"]
        done, wall, kills, peak = run_in(limit, argv, d, env)
        ok = done.returncode == 0 and os.path.exists(os.path.join(d, "ninja"))
        extra = ""
        if label == "shim build":
            steps = [s for s in ledger_steps(d) if s.get("kind") == "compile"]
            srcs = {}
            for s in steps:
                srcs[s.get("src")] = srcs.get(s.get("src"), 0) + 1
            extra = "at most %d compiles at once; admitted by %s" % (
                most_at_once(steps), ", ".join("%s %d" % kv for kv in sorted(srcs.items(), key=str)))
        rows.append((label, ok, wall, kills, peak, extra, done.cpu))
        say("%s: %s %.1f s (CPU %.1f s), %d kills, max %s %s (load %.2f)" % (
            label, ok, wall, done.cpu, kills, size.format(peak), extra, os.getloadavg()[0]))
        shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return rows


def part_cargo(limit, env, say, rounds=1):
    import cargo_test
    if cargo_test.MISSING:
        say("cargo part skipped: %s" % cargo_test.MISSING)
        return []
    rows = []
    for label, argv in (("cargo build -j1", [cargo_test.CARGO, "build", "-j1"]),
                        ("cargo build -j2", [cargo_test.CARGO, "build", "-j2"]),
                        ("shim cargo build", [os.path.join(BIN, "shim"), "cargo", "build"])) * rounds:
        tmp = tempfile.mkdtemp(prefix="shim-small-cargo-")
        from pathlib import Path
        ws = cargo_test.workspace_copy(Path(tmp))
        e = cargo_test.cargo_env(Path(tmp))
        done, wall, kills, peak = run_in(limit, argv, ws, e)
        ok = done.returncode == 0
        rows.append((label, ok, wall, kills, peak, "", done.cpu))
        say("%s: %s %.1f s (CPU %.1f s), %d kills, max %s (load %.2f)" % (
            label, ok, wall, done.cpu, kills, size.format(peak), os.getloadavg()[0]))
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def table(title, rows):
    """One line per build (several runs: median wall, then every run's), and shim's median
    over the fastest surviving plain build's."""
    lines = ["**%s**" % title, "", "| build | finished | wall (median) | every run | CPU (median) | OOM kills "
             "| cgroup max | notes |", "|---|---|---:|---|---:|---:|---:|---|"]
    labels = list(dict.fromkeys(r[0] for r in rows))
    medians = {}
    for label in labels:
        mine = [r for r in rows if r[0] == label]
        ok = all(r[1] for r in mine)
        medians[label] = statistics.median(r[2] for r in mine) if ok else None
        lines.append("| %s | %s | %.1f s | %s | %.1f s | %d | %s | %s |" % (
            label, "yes" if ok else "**no** (%d of %d)" % (sum(not r[1] for r in mine), len(mine)),
            statistics.median(r[2] for r in mine), ", ".join("%.1f" % r[2] for r in mine),
            statistics.median(r[6] for r in mine),
            sum(r[3] for r in mine), size.format(max(r[4] for r in mine)),
            "; ".join(dict.fromkeys(r[5] for r in mine if r[5]))))
    plain = [m for label, m in medians.items() if m and not label.startswith("shim")]
    shim = [m for label, m in medians.items() if m and label.startswith("shim")]
    if plain and shim:
        lines += ["", "shim / best surviving plain build (medians): **%.2fx**" % (shim[0] / min(plain))]
        by_label = {label: [r for r in rows if r[0] == label] for label in labels}
        shim_label = [label for label in labels if label.startswith("shim")][0]
        rounds = []
        for i, mine in enumerate(by_label[shim_label]):
            others = [by_label[label][i] for label in labels if not label.startswith("shim")
                      and i < len(by_label[label]) and by_label[label][i][1]]
            if mine[1] and others:
                rounds.append("%.2fx" % (mine[2] / min(r[2] for r in others)))
        if len(rounds) > 1:
            lines[-1] += "; round by round (each against that round's best): %s" % ", ".join(rounds)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", default="512MiB")
    parser.add_argument("--cargo-limit", default="384MiB")
    parser.add_argument("--parts", default="compiles,cargo")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every build, interleaved")
    parser.add_argument("--write", metavar="FILE")
    args = parser.parse_args(argv)
    reason = memcg.available()
    if reason:
        raise SystemExit("no memory cgroup: %s" % reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIM_", "MAKEFLAGS")) or k == "SHIM_PAUSE_AT"}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="shim-small-run-"))
    out = ["Command: `%s bench/smallrunner.py --limit %s --cargo-limit %s --rounds %d --parts %s` on %s, "
           "%d CPUs, load average %.2f at the start"
           % (os.path.relpath(sys.executable, REPO), args.limit, args.cargo_limit, args.rounds, args.parts,
              time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), os.getloadavg()[0]), ""]
    if "compiles" in args.parts:
        rows = part_compiles(size.parse(args.limit), env, print, args.rounds)
        out += [table("ninja's sources (C++, `-O2`), cold, in %s" % args.limit, rows), ""]
    if "cargo" in args.parts:
        rows = part_cargo(size.parse(args.cargo_limit), env, print, args.rounds)
        out += [table("tests/fixtures/cargo (regex, serde, serde_json), clean, in %s" % args.cargo_limit, rows), ""]
    text = "\n".join(out)
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END, heading="## Small runners (issue 23)",
                      intro="Cold builds inside small memory cgroups: not serial where `-j2` fits.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
