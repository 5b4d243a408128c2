"""What one remote action's shim costs: the `shim bazel init --remote` wrapper on a tiny compile.

    .venv/bin/python bench/remote_step.py [--rounds 30]

A fake exec root in a temporary directory (shim_toolchain/ copied in, as a worker stages
it, and `bazel-out/`), the action's environment only PATH (as --incompatible_strict_action_env),
no ledger. Each round runs, in a rotating order: gcc directly, the installed shim (its own
launcher and hot-path bundle, spawn mode), and the remote wrapper (shim from lib/ by source:
no bundle, no bytecode cache, no parsed-config cache, as on a worker whose exec root is
fresh for every action). Prints the median wall of each and the load average.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shim-remote-step-") as tmp:
        ws = os.path.join(tmp, "ws")
        shutil.copytree(os.path.join(HERE, "..", "tests", "fixtures", "bazel"), ws)
        subprocess.run([os.path.join(BIN, "shim"), "bazel", "init", "--remote", ws], check=True,
                       stdout=subprocess.DEVNULL)
        root = os.path.join(tmp, "exec-0")
        os.makedirs(os.path.join(root, "bazel-out", "bin"))
        shutil.copytree(os.path.join(ws, "shim_toolchain"), os.path.join(root, "shim_toolchain"))
        with open(os.path.join(root, "tiny.c"), "w") as f:
            f.write("int tiny(void) { return 1; }\n")
        args = ["-c", "tiny.c", "-o", "bazel-out/bin/tiny.o"]
        env = {"PATH": "/usr/bin:/bin", "SHIM_LEDGER": "off"}
        runs = [
            ("gcc", [shutil.which("gcc")] + args, env),
            ("installed shim, spawn", [os.path.join(BIN, "shim"), "gcc"] + args, dict(env, SHIM_MODE="spawn")),
            ("remote wrapper (shim_toolchain/gcc)", ["shim_toolchain/gcc"] + args, env),
        ]
        times = {name: [] for name, _, _ in runs}
        for r in range(opts.rounds):
            for name, argv, e in runs[r % len(runs):] + runs[:r % len(runs)]:
                t = time.perf_counter()
                subprocess.run(argv, cwd=root, env=e, check=True)
                times[name].append(time.perf_counter() - t)
    print("load: %s" % os.getloadavg()[0])
    for name, _, _ in runs:
        print("%-40s %7.1f ms (median of %d)" % (name, statistics.median(times[name]) * 1000, opts.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
