"""End to end: the Snakemake workflow and the DVC pipeline on a tiny overlay config.

Each test copies the project (Snakefile, rules, config, sources, demo data) into a temp
folder, so that edits there (config, code mtimes) touch nothing of the checkout.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
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
    "select": {"run_for": {"darts_1st": ["magnitude"]}},  # not the demo's PT runs
    "retrain": {"epochs": 1, "init_channels": 4, "layers": 3, "batch_size": 40},
}
TARGET = "results/tables/cifar10.csv"
BIN = Path(sys.executable).parent


def copy_project(dest: Path) -> Path:
    for name in ("Snakefile", "workflow", "profiles", "slurm", "config", "src", "data", ".dvcignore", ".dvc/config", ".dvc/.gitignore"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / "config" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return dest


def env():
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def snakemake(project: Path, *args: str, configfiles=("config/demo.yaml", "config/tiny.yaml"), targets=(TARGET,)):
    """``targets=()``: the default target, everything including pictures and plots."""
    cmd = [str(BIN / "snakemake"), *targets, "--cores", "2", "--configfile", *configfiles, *args]
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
    result = snakemake(project, targets=())
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
    assert planned_jobs(snakemake(project, "-n", targets=())) == {}  # pictures and plots too


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


def test_cluster_resources_rerun_nothing(project):
    edit_config(project, {"cluster": {"gpu": {"mem_mb": 4000, "gpu_model": "a100"}, "rules": {"tables": {"runtime": 5}}}})
    try:
        jobs = planned_jobs(snakemake(project, "-n"))
    finally:
        edit_config(project, {})
    assert jobs == {}


def test_editing_search_code_reruns_search_and_downstream_only(project):
    source = project / "src" / "pipeline" / "search" / "darts.py"
    original = source.read_text()
    source.write_text(original + "\n# an edit\n")
    try:
        jobs = planned_jobs(snakemake(project, "-n"))
    finally:
        source.write_text(original)
    assert set(jobs) == {"search", "select", "retrain", "tables"}


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
    def run(*cmd):
        return subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env())
    assert run("git", "init", "-q").returncode == 0  # .dvc/ comes with the project, as in a clone
    configs = ["--config", "config/config.yaml", "--config", "config/demo.yaml", "--config", "config/tiny.yaml"]
    gen = run(str(BIN / "python"), "-m", "pipeline", "dvc-yaml", *configs, "--out", "dvc.yaml")
    assert gen.returncode == 0, gen.stderr
    stages = 1 + len(run(str(BIN / "python"), "-m", "pipeline", "jobs", *configs).stdout.splitlines())  # and 'params'
    fresh = run(str(BIN / "python"), "-m", "pipeline", "status").stdout.splitlines()
    assert fresh[0] == f"{stages} of {stages} stages are not up to date (dvc status):"
    kinds = [line for line in fresh if line.startswith("  ")]  # one per stage kind: how many of its stages
    assert all(line.endswith("never run") for line in kinds) and sum(int(line.split()[1].split("/")[0]) for line in kinds) == stages
    first = run(str(BIN / "dvc"), "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (project / TARGET).exists()
    second = run(str(BIN / "dvc"), "repro")
    assert second.returncode == 0
    assert "Running stage" not in second.stdout
    status = run(str(BIN / "dvc"), "status")
    assert "up to date" in status.stdout
    assert run(str(BIN / "python"), "-m", "pipeline", "status").stdout == f"Data and pipelines are up to date ({stages} stages).\n"
    table = project / TARGET

    def html_if_table_changed(before: bytes) -> set[str]:
        # The table's HTML page reruns exactly when the table's content changed.
        return {"table_html_cifar10"} if table.read_bytes() != before else set()

    # Changing a retrain setting reruns retrain and tables only.
    edit_config(project, {"retrain": {"epochs": 2}})
    changed = run(str(BIN / "python"), "-m", "pipeline", "status").stdout.splitlines()
    assert changed[0] == f"1 of {stages} stages are not up to date (dvc status):" and changed[1].split() == ["params", "1/1", "inputs", "changed"]
    rewrite = re.search(r"`(python -m pipeline params [^`]+)` rewrites", changed[-1])[1]  # as the status names it
    assert run(*rewrite.replace("python", str(BIN / "python"), 1).split()).returncode == 0
    named = [line for line in run(str(BIN / "python"), "-m", "pipeline", "status").stdout.splitlines() if line.startswith("  ")]
    assert [line.split()[:2] for line in named] == [["params", "1/1"], ["retrain", "1/1"]], named
    assert named[1].endswith("parameters changed")
    before = table.read_bytes()
    third = run(str(BIN / "dvc"), "repro")
    ran = set(re.findall(r"Running stage '([^']+)'", third.stdout))
    # 'params' rewrites the jobs' parameters files; only the retrain job's changed
    assert ran == {"params", "retrain@cifar10.darts_1st.magnitude.seed0", "tables_cifar10", "tables_latency_cifar10"} | html_if_table_changed(before), third.stdout
    # Editing a stage's module reruns that stage and what depends on it.
    module = project / "src" / "pipeline" / "select" / "magnitude.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    before = table.read_bytes()
    fourth = run(str(BIN / "dvc"), "repro")
    ran = set(re.findall(r"Running stage '([^']+)'", fourth.stdout))
    run_name = "cifar10.darts_1st.magnitude.seed0"
    assert ran == {"params", f"select@{run_name}", f"retrain@{run_name}", f"latency@{run_name}", "tables_cifar10",
                   "latency_filter_cifar10", "tables_latency_cifar10"} | html_if_table_changed(before), fourth.stdout
    assert "up to date" in run(str(BIN / "dvc"), "status").stdout
    # A key of config/demo.yaml itself (the overlay under tiny.yaml): only the latency jobs.
    demo = project / "config" / "demo.yaml"
    original = demo.read_text()
    from pipeline.config import deep_merge

    repeats = (yaml.safe_load(original).get("latency", {}).get("measure", {}).get("repeats") or 10) + 1
    demo.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(original), {"latency": {"measure": {"repeats": repeats}}})))
    fifth = run(str(BIN / "dvc"), "repro")
    demo.write_text(original)
    ran = set(re.findall(r"Running stage '([^']+)'", fifth.stdout))
    assert ran == {"params", f"latency@{run_name}", "latency_filter_cifar10", "tables_latency_cifar10"}, fifth.stdout
    # A new seed is a new job: every entry point refuses until dvc.yaml is regenerated.
    edit_config(project, {"seeds": [0, 1]})
    refused = run(str(BIN / "dvc"), "repro")
    assert refused.returncode != 0 and "pipeline dvc-yaml --config config/config.yaml" in refused.stdout + refused.stderr
    assert "Running stage 'search" not in refused.stdout
    edit_config(project, {})
    metrics = run(str(BIN / "dvc"), "metrics", "show", "--json")
    assert "test_error_mean" in metrics.stdout, metrics.stdout + metrics.stderr


LATENCY_TABLE = "results/tables/latency/cifar10.csv"
LATENCY_PLOT = "results/tables/latency/cifar10.svg"


def test_latency_target_measures_filters_and_tables(project):
    import pandas as pd

    result = snakemake(project, targets=(LATENCY_TABLE, LATENCY_PLOT))
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(project / LATENCY_TABLE)
    plot = (project / LATENCY_PLOT).read_text()
    assert ">darts_1st+magnitude<" in plot and f">target {table['latency_target_ms'][0]:g} ms<" in plot
    assert table["latency_ms"][0] > 0 and table["latency_passed"][0] in ("0/1", "1/1")
    assert table["latency_source"][0].startswith("measure ")
    assert (project / "logs/latency/cifar10/darts_1st/magnitude/seed0.log").exists()
    assert planned_jobs(snakemake(project, "-n", targets=(LATENCY_TABLE,))) == {}
    # The target is the filter's: changing it reruns the filter and the table, not the timing.
    edit_config(project, {"latency": {"target_ms": 1000.0}})
    try:
        jobs = planned_jobs(snakemake(project, "-n", targets=(LATENCY_TABLE,)))
    finally:
        edit_config(project, {})
    assert set(jobs) == {"latency_filter", "tables_latency"}


def file_digests(root: Path) -> dict[str, str]:
    """Digests of the DVC stages' outputs (pictures and plots are Snakemake's alone)."""
    import hashlib

    def versioned(p: Path) -> bool:
        return p.is_file() and p.name != ".gitignore" and "plots" not in p.parts and p.suffix != ".svg"

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if versioned(p)}


def test_dvc_push_pull_restores_outputs_and_snakemake_then_has_nothing_to_do(project):
    """Outputs made by Snakemake, versioned by DVC, restored into an empty cache."""
    def run(*cmd):
        return subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env())
    dvc = str(BIN / "dvc")
    assert run("git", "init", "-q").returncode == 0
    assert snakemake(project, targets=(LATENCY_TABLE,)).returncode == 0  # outputs of every DVC stage
    gen = run(str(BIN / "python"), "-m", "pipeline", "dvc-yaml", "--config", "config/config.yaml", "--config", "config/demo.yaml",
              "--config", "config/tiny.yaml", "--out", "dvc.yaml")
    assert gen.returncode == 0, gen.stderr
    commit = run(dvc, "commit", "--force")  # record Snakemake's outputs in dvc.lock, running nothing
    assert commit.returncode == 0, commit.stderr
    assert "up to date" in run(dvc, "status").stdout
    push = run(dvc, "push")  # to the default remote in .dvc/config, beside the project
    assert push.returncode == 0, push.stdout + push.stderr
    before = file_digests(project / "results")

    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "results")
    pull = run(dvc, "pull")
    assert pull.returncode == 0, pull.stdout + pull.stderr
    assert file_digests(project / "results") == before
    # Checkout writes files in no particular order: make the prepared data the newest.
    data = project / "results" / "data" / "cifar10.pt"
    later = time.time() + 5
    os.utime(data, (later, later))
    assert planned_jobs(snakemake(project, "-n")) == {}
    # That holds because the default workflow profile lets Snakemake checksum these files;
    # with a limit below their sizes (as Snakemake's 1 MB default is for real ones) the
    # checkout would rerun everything downstream of the data.
    rerun = planned_jobs(snakemake(project, "-n", "--max-checksum-file-size", "1000"))
    assert set(rerun) == {"search", "select", "retrain", "tables"}
    # Pictures and plots are not DVC outputs: the default target draws them again, and only them.
    redraw = snakemake(project, targets=())
    assert redraw.returncode == 0, redraw.stderr[-3000:]
    assert "rule search:" not in redraw.stderr and "rule retrain:" not in redraw.stderr


def test_committed_dvc_yaml_matches_the_config():
    from pipeline.planning.dvc import render_dvc_yaml

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


def report_data(html: str) -> tuple[dict, dict]:
    """The report's result records (path -> record) and categories (category -> subcategory -> paths)."""
    def script(name: str):
        return json.loads(re.search(rf'<script id="{name}">\s*var {name} = (.*?);\n', html, flags=re.S).group(1))

    return script("results"), script("categories")


