"""The CLI's help, the job graph and dvc.yaml's renderer import no torch (fast to start)."""

import json
import subprocess
import sys

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
