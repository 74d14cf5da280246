"""End to end: the Snakemake workflow and the DVC pipeline on a tiny overlay config.

Each test copies the project (Snakefile, rules, config, sources, demo data) into a temp
folder, so that edits there (config, code mtimes) touch nothing of the checkout.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

TINY = {
    "seeds": [0],
    "runtime": {"device": "cpu", "channels_last": False, "threads": 1},
    "data": {"cifar10": {"subset": {"train_per_class": 8, "test_per_class": 4, "seed": 0}}},
    "search": {"run": ["darts_1st"], "settings": {"epochs": 1, "init_channels": 2, "layers": 3, "batch_size": 20}},
    "retrain": {"epochs": 1, "init_channels": 4, "layers": 3, "batch_size": 40},
}
TARGET = "results/tables/cifar10.csv"
BIN = Path(sys.executable).parent


def copy_project(dest: Path) -> Path:
    for name in ("Snakefile", "workflow", "config", "src", "data", ".dvcignore"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / name)
    (dest / "config" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return dest


def env():
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def snakemake(project: Path, *args: str, configfiles=("config/demo.yaml", "config/tiny.yaml"), target=TARGET):
    cmd = [str(BIN / "snakemake"), target, "--cores", "2", "--configfile", *configfiles, *args]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env())


def planned_jobs(result) -> dict[str, int]:
    """Rule -> job count from a dry run's 'Job stats' table."""
    assert result.returncode == 0, result.stderr + result.stdout
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("wf"))
    result = snakemake(project)
    assert result.returncode == 0, result.stderr[-3000:]
    return project


def test_chain_produces_the_table(project):
    import pandas as pd

    table = pd.read_csv(project / TARGET)
    assert list(table["search_method"]) == ["darts_1st"] and list(table["selection_method"]) == ["magnitude"]
    assert 0 <= table["test_error_mean"][0] <= 100
    assert table["search_cost_unit"][0] == "CPU-hours" and table["search_cost"][0] > 0
    for log in ("data/cifar10", "search/cifar10/darts_1st/seed0", "retrain/cifar10/darts_1st/magnitude/seed0"):
        assert (project / "logs" / f"{log}.log").exists()


def test_second_run_has_nothing_to_do(project):
    assert planned_jobs(snakemake(project, "-n")) == {}


def edit_config(project: Path, change: dict) -> None:
    path = project / "config" / "tiny.yaml"
    from pipeline.config import deep_merge

    path.write_text(yaml.safe_dump(deep_merge(TINY, change)))


def test_selection_setting_reruns_select_retrain_tables_not_search(project):
    edit_config(project, {"select": {"methods": {"magnitude": {"algorithm": "magnitude", "exclude_ops": ["none", "skip_connect"]}}}})
    try:
        jobs = planned_jobs(snakemake(project, "-n"))
    finally:
        edit_config(project, {})
    assert set(jobs) == {"select", "retrain", "tables"}


def test_retrain_epochs_rerun_retrain_and_tables_only(project):
    edit_config(project, {"retrain": {"epochs": 2}})
    try:
        jobs = planned_jobs(snakemake(project, "-n"))
    finally:
        edit_config(project, {})
    assert set(jobs) == {"retrain", "tables"}


def test_editing_search_code_reruns_search(project):
    source = project / "src" / "pipeline" / "search" / "darts.py"
    original = source.read_text()
    source.write_text(original + "\n# an edit\n")
    try:
        jobs = planned_jobs(snakemake(project, "-n"))
    finally:
        source.write_text(original)
    assert "search" in jobs and "prepare_data" not in jobs


