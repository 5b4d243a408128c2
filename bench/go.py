"""Go: go build through shim, on godoc (golang.org/x/tools/cmd/godoc, 25 packages) from Debian's
sources (GOPATH mode, offline; golang-go and golang-golang-x-tools-dev).

    .venv/bin/python bench/go.py [--rounds 5] [--limit 288] [--parts overhead,memlimit] [--write BENCHMARKS.md]

- overhead: clean builds (a new GOCACHE each) of plain `go build -p 2` against `go build -p 2
  -toolexec=LAUNCHER` (the direct launcher `shim go` uses; SHIM_MODE=exec, SHIM_MEMORY_BUDGET=off:
  the wrapper's cost, not admission), alternating, N rounds; medians of wall (and CPU: go's
  children) of rounds 2..N, round 1 reported apart. Target (issue 21): exec <= 1.03.
- memlimit: in a real memory cgroup of --limit MiB (root, cgroup v1 or v2; tests/memcg.py), clean
  builds of plain `go build -p 1`, `-p 2`, `-p 4` and of `shim go build` with no flags, cold (no
  ledger) and with the ledger of a first roomy build: exit status, OOM kills (the cgroup's
  own count), wall, the cgroup's peak.
The load average (`uptime`) is written beside the numbers: the machine may be shared.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
from overhead import write_section  # noqa: E402

BEGIN, END = "<!-- go:begin -->", "<!-- go:end -->"
HEADING = "## Go: go build through shim (issue 21)"
INTRO = """
godoc (golang.org/x/tools/cmd/godoc: 25 compiles and a link; goldmark/util's compile peaks at ~300 MiB,
the link at ~175 MiB) built with Debian's Go 1.19 from Debian's sources, offline. `bench/go.py` says how.
"""
GO = shutil.which("go")
PROGRAM = "golang.org/x/tools/cmd/godoc"
MIB = 1 << 20


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def env_for(work: str, cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIM_", "GO", "XDG_"))}
    os.makedirs(os.path.join(work, "run"), mode=0o700, exist_ok=True)
    env.update(GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=cache, XDG_RUNTIME_DIR=os.path.join(work, "run"),
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    return env


def timed(argv, cwd, env):
    """(exit status, wall seconds, children's CPU seconds, output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return done.returncode, wall, cpu, done.stdout


def overhead(work: str, rounds: int) -> str:
    from shim.generators import launcher
    launch = launcher.write(os.path.join(work, "bin"))
    variants = {"plain": [], "exec": []}
    loads = []
    for r in range(rounds):
        order = ["plain", "exec"] if r % 2 == 0 else ["exec", "plain"]
        for name in order:
            d = os.path.join(work, "ov-%s-%d" % (name, r))
            os.makedirs(d)
            env = env_for(work, os.path.join(d, "gocache"))
            argv = [GO, "build", "-p", "2", "-o", "godoc"]
            if name == "exec":
                env.update(SHIM_MODE="exec", SHIM_MEMORY_BUDGET="off")
                argv.append("-toolexec=" + launch)
            loads.append(load())
            code, wall, cpu, out = timed(argv + [PROGRAM], d, env)
            if code != 0:
                raise SystemExit("%s build failed:\n%s" % (name, out[-2000:]))
            variants[name].append((wall, cpu))
            shutil.rmtree(d)
    lines = ["### Wrapped vs unwrapped: clean `go build -p 2` of godoc (%d rounds)" % rounds, "",
             "| variant | round 1 wall | median wall (rounds 2..%d) | median CPU | wall vs plain |" % rounds,
             "|---|---|---|---|---|"]
    base = statistics.median(w for w, _ in variants["plain"][1:] or variants["plain"])
    for name, runs in variants.items():
        rest = runs[1:] or runs
        wall = statistics.median(w for w, _ in rest)
        lines.append("| %s | %.2f s | %.2f s | %.2f s | %.3f |" % (
            "plain go" if name == "plain" else "-toolexec=shim, exec", runs[0][0], wall,
            statistics.median(c for _, c in rest), wall / base))
    lines += ["", "Target: exec <= 1.03 of plain. Load average (1/5/15 min) before each build: %s." % "; ".join(loads)]
    return "\n".join(lines)


def memlimit(work: str, limit_mib: int) -> str:
    import memcg
    why = memcg.available()
    if why:
        return "### Under a real memory limit\n\nnot measured: %s" % why
    # A roomy first build teaches shim every step's peak.
    teach = os.path.join(work, "teach")
    os.makedirs(teach)
    code, _, _, out = timed([os.path.join(BIN, "shim"), "go", "build", "-o", "godoc", PROGRAM], teach,
                            env_for(work, os.path.join(teach, "gocache")))
    if code != 0:
        raise SystemExit("the first build failed:\n" + out[-2000:])
    runs = [("plain `go build -p %d`" % p, [GO, "build", "-p", str(p), "-o", "godoc", PROGRAM], False) for p in (1, 2, 4)]
    runs += [("`shim go build`, cold (no ledger)", [os.path.join(BIN, "shim"), "go", "build", "-o", "godoc", PROGRAM], False),
             ("`shim go build`, learned ledger", [os.path.join(BIN, "shim"), "go", "build", "-o", "godoc", PROGRAM], True)]
    lines = ["### Under a real memory limit: %d MiB (cgroup %s), clean go cache" % (limit_mib, memcg.locate()[0]), "",
             "| build | exit | OOM kills | wall | cgroup peak | load before |", "|---|---|---|---|---|---|"]
    for i, (label, argv, learned) in enumerate(runs):
        d = os.path.join(work, "mem-%d" % i)
        os.makedirs(d)
        if learned:
            shutil.copytree(os.path.join(teach, ".shim"), os.path.join(d, ".shim"), ignore=shutil.ignore_patterns("bin"))
        env = env_for(work, os.path.join(d, "gocache"))
        before = load()
        with memcg.MemCg(limit_mib * MIB) as cg:
            code, wall, _, out = timed(cg.wrap(argv), d, env)
            kills, peak = cg.oom_kills(), cg.max_usage()
        lines.append("| %s | %d | %d | %.1f s | %s | %s |" % (label, code, kills, wall,
                                                          "%d MiB" % (peak // MIB) if peak else "-", before))
        print(label, code, kills, "%.1f" % wall, out[-600:], file=sys.stderr)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit", type=int, default=288, help="the memory cgroup's limit in MiB (default 288)")
    parser.add_argument("--parts", default="overhead,memlimit")
    parser.add_argument("--write", metavar="FILE", help="replace the Go section of FILE (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    if not GO:
        raise SystemExit("go is not installed (apt-get install golang-go golang-golang-x-tools-dev)")
    parts = args.parts.split(",")
    work = tempfile.mkdtemp(prefix="shim-bench-go-")
    try:
        sections = []
        if "overhead" in parts:
            sections.append(overhead(work, args.rounds))
        if "memlimit" in parts:
            sections.append(memlimit(work, args.limit))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    given = " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n\n".join(sections) + "\n\nMeasured %s UTC with `.venv/bin/python bench/go.py%s`." % (
        time.strftime("%Y-%m-%d %H:%M", time.gmtime()), " " + given if given else "")
    print(text)
    return write_section(args.write, text, BEGIN, END, HEADING, INTRO) if args.write else 0


if __name__ == "__main__":
    raise SystemExit(main())
