"""What reading a large toolchain.toml costs on a cache miss (issue 22: it was quadratic).

    .venv/bin/python bench/config.py [--write BENCHMARKS.md]

Times `layers.build` (read, validate, merge with the preset, compile: what a step does
when its toolchain cache misses) in process, best of 3, for toolchain.toml files of
1000 to 10,000 tools, each tool a table of three keys as tests/layers_test.py writes,
beside `tomllib.loads` of the same text alone (the floor: Python's parser).
"""

import argparse
import os
import tomllib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from layers_test import many_tools  # noqa: E402  (tests/layers_test.py)
from overhead import write_section  # noqa: E402  (bench/overhead.py)

from shim.config import layers  # noqa: E402

BEGIN, END = "<!-- config:begin -->", "<!-- config:end -->"
SIZES = (1000, 2000, 4000, 10000)


def measure(n: int, directory: str) -> float:
    path = os.path.join(directory, "toolchain-%d.toml" % n)
    with open(path, "w") as f:
        f.write(many_tools(n))
    return best_of_3(lambda: layers.build([("project", path)], "")), best_of_3(lambda: tomllib.loads(many_tools(n)))


def best_of_3(call) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", metavar="FILE", help="replace the config section of FILE (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        rows = [(n,) + measure(n, d) for n in SIZES]
    text = ("Command: `.venv/bin/python bench/config.py` on %s (load average %.1f)\n\n"
            "| tools | `layers.build`, best of 3 | `tomllib.loads` alone | per tool |\n|---:|---:|---:|---:|\n"
            % (time.strftime("%Y-%m-%d"), os.getloadavg()[0]))
    text += "".join("| %d | %.3f s | %.3f s | %.0f µs |\n" % (n, t, floor, t / n * 1e6) for n, t, floor in rows)
    text += "\nBefore (quadratic `layers.locate`): 2000 tools 7.8 s, 10,000 tools 235 s (issue 22's repro)."
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END, heading="## A large toolchain.toml on a cache miss (issue 22)",
                      intro="Target: linear in the file, under 1 s for 10,000 tools.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
