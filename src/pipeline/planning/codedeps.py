"""The code each stage runs, derived from the imports of its entry modules.

A stage's code is the transitive closure, inside ``src/pipeline``, of the imports of its
entry modules (module-level and inside functions: a lazy import still runs), plus:

- every module of a registry package (a package whose ``__init__`` calls
  ``import_submodules``, which imports the modules that register; the others, helpers
  and a stage's entry, count too: a superset, cheaper to derive than the exact set);
- the data files a module reads: a file under ``src/pipeline`` that is not Python counts
  when a string literal in the module ends with its name (``"pixel1_mobile_lut.yaml"``,
  ``"schemas/config.schema.json"``).

Imports made through ``registry.registries`` (the whole-config checks in ``config.py``
that look methods up by name) are not edges: what they decide reaches a job through its
parameters file, and a stage that runs a method imports its registry itself.

Only the standard library is imported here, so planning stays cheap.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

PACKAGE = "pipeline"
# The repository whose src/pipeline is read: this package's own, or another checkout's
# (the workflow passes its own folder, so that a copied project reads its own sources).
REPO = Path(__file__).resolve().parents[3]
# Every stage runs through `python -m pipeline <stage>`: these and their imports count.
CLI_MODULES = ("pipeline", "pipeline.__main__", "pipeline.cli")

# The library module each stage's command runs (``pipeline.cli`` imports it lazily).
STAGE_ENTRY = {
    "data": ("pipeline.stages.data",),
    "search": ("pipeline.search.run",),
    "select": ("pipeline.select.run",),
    "retrain": ("pipeline.stages.retrain",),
    "transfer": ("pipeline.stages.transfer",),
    "tables": ("pipeline.stages.tables",),
    "latency": ("pipeline.stages.latency",),
    "latency_filter": ("pipeline.stages.latency",),
    "plots": ("pipeline.views.plots", "pipeline.views.pictures"),
    "table_html": ("pipeline.artifacts", "pipeline.views.display"),
}


def _module_file(name: str, repo: Path) -> Path | None:
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    base = repo.joinpath("src", PACKAGE, *parts)
    if base.is_dir() and (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path, repo: Path) -> str:
    parts = list(path.relative_to(repo / "src").with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _data_files(repo: Path) -> tuple[Path, ...]:
    return tuple(
        sorted(
            p for p in (repo / "src" / PACKAGE).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts and p.name != "README.md"
        )
    )


def _direct(path: Path, repo: Path) -> tuple[frozenset[str], frozenset[Path]]:
    stat = path.stat()
    return _parsed(path, repo, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _parsed(path: Path, repo: Path, mtime_ns: int, size: int) -> tuple[frozenset[str], frozenset[Path]]:
    """(pipeline modules imported in the file, data files it names). The CLI's own imports
    count at module level only: each command imports its stage's library (STAGE_ENTRY)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path, repo)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules: set[str] = set()
    strings: list[str] = []
    nodes = tree.body if name in CLI_MODULES else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            modules.add(source)
            # `from pipeline import search`: search may be a module or a package
            modules.update(f"{source}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "import_submodules":
            modules.update(_module_name(p, repo) for p in sorted(path.parent.glob("*.py")) if not p.name.startswith("_"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
    found = {module for module in modules if _module_file(module, repo) is not None}
    # a submodule import implies its parent packages' __init__ runs
    for module in list(found):
        parts = module.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    data = {f for f in _data_files(repo) for s in strings if s.endswith(f.name) and len(s) < 300}
    return frozenset(found), frozenset(data)


def closure(entries: tuple[str, ...] | list[str], repo: Path = REPO) -> list[str]:
    """Source and data files (relative to the repository root) that ``entries`` run."""
    repo = Path(repo).resolve()
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module, repo)
        if path is None:
            raise ValueError(f"{module}: not a module under {repo / 'src'}")
        files.add(path)
        modules, data = _direct(path, repo)
        files.update(data)
        todo.extend(modules - seen)
        # importing a module runs its parent packages' __init__ first
        todo.extend(module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1))
    return sorted(p.relative_to(repo).as_posix() for p in files)


def stage_code(stage: str, repo: Path = REPO) -> list[str]:
    """The files whose edit reruns a job of ``stage``, relative to the repository root."""
    return closure((*CLI_MODULES, *STAGE_ENTRY[stage]), repo)


def manifest_text(stage: str, repo: Path = REPO) -> str:
    """The stage's code input: relative path -> SHA-256 of each of its files."""
    repo = Path(repo)
    files = {path: hashlib.sha256((repo / path).read_bytes()).hexdigest() for path in stage_code(stage, repo)}
    return json.dumps({"stage": stage, "files": files}, indent=1, sort_keys=True) + "\n"
