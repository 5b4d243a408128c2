"""The zig preset: examples/ninja cross-compiled for aarch64-linux with `zig cc` from PyPI.

zig is found beside shim (site-packages/ziglang, through the preset's env.path_prepend),
not on PATH. The first build for a target compiles its libc stubs and compiler-rt
(~45 s on 2 cores), so zig's cache lives in pytest's cache dir and later runs take ~1 s.
"""

import json
import os
import struct

import pytest

from conftest import run_shim, write_toml

pytestmark = pytest.mark.e2e          # a real zig cc through the installed shim

ziglang = pytest.importorskip("ziglang", reason="the PyPI package ziglang is not installed (pip install ziglang)")

EM_AARCH64 = 183
SOURCES = ["lib/vec.c", "lib/parse.c", "lib/stats.c", "lib/hist.c", "lib/fmt.c", "src/main.c"]


def elf_machine(path) -> tuple:
    """(class, data, e_machine) from an ELF header: 2, 1, 183 for 64-bit little-endian AArch64."""
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF", head[:4]
    order = "<" if head[5] == 1 else ">"
    return head[4], head[5], struct.unpack(order + "H", head[18:20])[0]


def test_the_example_cross_compiles_for_aarch64_with_the_zig_preset(example, env, tmp_path, request):
    cache = getattr(request.config, "cache", None)     # absent with -p no:cacheprovider
    env["ZIG_GLOBAL_CACHE_DIR"] = str(cache.mkdir("zig-global-cache") if cache else tmp_path / "zig-cache")
    env["SHIM_TOOLCHAIN"] = str(write_toml(tmp_path / "aarch64.toml", """
        preset = "zig"
        [tool.cc]
        args.append = ["-target", "aarch64-linux-gnu"]
        [tool.link]
        args.append = ["-target", "aarch64-linux-gnu"]
        """))
    result = run_shim(["build", "-C", example], env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[8/8] LINK build/tally" in result.stdout

    assert elf_machine(example / "build" / "tally") == (2, 1, EM_AARCH64)
    assert elf_machine(example / "build" / "obj" / "vec.o") == (2, 1, EM_AARCH64)

    zig = os.path.join(os.path.dirname(ziglang.__file__), "zig")
    records = [json.loads(line) for line in (example / ".shim" / "ledger-v1.jsonl").read_text().splitlines()[1:]]
    steps = {r["out"][0]: r for r in records if r.get("rec") in ("start", "step")}
    compiles = [r for r in steps.values() if r["kind"] == "compile"]
    assert sorted(r["in"] for r in compiles) == sorted(SOURCES)
    assert all(os.path.samefile(r["exe"], zig) for r in compiles)          # found beside shim, not on PATH
    assert all(r["args"][0] == "cc" and r["args"][-2:] == ["-target", "aarch64-linux-gnu"] for r in compiles)
    assert steps["build/libtally.a"]["kind"] == "archive" and steps["build/tally"]["kind"] == "link"

    compdb = run_shim(["compdb", "-C", example], env=env)               # what clangd gets: zig cc ...
    assert compdb.returncode == 0, compdb.stderr
    entry = json.loads(compdb.stdout)[0]
    assert os.path.samefile(entry["arguments"][0], zig) and entry["arguments"][1] == "cc"
