"""Every file shim reads back, damaged at random (random bytes, truncations of the real
file, marshal and JSON of the wrong shape), or replaced by a FIFO, a directory or a symlink:
the step neither hangs nor writes through the link, it still ends with the tool's own exit
status, and its ledger record is not lost. Bookkeeping never breaks a build."""

import json
import marshal
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memcg
from conftest import BIN, SHIM, write_tool, write_toml
from shim import digest
from shim.reports import records

# Which files hold each kind of state, once a step has run (build dir, cache dir, run dir).
STATE_FILES = {
    "estimates": lambda b, c, r: sorted((b / ".shim" / "memory-v2").glob("*.marshal")),
    "toolchain cache": lambda b, c, r: sorted(c.glob("toolchain-*.marshal")),
    "ledger": lambda b, c, r: [b / ".shim" / "ledger-v1.jsonl"],
    "memory pool": lambda b, c, r: sorted(r.glob("pool-*")),
    "cpu pool": lambda b, c, r: sorted(r.glob("cpu-*")),
}

values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner, inner)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["rec", "t0", "t1", "id", "out", "rss", "tool", "b", "exit", "kind", "x"]), inner,
        max_size=6),
    max_leaves=12)


@st.composite
def damage(draw, original: bytes):
    """What a partial restore, a crash or a neighbour could leave in a file."""
    how = draw(st.sampled_from(["bytes", "truncated", "marshal", "sealed", "json"]))
    if how == "bytes":
        return draw(st.binary(max_size=3000))
    if how == "truncated":
        return original[:draw(st.integers(0, max(0, len(original) - 1)))]
    if how == "marshal":
        return marshal.dumps(draw(values))
    if how == "sealed":               # a checksum that holds over a value of the wrong shape
        return digest.pack(draw(values))
    lines = draw(st.lists(json_values, max_size=5))
    return original[:draw(st.integers(0, len(original)))] + b"".join(
        (json.dumps(v) + draw(st.sampled_from(["\n", ""]))).encode() for v in lines)


class Scene:
    """A build dir, toolchain cache and runtime dir in which one step has already run."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="shim-state-"))
        self.build, self.cache, run = self.root / "build", self.root / "cache", self.root / "run"
        self.build.mkdir()
        run.mkdir(mode=0o700)
        self.run = run / "shim"
        (self.build / "build.ninja").touch()
        self.tool = write_tool(self.root / "tools", "gcc", 'exit "$STATUS"\n')   # read as gcc
        write_toml(self.build / "toolchain.toml", '[step.compile]\nmemory = "64MiB"\n')
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIM_", "XDG_", "MAKEFLAGS"))}
        self.env.update(HOME=str(self.root), XDG_RUNTIME_DIR=str(run), SHIM_CACHE_DIR=str(self.cache),
                        SHIM_MEMORY_BUDGET="1GiB", SHIM_MODE="spawn", SHIM_CPU_SLOTS="2",
                        PATH="%s:%s" % (BIN, os.environ["PATH"]))
        self.n = 0
        assert self.step(0).returncode == 0
        self.originals = {kind: {p: p.read_bytes() for p in files(self.build, self.cache, self.run)}
                          for kind, files in STATE_FILES.items()}
        assert all(self.originals.values()), {k: len(v) for k, v in self.originals.items()}

    def step(self, status: int, timeout: float = 60, wrap=list):
        self.n += 1
        return subprocess.run(wrap([str(SHIM), str(self.tool), "-c", "a.c", "-o", "out%d.o" % self.n]),
                              cwd=self.build, env=dict(self.env, STATUS=str(status)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def scene():
    s = Scene()
    yield s
    shutil.rmtree(s.root, ignore_errors=True)


@pytest.mark.parametrize("kind", sorted(STATE_FILES))
def test_a_damaged_state_file_never_changes_the_steps_exit_status_nor_loses_its_record(scene, kind):
    originals = scene.originals[kind]

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data(), status=st.integers(0, 5))
    def damaged(data, status):
        for path, original in originals.items():
            path.write_bytes(data.draw(damage(original)))
        result = scene.step(status)
        assert result.returncode == status, result.stderr
        assert "error" not in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) <= 2, result.stderr   # at most a warning or two, once
        mine = [r for r in records.read(str(scene.build / ".shim"))
                if r.get("out") == ["out%d.o" % scene.n] and r["rec"] == "step"]
        assert len(mine) == 1 and mine[0]["exit"] == status, result.stderr

    damaged()


# marshal sizes a tuple by the 4-byte count after "(" before reading an item: these five
# bytes ask for 2**28 slots, 2 GiB that it fills (the count of `(null` is 14 GiB).
TUPLE_BOMB = b"(" + (1 << 28).to_bytes(4, "little")


@pytest.mark.skipif(memcg.available() is not None, reason="no memory cgroup here: %s" % memcg.available())
@pytest.mark.parametrize("kind", ["estimates", "toolchain cache"])
def test_a_marshal_bomb_in_place_of_a_state_file_costs_the_step_no_memory(scene, kind):
    originals = scene.originals[kind]
    try:
        for path in originals:
            path.write_bytes(TUPLE_BOMB)
        with memcg.MemCg(256 << 20) as cg:                  # shim and the tool need ~30 MiB
            result = scene.step(3, wrap=cg.wrap)
            kills = cg.oom_kills()
        assert (result.returncode, kills) == (3, 0), result.stderr
        assert len(result.stderr.splitlines()) <= 1, result.stderr
        mine = [r for r in records.read(str(scene.build / ".shim"))
                if r.get("out") == ["out%d.o" % scene.n] and r["rec"] == "step"]
        assert len(mine) == 1 and mine[0]["exit"] == 3, result.stderr
    finally:
        for path, original in originals.items():
            path.write_bytes(original)


def _put_in_place(path: Path, form: str, victim: Path) -> None:
    """Replace state file *path* with a FIFO, a directory, or a symlink to *victim*."""
    path.unlink()
    if form == "fifo":
        os.mkfifo(path, 0o600)
    elif form == "directory":
        path.mkdir()
    else:
        path.symlink_to(victim)


@pytest.mark.parametrize("form", ["fifo", "directory", "symlink"])
@pytest.mark.parametrize("kind", sorted(STATE_FILES))
def test_a_fifo_directory_or_symlink_in_place_of_a_state_file_neither_hangs_nor_stops_the_step(scene, kind, form):
    victim = scene.root / "victim"
    victim.write_bytes(b"not shim's\n")
    originals = scene.originals[kind]
    for path in originals:
        _put_in_place(path, form, victim)
    try:
        for status in (0, 3):
            result = scene.step(status, timeout=20)       # a FIFO opened for reading must not block
            assert result.returncode == status, result.stderr
            assert "error" not in result.stderr, result.stderr
            assert len(result.stderr.splitlines()) <= 2, result.stderr
            if kind != "ledger":                            # there, the record has nowhere to go
                mine = [r for r in records.read(str(scene.build / ".shim"))
                        if r.get("out") == ["out%d.o" % scene.n] and r["rec"] == "step"]
                assert len(mine) == 1 and mine[0]["exit"] == status, result.stderr
        assert victim.read_bytes() == b"not shim's\n"        # nothing written through a link
    finally:
        for path, original in originals.items():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            path.write_bytes(original)
