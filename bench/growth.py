"""Steps whose memory grows slowly past their estimate, in a real memory cgroup: pause before kill.

    .venv/bin/python bench/growth.py [--limit 1GiB] [--write BENCHMARKS.md]

Eight fake compiles (tests/fixtures/alloc.c -DGROW) that each climb to 300 MiB over 3 s and hold
it 1 s, expected by shim at 64 MiB (a prior far too low, as a cold build's would be), each
build in a fresh child memory cgroup of the limit (tests/memcg.py) from a fresh build dir:
- static `ninja -j1` ... `-j4` of the plain manifest (tools called directly): the best one that
  survives is the yardstick;
- `ninja -j4` of the wrapped manifest (rules call `shim cc`) with SHIM_PAUSE_AT=off (admission
  alone: the estimate is too low, so the kernel kills) and with pausing (the default);
- `shim build` with no flags, and `shim build -j4`.
Per build: finished, outputs built, OOM kills (the cgroup's counter), pauses (the ledger's
`pause` records), shim's OOM retries, wall, wall against the best surviving static -jN, the
cgroup's max usage, and the load average when it started (the machine is shared).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import memcg  # noqa: E402
from memory import wait_quiet  # noqa: E402
from overhead import write_section  # noqa: E402
from realmem import cgroup_limit, cgroup_parser, mib, ninja_bin, read_ledger, shim_bin, slug, victim_names  # noqa: E402

BEGIN, END = "<!-- growth:begin -->", "<!-- growth:end -->"
HEADING = "## Steps growing past their estimate: pause before kill (issue 18)"
INTRO = ("`bench/growth.py`: steps whose memory climbs slowly past a far-too-low estimate, in a real "
         "memory cgroup: the kernel's OOM killer against shim's pause watcher.")
TIMEOUT = 600
STATIC = ["ninja -j1", "ninja -j2", "ninja -j3", "ninja -j4"]
CONFIGS = STATIC + ["ninja -j4 through shim, SHIM_PAUSE_AT=off", "ninja -j4 through shim", "shim build",
                    "shim build -j4"]


def argv_of(config: str) -> list:
    if config.startswith("ninja"):
        return [ninja_bin(), config.split()[1].rstrip(",")]
    return [shim_bin(), "build"] + config.split()[2:]


def build_once(config, directory, env, limit, alloc, say) -> dict:
    wrapped = "shim" in config
    if wrapped:
        outs = memcg.write_growing_project(directory, alloc)
    else:
        outs = memcg.write_fake_project(directory, alloc, [("g%d" % i, 300, 1000) for i in range(8)], wrapped=False)
        path = os.path.join(directory, "build.ninja")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("-DMS=1000", "-DMS=1000 -DGROW=3000"))
    run_env = dict(env)
    if "SHIM_PAUSE_AT=off" in config:
        run_env["SHIM_PAUSE_AT"] = "off"
    load = os.getloadavg()[0]
    with memcg.MemCg(limit, prefix="shimbench-") as cg:
        start = time.perf_counter()
        result = subprocess.run(cg.wrap(argv_of(config)), cwd=directory, env=run_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        kills, victims, max_usage = cg.oom_kills(), cg.victims(), cg.max_usage()
    records = read_ledger(directory)
    run = {"config": config, "status": result.returncode, "wall": wall, "load": load, "kills": kills,
           "victims": victims, "max_usage": max_usage, "total": len(outs), "output": result.stdout,
           "built": sum(1 for o in outs if os.path.exists(os.path.join(directory, o))),
           "pauses": sum(1 for r in records if r.get("rec") == "pause") if wrapped else None,
           "retries": sum(1 for r in records if r.get("retry")) if wrapped else None}
    say("  %-44s %s, %d/%d built, %d OOM kills, %s pauses, %.1f s, load %.2f" % (
        config, "exit 0" if run["status"] == 0 else "FAILED (%s)" % run["status"], run["built"], run["total"],
        kills, "-" if run["pauses"] is None else run["pauses"], wall, load))
    return run


def table(runs, limit) -> list:
    survived = [r for r in runs if r["config"] in STATIC and r["status"] == 0 and not r["kills"]]
    best = min(survived, key=lambda r: r["wall"]) if survived else None
    lines = ["| configuration | finished | built | OOM kills (killed) | pauses | shim OOM retries | wall | "
             "vs best static (%s) | cgroup max usage | load avg at start |" % (best["config"] if best else "none"),
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append("| %s | %s | %d/%d | %s | %s | %s | %.1f s | %s | %s | %.2f |" % (
            r["config"], "yes" if r["status"] == 0 else "**no** (exit %s)" % r["status"], r["built"], r["total"],
            "%d (%s)" % (r["kills"], victim_names(r["victims"])) if r["kills"] else "0",
            "-" if r["pauses"] is None else r["pauses"], "-" if r["retries"] is None else r["retries"],
            r["wall"], "%.2fx" % (r["wall"] / best["wall"]) if best else "-", mib(r["max_usage"]), r["load"]))
    summaries = [(r["config"], line) for r in runs if r["config"].startswith("shim")
                 for line in r["output"].splitlines() if line.startswith("shim: ")]
    if summaries:
        lines += ["", "shim build's own summary:", "", "```"] + ["[%s] %s" % s for s in summaries] + ["```"]
    return lines


def main(argv=None) -> int:
    args = cgroup_parser(__doc__, "growth", 30.0).parse_args(argv)
    limit = cgroup_limit(args)
    root = tempfile.mkdtemp(prefix="shim-growth-")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SHIM_", "XDG_", "NINJA_", "CCACHE_")) and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(XDG_RUNTIME_DIR=os.path.join(root, "run"), SHIM_CACHE_DIR=os.path.join(root, "cache"),
               XDG_CONFIG_HOME=os.path.join(root, "config"), HOME=os.path.join(root, "home"), LC_ALL="C",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    os.makedirs(env["HOME"])
    alloc = memcg.compile_alloc(os.path.join(root, "tools"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))

    def say(text):
        print(text, flush=True)

    started = time.time()
    say("8 steps climbing to 300 MiB over 3 s, held 1 s, expected at 64 MiB; cgroup limit %s" % mib(limit))
    runs = []
    for config in CONFIGS:
        if args.quiet_wait:
            wait_quiet(say, args.quiet_wait)
        runs.append(build_once(config, os.path.join(root, slug(config)), env, limit, alloc, say))
    head = ["Command: `%s bench/growth.py --limit %s` on %s, Python %s, %d CPUs, Linux %s, cgroup %s; the whole "
            "run took %.1f min." % (os.path.relpath(sys.executable), args.limit, time.strftime("%Y-%m-%d"),
                                    sys.version.split()[0], os.cpu_count(), os.uname().release,
                                    memcg.locate()[0], (time.time() - started) / 60),
            "",
            "8 fake compiles (tests/fixtures/alloc.c `-DGROW=3000`) that each climb to 300 MiB over 3 s and hold "
            "it 1 s; through shim they are expected at 64 MiB (`step.compile.memory`), far too low, so "
            "admission lets four run at once: 1.2 GiB, more than the limit of %s. One run each, a fresh build "
            "dir and cgroup; pauses are the ledger's `pause` records; the ratio is against the fastest static "
            "`ninja -jN` with no OOM kill. Other engineers share this machine: the load average is beside "
            "each run." % mib(limit),
            ""]
    text = "\n".join(head + table(runs, limit))
    say("\n" + text)
    if args.write:
        write_section(args.write, text, BEGIN, END, HEADING, INTRO)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
