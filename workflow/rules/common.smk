# Config validation, paths and helpers shared by every rule.
import json
import sys
from pathlib import Path

from pipeline.config import (
    PATHS,
    STAGE_CODE,
    ConfigError,
    selections_for,
    stage_params,
    validate_config,
)

try:
    validate_config(config)
except ConfigError as exc:
    # One line naming the key or file, before any job starts.
    sys.stderr.write(f"config error: {exc}\n")
    sys.exit(1)

SRC = Path(workflow.basedir) / "src" / "pipeline"
THREADS = config["runtime"]["threads"]

DATA = PATHS["data"]
SEARCH_DIR = PATHS["search_dir"]
GENOTYPE = PATHS["genotype"]
DECISIONS = PATHS["decisions"]
RETRAIN_DIR = PATHS["retrain_dir"]


wildcard_constraints:
    dataset="[a-z0-9_]+",
    search="[A-Za-z0-9_-]+",
    select="[A-Za-z0-9_-]+",
    seed="[0-9]+",


def code_files(stage):
    """Library sources the stage runs: editing them reruns it (mtime trigger)."""
    files = []
    for name in STAGE_CODE[stage]:
        path = SRC / name
        files.extend(
            sorted(str(p) for p in path.glob("*.py")) if path.is_dir() else [str(path)]
        )
    return files


def data_source_files(wildcards):
    """Local source files of a dataset: replacing them reruns the data stage."""
    source = config["data"][wildcards.dataset]["source"]
    paths = [source[key] for key in ("train", "test", "root") if key in source]
    return sorted({path for path in paths if Path(path).exists()})


def stage_json(stage, wildcards, **keys):
    """The job's own parameters; Snakemake reruns the job when they change."""
    params = stage_params(config, stage, dataset=wildcards.dataset, **keys)
    return json.dumps(params, sort_keys=True)


def table_path(dataset):
    return PATHS["table"].format(dataset=dataset)


def retrain_metrics(wildcards):
    """Every (search, selection, seed) result of the dataset; selections per search method."""
    return [
        path
        for search in config["search"]["run"]
        for path in expand(
            f"{RETRAIN_DIR}/metrics.h5",
            dataset=wildcards.dataset,
            search=search,
            select=selections_for(config, search),
            seed=config["seeds"],
        )
    ]


def latency_inputs(wildcards):
    """'measure' reads the prepared data (classes, image size); 'lookup' only the genotype."""
    if config["latency"]["method"] == "measure":
        return {"data": DATA.format(dataset=wildcards.dataset)}
    return {}


def latency_files(wildcards):
    """The latency of every (search, selection, seed) architecture of the dataset."""
    return [
        path
        for search in config["search"]["run"]
        for path in expand(
            PATHS["latency"],
            dataset=wildcards.dataset,
            search=search,
            select=selections_for(config, search),
            seed=config["seeds"],
        )
    ]
