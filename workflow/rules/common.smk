# Config validation, paths and helpers shared by every rule.
import json
import sys
from pathlib import Path

from pipeline.planning.cluster import RESOURCE_KEYS, job_resources
from pipeline.benchmarks.nb201 import DATASETS as NB201_DATASETS
from pipeline.config import (
    PATHS,
    ConfigError,
    search_settings,
    judged_by_benchmark,
    launch_gpus,
    selections_for,
    validate_config,
)
from pipeline.planning.jobs import PARAMS, code_path, write_job_files

try:
    validate_config(config)
    # Each job's parameters file and each stage's code file, rewritten only when their
    # content changes: every rule reads its job's two files, as every DVC stage does.
    write_job_files(config, ".", repo=workflow.basedir)
except ConfigError as exc:
    # One line naming the key or file, before any job starts.
    sys.stderr.write(f"config error: {exc}\n")
    sys.exit(1)

THREADS = config["runtime"]["threads"]

DATA = PATHS["data"]
SEARCH_DIR = PATHS["search_dir"]
GENOTYPE = PATHS["genotype"]
DECISIONS = PATHS["decisions"]
RETRAIN_DIR = PATHS["retrain_dir"]
TRANSFER_DIR = PATHS["transfer_dir"]


wildcard_constraints:
    dataset="[a-z0-9_]+",
    target="[a-z0-9_]+",
    search="[A-Za-z0-9_-]+",
    select="[A-Za-z0-9_-]+",
    seed="[0-9]+",


def data_source_files(wildcards):
    """Local source files of a dataset: replacing them reruns the data stage."""
    source = config["data"][wildcards.dataset]["source"]
    paths = [source[key] for key in ("train", "test", "root") if key in source]
    return sorted({path for path in paths if Path(path).exists()})


def table_path(dataset):
    return PATHS["table"].format(dataset=dataset)


def retrain_metrics(wildcards):
    """Every retrained (search, selection, seed) result of the dataset; selections per search method."""
    return [
        path
        for search in config["search"]["run"]
        if not judged_by_benchmark(config, search)
        for path in expand(
            f"{RETRAIN_DIR}/metrics.h5",
            dataset=wildcards.dataset,
            search=search,
            select=selections_for(config, search),
            seed=config["seeds"],
        )
    ]


def benchmark_genotypes(wildcards):
    """The cells judged by their benchmark instead of retrained (benchmarks.nb201.retrain: false)."""
    return [
        path
        for search in config["search"]["run"]
        if judged_by_benchmark(config, search)
        for path in expand(
            GENOTYPE,
            dataset=wildcards.dataset,
            search=search,
            select=selections_for(config, search),
            seed=config["seeds"],
        )
    ]


def ground_truth_searches(dataset):
    """The nb201 searches on a dataset the benchmark has: they record a ground truth per epoch."""
    if dataset not in NB201_DATASETS:
        return []
    return [
        search
        for search in config["search"]["run"]
        if search_settings(config, search)["space"] == "nb201"
    ]


def ground_truth_inputs(wildcards):
    """Their search metrics and their selections' genotypes, for the ground-truth plot."""
    searches = ground_truth_searches(wildcards.dataset)
    keys = dict(dataset=wildcards.dataset, seed=config["seeds"])
    return {
        "metrics": [
            path
            for search in searches
            for path in expand(f"{SEARCH_DIR}/metrics.h5", search=search, **keys)
        ],
        "genotypes": [
            path
            for search in searches
            for path in expand(
                GENOTYPE, search=search, select=selections_for(config, search), **keys
            )
        ],
    }


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


def slurm_resources(stage):
    """SLURM resources of the stage's jobs from config 'cluster' (--profile slurm)."""
    if stage == "select":  # the selection method decides: GPU when it runs the network
        return {
            key: lambda w, key=key: job_resources(config, stage, w.select)[key]
            for key in RESOURCE_KEYS
        }
    resources = job_resources(config, stage)
    if stage in ("retrain", "transfer"):  # DDP: one GPU per torchrun process
        resources["gpu"] = gpu_resource(stage) or None
    return {key: value for key, value in resources.items() if value is not None}


def report_category(wildcards):
    """Report grouping: dataset and the search's space (a method may search its own space)."""
    space = search_settings(config, wildcards.search)["space"]
    return f"{wildcards.dataset}, {space} space"


def report_figures(dataset):
    """The table as HTML, every picture and plot folder of the configured runs (the default target's)."""
    figures = [PATHS["table_html"].format(dataset=dataset)]
    for search in config["search"]["run"]:
        keys = dict(
            dataset=dataset,
            search=search,
            select=selections_for(config, search),
            seed=config["seeds"],
        )
        figures += expand(PATHS["search_plots"], **keys)
        figures += expand(PATHS["genotype_picture"], **keys)
        figures += expand(PATHS["decisions_plot"], **keys)
        if not judged_by_benchmark(config, search):
            figures += expand(PATHS["retrain_plots"], **keys)
    if ground_truth_searches(dataset):
        figures.append(PATHS["ground_truth_plot"].format(dataset=dataset))
    return figures


def launcher(stage):
    """`python`, or torchrun with one process per GPU when the stage asks for more than one."""
    gpus = launch_gpus(config, stage)
    if gpus == 1:
        return "python"
    return f"torchrun --standalone --nproc_per_node {gpus}"


def gpu_resource(stage):
    """GPUs a job of the stage reserves (the Slurm executor's `gpu` resource); none on CPU."""
    return 0 if config["runtime"]["device"] == "cpu" else launch_gpus(config, stage)


def transfer_source_dirs(wildcards):
    """The ImageFolder directories (their mtimes: replacing one reruns the job)."""
    source = config["data"][wildcards.target]["source"]
    return sorted(
        {source[split] for split in ("train", "test") if Path(source[split]).exists()}
    )


def transfer_metrics(wildcards):
    """Every transferred (search, selection, seed) result; selections per search method."""
    return [
        path
        for search in config["search"]["run"]
        for path in expand(
            f"{TRANSFER_DIR}/metrics.h5",
            target=config["transfer"]["dataset"],
            dataset=config["dataset"],
            search=search,
            select=selections_for(config, search),
            seed=config["transfer"]["seeds"],
        )
    ]


def transfer_targets():
    """The transfer table, when the config puts it in the default target."""
    if config["transfer"]["enabled"]:
        return [table_path(config["transfer"]["dataset"])]
    return []
