"""shim/host.py: the operating system's API, declared once, and both platform modules held to it."""

import ast

import pytest

from conftest import REPO
from shim import host, host_posix, host_windows


def top_level_names(module) -> set:
    """The names a module's source binds at its top level (defs, classes, assignments, imports)."""
    names = set()
    for node in ast.parse(open(module.__file__).read()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


@pytest.mark.parametrize("platform", [host_posix, host_windows], ids=["posix", "windows"])
def test_each_platform_module_defines_every_name_of_the_api(platform):
    assert not [name for name in host.API if name not in top_level_names(platform)]
    assert not [name for name in host.API if not hasattr(platform, name)]


def test_the_api_is_declared_once_and_only_host_py_chooses_a_platform_module():
    assert len(set(host.API)) == len(host.API)
    for platform in (host_posix, host_windows):
        assert "__all__" not in top_level_names(platform)     # a second list would drift
    choosers = [p.relative_to(REPO).as_posix() for p in sorted((REPO / "shim").rglob("*.py"))
                if "import host_posix" in p.read_text() or "import host_windows" in p.read_text()]
    assert choosers == ["shim/host.py"]


def test_shim_code_uses_no_host_name_outside_the_api():
    used = set()
    for path in (REPO / "shim").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "host":
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and node.module == "shim.host":
                used.update(a.name for a in node.names)
    assert used and used <= set(host.API), sorted(used - set(host.API))
    assert all(getattr(host, name) is getattr(host_posix, name) for name in host.API)


@pytest.mark.skipif(not host_posix._PROC_CHILDREN, reason="needs /proc/PID/task/TID/children (Linux)")
def test_a_spawned_tools_peak_is_its_anonymous_memory_not_the_file_pages_it_maps(tmp_path):
    # The tool maps a 64 MiB file and reads every page of it (resident, but page cache: shared,
    # charged to a cgroup once, whoever maps it), and touches 32 MiB of its own. Its peak is
    # the 32 MiB and the interpreter's private pages, not the 96 MiB its RSS reaches.
    import sys
    data = tmp_path / "data"
    data.write_bytes(b"\1" * (64 << 20))
    script = ("import mmap, time\n"
              "f = open(%r, 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n"
              "total = sum(m[i] for i in range(0, len(m), 4096))\n"
              "own = bytearray(32 << 20)\n"
              "for i in range(0, len(own), 4096): own[i] = 1\n"
              "time.sleep(0.5)\n" % str(data))
    finished = host_posix.spawn_program(sys.executable, [sys.executable, "-c", script], {}, sample_tree=True)
    assert finished.code == 0
    assert 32 << 20 <= finished.max_rss < 80 << 20, finished.max_rss >> 20
