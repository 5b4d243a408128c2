"""The package's shape, as rules: the hot path is exactly what lies directly in shim/, click
lives only under shim/cli/ (the driver and bench/ import none of it), nothing imports in a
circle, the step record is declared once, and the paths the code names exist."""

import ast
import json
import re
import sys

import pytest

from conftest import REPO, run_shim
from shim import hotpath
from shim.reports import fields, records

PACKAGE = REPO / "shim"


def module_name(path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str):
    """Every shim module *name* imports, at module level or inside a function."""
    return {n for n in imported_anywhere(MODULES[name]) if n in MODULES and n != name}


def test_the_modules_directly_in_shim_are_exactly_the_hot_path():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    hot = {"__init__" if m == "shim" else m.split(".", 1)[1] for m in hotpath.MODULES}
    assert top == hot | set(hotpath.ALSO_TOP_LEVEL)
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == {"cli", "config", "driver", "generators", "reports"}
    assert {"shim." + name for name in subpackages} <= set(pyproject_packages())   # shipped in the wheel


def pyproject_packages() -> list:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["packages"]


def imported_anywhere(path) -> set:
    """Every module *path* imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update("%s.%s" % (node.module, a.name) for a in node.names)
    return found


def click_modules(imported: set) -> set:
    """What of *imported* is click, or a module under shim/cli (each of which imports click)."""
    return {n for n in imported if n.split(".")[0] == "click" or n.startswith("shim.cli")}


def test_click_is_imported_only_under_shim_cli():
    users = {name for name, path in MODULES.items() if "click" in {
        a.name.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
        for a in (node.names if isinstance(node, ast.Import) else [])}}
    assert users and all(name.startswith("shim.cli.") for name in users), sorted(users)


def test_the_build_driver_and_the_benchmarks_import_no_click_module():
    paths = sorted((PACKAGE / "driver").glob("*.py")) + sorted((REPO / "bench").glob("*.py"))
    assert len(paths) > 5
    for path in paths:
        assert not click_modules(imported_anywhere(path)), path
    # shim cargo's and shim go's commands stand in front of their drivers, not of shim build's
    # command: what they share is shim/cli/wrapped.py
    for name in ("cargo.py", "go.py"):
        assert click_modules(imported_anywhere(PACKAGE / "cli" / name)) <= {"click", "shim.cli", "shim.cli.wrapped"}


def test_no_module_imports_itself_back_through_others():
    graph = {name: imports_of(name) for name in MODULES}
    state = {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import cycle: " + " -> ".join(path + [name])
        state[name] = "open"
        for dep in sorted(graph[name]):
            visit(dep, path + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_hot_modules_import_only_hot_modules_at_module_level():
    hot = set(hotpath.MODULES)
    for name in hot:
        tree = ast.parse(MODULES[name].read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shim"):
                targets = {node.module} | {"%s.%s" % (node.module, a.name) for a in node.names}
                assert targets & set(MODULES) <= hot, (name, node.module)


def test_the_step_schema_is_derived_from_the_one_declaration():
    schema = fields.step_schema()
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(records.STEP_KEYS) == [f.name for f in fields.FIELDS]
    assert set(fields.TERMINAL) | set(fields.HTML) <= set(fields.COLUMNS)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["exec", "spawn"])
def test_every_key_a_real_build_writes_is_declared(example, env, mode):
    result = run_shim(["build", "-C", example, "--mode", mode], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (example / ".shim" / "ledger-v1.jsonl").read_text().splitlines()[1:]
    written = {key for line in lines for key in json.loads(line)}
    declared = {f.ledger or f.name for f in fields.FIELDS} | set(records._LEDGER_ONLY) | {"rec"}
    assert written <= declared, sorted(written - declared)
    assert all(records.valid(json.loads(line)) for line in lines)


# `shim/cli/build.py`, `shim/driver/` as docstrings and comments name them; not `.shim/bin`
# (a build dir's) nor `$XDG_CONFIG_HOME/shim/...` (a user's).
SHIM_PATH = re.compile(r"(?<![\w./$~-])shim/(?:[A-Za-z_]\w*/)*[A-Za-z_]\w*\.py\b")


def test_every_shim_path_the_code_names_exists():
    stale = []
    for path in sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "bench").glob("*.py")) + sorted(
            (REPO / "tests").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stale += ["%s:%d: %s" % (path.relative_to(REPO), number, named)
                      for named in SHIM_PATH.findall(line) if not (REPO / named).is_file()]
    assert not stale
