"""The hot path's import budget (shim/hotpath.py), enforced on a real step."""

import ast
import marshal
import subprocess
import sys
from importlib.util import MAGIC_NUMBER

import pytest

from conftest import REPO, SHIM
from shim import hotpath

pytestmark = pytest.mark.e2e          # a real step under -X importtime


def imports_of(argv, env, cwd):
    """Modules a Python run imported, from -X importtime (stderr)."""
    result = subprocess.run([sys.executable, "-X", "importtime"] + argv, env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":
                names.add(name)
    return result, names


@pytest.fixture
def step(tmp_path, env):
    (tmp_path / "x.c").write_text("int x;\n")
    baseline = imports_of(["-I", "-S", "-c", "pass"], env, tmp_path)[1]

    def run(mode, debug=False):
        e = dict(env, SHIM_MODE=mode)
        if debug:
            e["SHIM_DEBUG"] = "1"     # the launcher then imports module by module, as without a bundle
        argv = ["-I", "-S", str(SHIM), "cc", "-c", "x.c", "-o", "x.o"]
        imports_of(argv, e, tmp_path)                  # warm the toolchain cache
        result, names = imports_of(argv, e, tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        return names - baseline
    return run


@pytest.mark.parametrize("debug", [False, True], ids=["bundle", "module-by-module"])
def test_an_exec_step_imports_only_the_declared_modules(step, debug):
    extra = step("exec", debug)
    assert extra <= hotpath.STDLIB | set(hotpath.MODULES), sorted(extra - hotpath.STDLIB - set(hotpath.MODULES))
    assert not extra & hotpath.FORBIDDEN
    if debug:
        assert "shim.step" in extra          # proves the check saw shim's own imports
    else:
        assert not any(n.startswith("shim") for n in extra)   # all of it came from the bundle


def test_a_spawn_step_adds_only_resource(step):
    extra = step("spawn", debug=True)
    allowed = hotpath.STDLIB | hotpath.SPAWN_STDLIB | set(hotpath.MODULES)
    assert extra <= allowed, sorted(extra - allowed)


def test_the_installed_bundle_holds_exactly_the_hot_path_modules_for_this_python():
    data = (SHIM.parent.parent / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages" / "shim"
            / hotpath.BUNDLE_NAME).read_bytes()
    assert data[:4] == MAGIC_NUMBER
    _boot, mods = marshal.loads(data[4:])
    assert tuple(name for name, _path, _code in mods) == hotpath.MODULES


def test_hot_path_modules_are_listed_after_the_modules_they_import():
    order = {name: i for i, name in enumerate(hotpath.MODULES)}
    for name in hotpath.MODULES:
        path = REPO / (name.replace(".", "/") + ("/__init__.py" if name == "shim" else ".py"))
        for node in ast.parse(path.read_text()).body:       # module level only: what runs at import
            deps = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shim"):
                deps = [node.module] if node.module != "shim" else [
                    "shim." + a.name if (REPO / "shim" / (a.name + ".py")).exists() else "shim"
                    for a in node.names]
            elif isinstance(node, ast.Import):
                deps = [a.name for a in node.names if a.name.startswith("shim")]
            elif isinstance(node, ast.If):      # shim/host.py picks its platform module
                continue
            for dep in set(deps) - {name}:
                assert dep in order, "%s imports %s, which is not in hotpath.MODULES" % (name, dep)
                assert order[dep] < order[name], "%s must come after %s" % (name, dep)
