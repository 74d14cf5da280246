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
    validate_config,
)
from pipeline.planning.jobs import PARAMS, code_path, search_runs, write_job_files

try:
    validate_config(config)
    # Each job's parameters file and each stage's code file, rewritten only when their
    # content changes: every rule reads its job's two files, as every DVC stage does.
    write_job_files(config, ".", repo=workflow.basedir)
except ConfigError as exc:
    # One line naming the key or file, before any job starts.
    sys.stderr.write(f"config error: {exc}\n")
    sys.exit(1)

# Cores Snakemake reserves per job; the job computes with runtime.threads from its
# parameters file (CPU numbers depend on the count), not with what Snakemake grants.
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


def runs(dataset, seeds=None, judged=None):
    """The (search, selection, seed) runs on ``dataset`` as wildcard values, expanded as
    the DVC jobs are (pipeline.planning.jobs.search_runs). ``seeds``: the config's by
    default; ``judged`` True/False: only runs judged by the benchmark / retrained."""
    seeds = config["seeds"] if seeds is None else seeds
    return [
        run
        for run in search_runs(config, seeds, dataset)
        if judged is None or judged_by_benchmark(config, run["search"]) == judged
    ]


def run_paths(pattern, runs, **keys):
    """``pattern`` filled in for each run (and ``keys``), each distinct path once, in order."""
    return list(dict.fromkeys(pattern.format(**run, **keys) for run in runs))


def retrain_metrics(wildcards):
    """Every retrained (search, selection, seed) result of the dataset."""
    return run_paths(f"{RETRAIN_DIR}/metrics.h5", runs(wildcards.dataset, judged=False))


def benchmark_genotypes(wildcards):
    """The cells judged by their benchmark instead of retrained (benchmarks.nb201.retrain: false)."""
    return run_paths(GENOTYPE, runs(wildcards.dataset, judged=True))


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
    mine = [run for run in runs(wildcards.dataset) if run["search"] in searches]
    return {
        "metrics": run_paths(f"{SEARCH_DIR}/metrics.h5", mine),
        "genotypes": run_paths(GENOTYPE, mine),
    }


def latency_inputs(wildcards):
    """'measure' reads the prepared data (classes, image size); 'lookup' only the genotype."""
    if config["latency"]["method"] == "measure":
        return {"data": DATA.format(dataset=wildcards.dataset)}
    return {}


def latency_files(wildcards):
    """The latency of every (search, selection, seed) architecture of the dataset."""
    return run_paths(PATHS["latency"], runs(wildcards.dataset))


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
        mine = [run for run in runs(dataset) if run["search"] == search]
        figures += run_paths(PATHS["search_plots"], mine)
        figures += run_paths(PATHS["genotype_picture"], mine)
        figures += run_paths(PATHS["decisions_plot"], mine)
        if not judged_by_benchmark(config, search):
            figures += run_paths(PATHS["retrain_plots"], mine)
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
    """Every transferred (search, selection, seed) result: the searched cells of the config's
    dataset, genotypes of the transfer seeds."""
    transferred = runs(config["dataset"], seeds=config["transfer"]["seeds"])
    return run_paths(
        f"{TRANSFER_DIR}/metrics.h5", transferred, target=config["transfer"]["dataset"]
    )


def transfer_targets():
    """The transfer table, when the config puts it in the default target."""
    if config["transfer"]["enabled"]:
        return [table_path(config["transfer"]["dataset"])]
    return []
