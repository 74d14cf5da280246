"""The CLI's help, planning (the Snakefile's config check and job files), check-config and
the registries' declarations import no torch (fast to start)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


def imported_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("command", [[], ["search"], ["check-config"], ["params"], ["dvc-yaml"]])
def test_help_imports_no_torch(command):
    code = (
        "from pipeline.cli import main\n"
        "try:\n"
        f"    main({command + ['--help']!r})\n"
        "except SystemExit:\n"
        "    pass"
    )
    assert "torch" not in imported_after(code)


def test_job_graph_modules_import_no_torch():
    assert "torch" not in imported_after("import pipeline.planning.jobs, pipeline.planning.codedeps, pipeline.planning.dvc")


REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "h5py")  # what planning must not pay for


def workflow_imports() -> list[str]:
    """The ``pipeline`` import statements of the Snakefile and its rule files, as written."""
    pattern = re.compile(r"^(from pipeline[\w.]* import (?:\([^)]*\)|[^\n]*)|import pipeline[\w.]*)", re.M)
    sources = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    return [match for path in sources for match in pattern.findall(path.read_text())]


def test_planning_imports_no_torch(tmp_path):
    """What the Snakefile runs before any job: its imports, the config check and the job files."""
    imports = workflow_imports()
    assert any("validate_config" in line for line in imports)  # the pattern finds the real imports
    code = "\n".join(imports) + (
        "\nfrom pipeline.config import load_config"
        f"\nconfig = load_config([{str(REPO / 'config/config.yaml')!r}, {str(REPO / 'config/demo.yaml')!r}])"
        "\nvalidate_config(config)"
        f"\nwrite_job_files(config, {str(tmp_path)!r}, repo={str(REPO)!r})"
    )
    loaded = imported_after(code)
    assert (tmp_path / "results").is_dir()  # the job files were written
    assert not loaded & set(HEAVY)


def test_check_config_imports_no_torch():
    configs = ["--config", str(REPO / "config/config.yaml"), "--config", str(REPO / "config/demo.yaml")]
    code = (
        "from pipeline.cli import main\n"
        "try:\n"
        f"    main({['check-config', *configs]!r})\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code"
    )
    assert not imported_after(code) & set(HEAVY)


def test_method_declarations_import_no_torch():
    """Every registered method's options and flags, and every space's, read without torch."""
    code = (
        "from pipeline.registry import registries\n"
        "search, select, spaces, latency = registries('search', 'select', 'spaces', 'benchmarks.latency')\n"
        "for registry in (search.METHODS, select.METHODS):\n"
        "    for name in registry.names():\n"
        "        registry.get(name).OPTIONS\n"
        "for name in spaces.SPACES.names():\n"
        "    space = spaces.get_space(name)\n"
        "    space.cell_graph, space.darts_cells, space.benchmark, space.arch_shape()\n"
        "assert search.METHODS.names() and select.METHODS.names() and latency.LOOKUPS.names()"
    )
    assert not imported_after(code) & set(HEAVY)
