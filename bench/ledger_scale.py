"""Start-up of `shim build` and cost of `shim report` against the ledger's size (issue 22 item 15).

    .venv/bin/python bench/ledger_scale.py [--rounds 3] [--builds 1,10,100] [--baseline VENV]
                                           [--write BENCHMARKS.md]

A build dir whose build.ninja has one edge that always runs and writes the time it ran;
its ledger is a generated one of N builds of 2000 compile steps (the records of
bench/ledger.py, spawned, 100 s apart, each build closed by its `build` record), copied
fresh before every run (a run may compact it). The estimates index is there, as the
steps leave it. Per run, medians of the rounds:
- start-up: from starting `shim build -C DIR` to ninja running the edge;
- `shim build` in all: until it exits (the closing summary and, above ledger.keep_builds,
  the compaction included), and its max RSS (wait4);
- `shim report -C DIR > /dev/null`: wall and max RSS (it compacts too, then reads the
  last build from the end of the file);
- `shim report --all` on the ledger as `shim build` left it (within the bound), not for
  the baseline (whose ledger is not cut: 17 s and 1.1 GiB at 100 builds, per the issue).
--baseline VENV times another install's shim (the release before) on the same ledgers.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ledger import record  # noqa: E402  (bench/ledger.py)
from overhead import write_section  # noqa: E402  (bench/overhead.py)

from shim import ledger  # noqa: E402

BIN = os.path.dirname(sys.executable)
BEGIN, END = "<!-- ledger-scale:begin -->", "<!-- ledger-scale:end -->"
STEPS = 2000


def generate(path: str, builds: int) -> None:
    """A ledger of *builds* builds of STEPS steps each at *path*, ending an hour ago."""
    t0 = time.time() - 3600 - 100 * builds
    with open(path, "wb") as f:
        f.write(ledger.HEADER.encode())
        for b in range(builds):
            start = t0 + 100 * b
            build_id = "%x-%d" % (int(start * 1e6), 90000 + b)
            lines = []
            for i in range(STEPS):
                r = record()
                out = "obj/src/f%d.c.o" % i
                r.update(rec="step", id="%x-%d" % (int((start + i * 0.02) * 1e6), i), b=build_id,
                         t0=start + i * 0.02, t1=start + i * 0.02 + 0.8, mode="spawn", **{"in": "src/f%d.c" % i},
                         out=[out, out + ".d"], exit=0, sig=None, rss=(60 << 20) + i * 4096, ut=0.7, st=0.1,
                         dur=0.8, wait=0.0)
                lines.append(ledger.encode(r))
            lines.append(ledger.encode({"rec": "build", "id": build_id, "b": build_id, "runner": "ninja",
                                        "t0": start - 0.5, "t1": start + STEPS * 0.02 + 1, "exit": 0, "sig": None,
                                        "argv": ["-C", "build"], "budget": 8 << 30, "steps_budget": 7 << 30,
                                        "peak": 3 << 30, "jobs": 8}))
            f.write(("\n".join(lines) + "\n").encode())


def run(argv, env, cwd, stdout=subprocess.DEVNULL):
    """(wall seconds, max RSS in bytes) of one run of *argv*."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit("%s failed (%d)" % (" ".join(argv), p.returncode))
    return wall, usage.ru_maxrss * 1024


def measure(shim: str, pristine: str, work: str, rounds: int, every: bool = True) -> dict:
    """Medians of *rounds* runs of `shim build` and `shim report` on a copy of *pristine*
    (*every*: also `shim report --all` on the ledger as the build left it)."""
    build_dir = os.path.join(work, "build")
    shutil.rmtree(build_dir, ignore_errors=True)
    os.makedirs(os.path.join(build_dir, ".shim", "memory-v2"))
    stamp = os.path.join(build_dir, "ran")
    with open(os.path.join(build_dir, "build.ninja"), "w") as f:
        f.write("rule r\n  command = %s -c 'import time; print(time.time())' > %s\nbuild always: r\n"
                % (sys.executable, stamp))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIM_")}
    env.update(HOME=os.path.join(work, "home"), PATH=os.path.dirname(shim) + os.pathsep + env.get("PATH", ""))
    target = os.path.join(build_dir, ".shim", ledger.FILENAME)
    got = {"start": [], "build": [], "build_rss": [], "report": [], "report_rss": [], "size": [],
           "all": [], "all_rss": []}
    for _ in range(rounds):
        shutil.copyfile(pristine, target)
        t = time.time()
        wall, rss = run([shim, "build", "-C", build_dir], env, work)
        with open(stamp) as f:
            got["start"].append(float(f.read()) - t)
        got["build"].append(wall)
        got["build_rss"].append(rss)
        got["size"].append(os.path.getsize(target))
        if every:
            wall, rss = run([shim, "report", "--all", "-C", build_dir], env, work)
            got["all"].append(wall)
            got["all_rss"].append(rss)
        shutil.copyfile(pristine, target)
        wall, rss = run([shim, "report", "-C", build_dir], env, work)
        got["report"].append(wall)
        got["report_rss"].append(rss)
    return {k: statistics.median(v) if v else None for k, v in got.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--builds", default="1,10,100", help="ledger sizes, in builds of 2000 steps")
    parser.add_argument("--baseline", metavar="VENV", help="also time another install's shim")
    parser.add_argument("--write", metavar="FILE")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="shim-bench-ledger-scale-")
    shims = [("this", os.path.join(BIN, "shim"))]
    if args.baseline:
        shims.append(("baseline", os.path.join(args.baseline, "bin", "shim")))
    rows = []
    try:
        for n in [int(x) for x in args.builds.split(",")]:
            pristine = os.path.join(work, "ledger-%d.jsonl" % n)
            generate(pristine, n)
            for name, shim in shims:
                m = measure(shim, pristine, work, args.rounds, every=name == "this")
                rows.append((n, os.path.getsize(pristine), name, m))
                print(n, name, m, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mib = 1 << 20
    lines = [
        "Command: `%s bench/ledger_scale.py --rounds %d%s` on %s; medians. The machine was shared"
        % (os.path.relpath(sys.executable), args.rounds, " --baseline VENV" if args.baseline else "",
           time.strftime("%Y-%m-%d")) + " with other jobs (2 cores): absolute times are noisy, the trend is not.",
        "",
        "| ledger | shim | start-up (to ninja's first edge) | `shim build` in all | its max RSS "
        "| ledger after | `shim report` | its max RSS | `shim report --all` after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, size, name, m in rows:
        lines.append("| %d builds (%.1f MiB) | %s | %.2f s | %.2f s | %.0f MiB | %.1f MiB | %.2f s | %.0f MiB | %s |" % (
            n, size / mib, name, m["start"], m["build"], m["build_rss"] / mib, m["size"] / mib,
            m["report"], m["report_rss"] / mib,
            "%.2f s, %.0f MiB" % (m["all"], m["all_rss"] / mib) if m["all"] is not None else "not run"))
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END, heading="## Ledger size: start-up and report",
                      intro="What a ledger cached across CI runs costs `shim build` before ninja starts and "
                            "`shim report` (issue 22 item 15). The ledger keeps the last `ledger.keep_builds` "
                            "(20) builds in at most `ledger.max_size` (64 MiB): a bigger one (a cache of the "
                            "release before) is cut to that when the build ends or the report starts.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
