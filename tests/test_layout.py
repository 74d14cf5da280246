"""The package's layout is a contract: layers import only downwards, no module imports in a
circle, a stage is imported by the command line only, and no module takes another's private
names. The graph is read from the sources (every import, also inside functions), so a
test fails as soon as an import breaks the rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top: a module may import its own package and the layers below its own.
LAYERS = (
    ("pipeline", "pipeline.errors", "pipeline.known_data", "pipeline.gpus", "pipeline.lazy"),
    ("pipeline.registry", "pipeline.runtime", "pipeline.config", "pipeline.artifacts"),
    ("pipeline.benchmarks", "pipeline.nets"),
    ("pipeline.spaces",),
    ("pipeline.training",),
    ("pipeline.search",),
    ("pipeline.select",),
    ("pipeline.stages",),
    ("pipeline.views",),
    ("pipeline.planning",),
    ("pipeline.cli", "pipeline.__main__"),
)
# The library module each command runs: only the command line imports it.
STAGE_MODULES = ("pipeline.stages.", "pipeline.search.run", "pipeline.select.run")
ENTRY_POINTS = ("pipeline.cli", "pipeline.__main__")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(src: Path = SRC) -> dict[str, dict[str, set[str]]]:
    """module -> {imported module -> names taken from it}, inside the ``pipeline`` package."""
    modules = {module_name(p, src): p for p in (src / "pipeline").rglob("*.py")}
    graph: dict[str, dict[str, set[str]]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, set[str]] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        edges.setdefault(alias.name, set())
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:  # `from pipeline import artifacts`
                        edges.setdefault(f"{base}.{alias.name}", set())
                    elif base in modules:
                        edges.setdefault(base, set()).add(alias.name)
        edges.pop(name, None)
        graph[name] = edges
    return graph


def layer_of(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "pipeline" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{module}: in no layer of tests/test_layout.py's LAYERS")
    return best[0]


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    problems = [f"import circle: {' -> '.join(c)}" for c in cycles(graph)]
    for module, edges in sorted(graph.items()):
        for target, names in sorted(edges.items()):
            same_package = package_of(module) == package_of(target)
            if not same_package and layer_of(target) > layer_of(module):
                problems.append(f"{module} imports {target}, a higher layer")
            if target.startswith(STAGE_MODULES) and module not in ENTRY_POINTS:
                problems.append(f"{module} imports the stage module {target} (only the command line may)")
            private = sorted(n for n in names if n.startswith("_") and not n.startswith("__"))
            if private:
                problems.append(f"{module} takes private {', '.join(private)} from {target}")
    return problems


def test_the_package_has_no_import_circles_and_imports_only_downwards():
    assert violations(import_graph()) == []


def test_each_rule_reaches_its_stage_module_in_three_hops():
    """rule -> `pipeline <command>` -> the command's function in cli.py -> the stage (or view)
    module whose function it imports and calls."""
    import argparse
    import inspect
    import re
    import textwrap

    from pipeline.cli import build_parser

    rules = "\n".join(p.read_text() for p in sorted((SRC.parent / "workflow" / "rules").glob("*.smk")))
    commands = set(re.findall(r"\bpipeline ([a-z][a-z-]*)", rules))
    assert {"data", "search", "select", "retrain", "transfer", "tables", "latency"} <= commands
    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for command in sorted(commands):
        function = subparsers.choices[command].get_default("func")
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        reached = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith((*STAGE_MODULES, "pipeline.views."))
            for alias in node.names
            if (alias.asname or alias.name) in called
        }
        assert reached, f"pipeline {command}: {function.__name__} calls no stage or view module's function"


def test_every_module_is_in_a_layer():
    for module in import_graph():
        layer_of(module)


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"views/a.py": "from pipeline.views import b\n", "views/b.py": "def f():\n    from pipeline.views import a\n"}, "import circle"),
        ({"nets/n.py": "from pipeline.search.s import x\n", "search/s.py": "x = 1\n"}, "a higher layer"),
        ({"stages/one.py": "from pipeline.stages.two import run\n", "stages/two.py": "run = 1\n"}, "stage module"),
        ({"nets/n.py": "from pipeline.nets.m import _helper\n", "nets/m.py": "_helper = 1\n"}, "private _helper"),
    ],
)
def test_the_checks_catch_each_kind_of_violation(tmp_path, files, expected):
    packages = {f"{name}/__init__.py": "" for name in ("views", "nets", "search", "stages")}
    for name, text in {"__init__.py": "", **packages, **files}.items():
        path = tmp_path / "pipeline" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    problems = violations(import_graph(tmp_path))
    assert any(expected in problem for problem in problems), problems