@pytest.mark.parametrize(
    "overlay, message",
    [
        ({"retrain": {"epochs": "many"}}, "config error: config key 'retrain.epochs': 'many' is not of type 'integer'"),
        ({"search": {"settings": {"epoch": 1}}}, "config error: config key 'search.settings.epoch': unknown key"),
        ({"data": {"cifar10": {"source": {"train": "data/none.tar.gz"}}}}, "config error: config key 'data.cifar10.source.train': file not found: data/none.tar.gz"),
    ],
)
def test_bad_config_fails_before_any_job_and_writes_nothing(tmp_path, overlay, message):
    project = copy_project(tmp_path)
    (project / "config" / "bad.yaml").write_text(yaml.safe_dump(overlay))
    result = snakemake(project, configfiles=("config/demo.yaml", "config/tiny.yaml", "config/bad.yaml"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [message]
    assert not (project / "results").exists() and not (project / "logs").exists()


def test_dvc_repro_runs_the_chain_and_then_is_a_no_op(tmp_path):
    project = copy_project(tmp_path)
    run = lambda *cmd: subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env())
    assert run("git", "init", "-q").returncode == 0
    assert run(str(BIN / "dvc"), "init", "-q").returncode == 0
    gen = run(str(BIN / "python"), "-m", "pipeline", "dvc-yaml", "--config", "config/config.yaml", "--config", "config/demo.yaml",
              "--config", "config/tiny.yaml", "--out", "dvc.yaml")
    assert gen.returncode == 0, gen.stderr
    first = run(str(BIN / "dvc"), "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (project / TARGET).exists()
    second = run(str(BIN / "dvc"), "repro")
    assert second.returncode == 0
    assert "Running stage" not in second.stdout
    status = run(str(BIN / "dvc"), "status")
    assert "up to date" in status.stdout
    # Changing a retrain setting reruns retrain and tables only.
    edit_config(project, {"retrain": {"epochs": 2}})
    third = run(str(BIN / "dvc"), "repro")
    ran = set(re.findall(r"Running stage '([^']+)'", third.stdout))
    assert ran == {"retrain_cifar10_darts_1st_magnitude_seed0", "tables_cifar10", "tables_latency_cifar10"}, third.stdout


LATENCY_TABLE = "results/tables/latency/cifar10.csv"


def test_latency_target_measures_filters_and_tables(project):
    import pandas as pd

    result = snakemake(project, target=LATENCY_TABLE)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(project / LATENCY_TABLE)
    assert table["latency_ms"][0] > 0 and table["latency_passed"][0] in ("0/1", "1/1")
    assert table["latency_source"][0].startswith("measure ")
    assert (project / "logs/latency/cifar10/darts_1st/magnitude/seed0.log").exists()
    assert planned_jobs(snakemake(project, "-n", target=LATENCY_TABLE)) == {}
    # The target is the filter's: changing it reruns the filter and the table, not the timing.
    edit_config(project, {"latency": {"target_ms": 1000.0}})
    try:
        jobs = planned_jobs(snakemake(project, "-n", target=LATENCY_TABLE))
    finally:
        edit_config(project, {})
    assert set(jobs) == {"latency_filter", "tables_latency"}


def test_committed_dvc_yaml_matches_the_config():
    from pipeline.dvc import render_dvc_yaml

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        expected = render_dvc_yaml(["config/config.yaml", "config/demo.yaml"])
    finally:
        os.chdir(cwd)
    assert (REPO / "dvc.yaml").read_text() == expected


def test_snakemake_lint_and_snakefmt_are_clean():
    lint = subprocess.run([str(BIN / "snakemake"), "--lint", "--configfile", "config/demo.yaml"], cwd=REPO, capture_output=True, text=True, env=env())
    assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, lint.stdout[-2000:]
    fmt = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"], cwd=REPO, capture_output=True, text=True, env=env())
    assert fmt.returncode == 0, fmt.stderr


def test_html_report_holds_the_table(project):
    result = snakemake(project, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-2000:]
    html = (project / "report.html").read_text()
    assert "cifar10.csv" in html and "Tables" in html


def test_imagenet_table_target_transfers_the_searched_cells(project):
    """With an ImageFolder configured, `snakemake results/tables/imagenet.csv` trains the
    existing genotypes on it and writes the transfer table; the default target stays the
    CIFAR table (transfer.enabled is false)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    folder = project / "data" / "tiny_imagenet"
    for split, per_class in (("train", 4), ("val", 2)):
        for label in range(3):
            (folder / split / f"class{label}").mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                pixels = np.full((24, 24, 3), 40 * label + index, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / f"class{label}" / f"{index}.png")
    overlay = {
        "data": {"imagenet": {"source": {"format": "imagefolder", "train": "data/tiny_imagenet/train", "test": "data/tiny_imagenet/val"}}},
        "transfer": {"epochs": 1, "layers": 3, "multiply_adds_budget": 300000, "batch_size": 6, "auxiliary_weight": 0.0,
                     "train_resolution": 32, "eval_resize": 36, "eval_resolution": 32, "eval_batch_size": 6, "workers": 0},
    }
    (project / "config" / "imagenet.yaml").write_text(yaml.safe_dump(overlay))
    configfiles = ["--configfile", "config/demo.yaml", "config/tiny.yaml", "config/imagenet.yaml"]
    run = lambda *args: subprocess.run([str(BIN / "snakemake"), *args, "--cores", "2", *configfiles],  # noqa: E731
                                       cwd=project, capture_output=True, text=True, env=env())
    assert planned_jobs(run("-n")) == {}  # not in the default target
    result = run("results/tables/imagenet.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule transfer:" in result.stderr and "rule search:" not in result.stderr  # the genotypes were there
    table = pd.read_csv(project / "results" / "tables" / "imagenet.csv")
    assert list(table["search_method"]) == ["darts_1st"] and table["source_dataset"][0] == "cifar10"
    assert table["multiply_adds_m"][0] <= 0.3 and int(table["init_channels"][0]) % 2 == 0
    assert 0 <= table["top1_error_mean"][0] <= 100
    assert planned_jobs(run("-n", "results/tables/imagenet.csv")) == {}