def workflow_description(html: str) -> str:
    """The report's first page (its workflow description) as HTML."""
    return json.loads(re.search(r"var workflow_desc = (.*?);\n", html, flags=re.S).group(1))


def embedded(record: dict) -> str:
    return base64.b64decode(record["data_uri"].split(",", 1)[1]).decode()


def test_html_report_holds_every_table_picture_and_plot(project):
    result = snakemake(project, "--report", "report.html", targets=())
    assert result.returncode == 0, result.stderr[-2000:]
    results, categories = report_data((project / "report.html").read_text())
    search = "results/search/cifar10/darts_1st/seed0/plots"
    chosen = "results/select/cifar10/darts_1st/magnitude/seed0"
    retrain = "results/retrain/cifar10/darts_1st/magnitude/seed0/plots"
    assert {cat: {sub: sorted(paths) for sub, paths in subs.items()} for cat, subs in categories.items()} == {
        "Tables": {"Other": [TARGET, "results/tables/cifar10.html"]},
        "cifar10, darts space": {
            "darts_1st": [f"{search}/alpha_normal.svg", f"{search}/alpha_reduce.svg", f"{search}/curves.svg"],
            "darts_1st + magnitude": [f"{retrain}/curves.svg", f"{chosen}/decisions.svg", f"{chosen}/genotype.svg"],
        },
    }
    assert embedded(results[TARGET]) == (project / TARGET).read_text()
    assert embedded(results["results/tables/cifar10.html"]) in workflow_description((project / "report.html").read_text())
    assert results[f"{chosen}/genotype.svg"]["labels"] == {"figure": "cells", "seed": "0"}
    assert "magnitude selected" in results[f"{chosen}/genotype.svg"]["caption"]
    picture = embedded(results[f"{chosen}/genotype.svg"])
    genotype = json.loads((project / chosen / "genotype.json").read_text())
    for cell in genotype["cells"].values():
        for edge in cell["edges"]:
            assert f">{edge['op']}<" in picture  # every op of the selected cells is drawn
    decisions = embedded(results[f"{chosen}/decisions.svg"])
    for cell in genotype["cells"].values():
        for edge in cell["edges"]:
            assert f">{edge['op']}<" in decisions  # each kept op is named at its decision
    assert "magnitude" in results[f"{chosen}/decisions.svg"]["caption"]
    assert ">valid_acc<" in embedded(results[f"{search}/curves.svg"])
    assert ">test_acc<" in embedded(results[f"{retrain}/curves.svg"])
    assert ">c_{k-2} → 0<" in embedded(results[f"{search}/alpha_normal.svg"])


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


