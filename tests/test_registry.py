import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from pipeline import search, select, spaces
from pipeline.registry import Registry, UnknownNameError


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownNameError) as info:
        spaces.get_space("dartz")
    assert "unknown search space 'dartz'" in str(info.value)
    assert "darts" in str(info.value)


def test_registries_hold_the_foundation_methods():
    assert "darts" in search.METHODS
    assert "magnitude" in select.METHODS
    assert "darts" in spaces.SPACES


def test_double_registration_is_an_error():
    registry = Registry("thing")
    registry.register("a")(object())
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(object())


def test_import_submodules_imports_the_modules_that_register(tmp_path, monkeypatch):
    """Registering modules are found without a list; helpers (a stage entry) stay unimported."""
    import importlib
    import sys

    package = tmp_path / "toyreg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from pipeline.registry import Registry, import_submodules\n"
        "THINGS = Registry('thing')\n"
        "import_submodules(__name__, __path__)\n"
    )
    (package / "one.py").write_text("from toyreg import THINGS\nTHINGS.register('one')(object())\n")
    (package / "helper.py").write_text("raise RuntimeError('a helper is imported by who uses it')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toyreg")
    try:
        assert toy.THINGS.names() == ["one"]
        assert "toyreg.helper" not in sys.modules
    finally:
        for name in [m for m in sys.modules if m == "toyreg" or m.startswith("toyreg.")]:
            del sys.modules[name]


REGISTRY_SNAPSHOT = """
import importlib, json, pkgutil, sys
import pipeline
from pipeline.registry import Registry

if sys.argv[1] == "all":
    for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if not info.name.endswith("__main__"):  # runs the command line
            importlib.import_module(info.name)
else:
    for name in json.loads(sys.argv[1]):
        importlib.import_module(name)
found = {}
for module in list(sys.modules.values()):
    for value in vars(module).values() if getattr(module, "__name__", "").startswith("pipeline.") else ():
        if isinstance(value, Registry):
            found.setdefault(value.kind, {"names": value.names(), "held_by": []})["held_by"].append(module.__name__)
print(json.dumps(found))
"""


def registry_snapshots(*arguments: str) -> list[dict]:
    """Per argument, registry kind -> its names and the modules holding it, after importing
    ``argument`` ("all": every module of the package; else a JSON list of modules)."""
    snapshots = []
    for argument in arguments:
        run = subprocess.run([sys.executable, "-c", REGISTRY_SNAPSHOT, argument], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        snapshots.append(json.loads(run.stdout))
    return snapshots


PACKAGE = REPO / "src" / "pipeline"


def defines_a_registry(path: Path) -> bool:
    import ast

    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "Registry"
        for node in tree.body
    )


def test_importing_a_registry_collects_every_name_the_package_registers():
    """``import_submodules`` picks the registering modules by their source; a module that
    registered some other way would add its name only once something else imported it.
    Importing the modules that define the registries must give the names importing
    everything gives."""
    defining = sorted(
        f"pipeline.{path.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}".removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py") if defines_a_registry(path)
    )
    assert {"pipeline.search", "pipeline.select", "pipeline.spaces", "pipeline.benchmarks.latency"} <= set(defining)
    everything, alone = registry_snapshots("all", json.dumps(defining))
    assert len(everything) >= 5 and all(entry["names"] for entry in everything.values())
    assert {module for entry in everything.values() for module in entry["held_by"] if module in defining} == set(defining)
    assert {kind: entry["names"] for kind, entry in alone.items()} == {kind: entry["names"] for kind, entry in everything.items()}