NB201_TINY = {
    "seeds": [0, 1],
    "runtime": {"device": "cpu", "channels_last": False, "threads": 1},
    "data": {"cifar10": {"subset": {"train_per_class": 8, "test_per_class": 4, "seed": 0}}},
    "search": {
        "run": ["darts_1st_nb201", "darts_1st"],
        "settings": {"epochs": 1, "init_channels": 2, "layers": 3, "batch_size": 20},
        "methods": {"darts_1st_nb201": {"settings": {"epochs": 2, "init_channels": 2, "layers": 5, "subset_per_class": None}}},
    },
    "select": {"run_for": {"darts_1st_nb201": ["magnitude", "trainfree"], "darts_1st": ["magnitude"]}},
    "retrain": {"epochs": 1, "init_channels": 4, "layers": 3, "batch_size": 40},
}


def test_demo_judges_nb201_cells_by_the_benchmark_and_the_report_opens_on_the_table(tmp_path):
    """The demo's shape (config/demo.yaml) at tiny scale: nb201 cells judged by the benchmark,
    not retrained; a DARTS cell retrained; the report's first page holds the table as HTML,
    with the table's values, and the ground-truth plot."""
    import pandas as pd

    from pipeline import artifacts
    from pipeline.benchmarks import nb201

    overlay = {**NB201_TINY, "select": {**NB201_TINY["select"], "methods": {"trainfree": {"samples": 2, "batch_size": 16}}}}
    project = copy_project(tmp_path)
    (project / "config" / "tiny.yaml").write_text(yaml.safe_dump(overlay))
    result = snakemake(project, targets=())
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (project / "results" / "retrain" / "cifar10" / "darts_1st_nb201").exists()  # judged, not retrained
    table = pd.read_csv(project / TARGET).set_index(["search_method", "selection_method"])
    assert sorted(table.index) == [("darts_1st", "magnitude"), ("darts_1st_nb201", "magnitude"), ("darts_1st_nb201", "trainfree")]
    for selection in ("magnitude", "trainfree"):
        texts = [json.loads((project / f"results/select/cifar10/darts_1st_nb201/{selection}/seed{seed}/genotype.json").read_text())
                 ["provenance"]["genotype_text"] for seed in (0, 1)]
        mean = sum(nb201.lookup(text).cifar10_test_200ep for text in texts) / 2
        assert table.loc[("darts_1st_nb201", selection), "benchmark_test_acc_mean"] == pytest.approx(mean, abs=1e-3)
        assert pd.isna(table.loc[("darts_1st_nb201", selection), "test_error_mean"])
    assert 0 <= table.loc[("darts_1st", "magnitude"), "test_error_mean"] <= 100
    # The search's last-epoch record is its magnitude pick's accuracy.
    for seed in (0, 1):
        record = artifacts.read_metrics(project / f"results/search/cifar10/darts_1st_nb201/seed{seed}/metrics.h5").epochs
        pick = json.loads((project / f"results/select/cifar10/darts_1st_nb201/magnitude/seed{seed}/genotype.json").read_text())
        assert record["benchmark_test_acc"][-1] == pytest.approx(pick["provenance"]["benchmark_test_acc"])

    report = snakemake(project, "--report", "report.html", targets=())
    assert report.returncode == 0, report.stderr[-2000:]
    html = (project / "report.html").read_text()
    first_page = workflow_description(html)
    assert first_page.index('<table class="results">') < first_page.index("<svg")  # the table first, then the plot
    cells = re.findall(r"<td[^>]*>(.*?)</td>", first_page)
    for (search, selection), row in table.iterrows():
        assert search in cells and selection in cells
        for column in ("benchmark_test_acc_mean", "test_error_mean", "test_error_best"):
            if not pd.isna(row[column]):
                assert f"{row[column]:.2f}" in cells
    assert "darts_1st_nb201 + magnitude, per epoch (2 seeds)" in first_page
    results, categories = report_data(html)
    assert sorted(categories["Tables"]["Other"]) == ["results/tables/cifar10.csv", "results/tables/cifar10.html", "results/tables/cifar10_ground_truth.svg"]
