"""The jobs a config asks for, and the files that decide when each one reruns.

One function of the config (``job_files``) gives every job its parameters file, the
effective parameters after all overlays (``config.stage_params``), and every stage kind
its code file, the SHA-256 of each source and data file it runs (``codedeps``). Both are
written under ``results/params`` only when their content changes (``write_job_files``).
Every Snakemake rule and every DVC stage lists its job's two files as inputs, beside the
artifacts it reads, and runs the stage CLI with ``--params-file``: a job reruns in either
tool exactly when its parameters, its code or its input artifacts change.

Snakemake writes the files while it reads the workflow; DVC's first stage (``params``)
does, from the same config files. Only the standard library, PyYAML and the config
module are imported here: planning does not import torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import PATHS, judged_by_benchmark, launch_gpus, selections_for, stage_params
from pipeline.planning import codedeps

PARAMS_ROOT = "results/params"
PARAMS = {
    "data": PARAMS_ROOT + "/data/{dataset}.json",
    "search": PARAMS_ROOT + "/search/{dataset}/{search}/seed{seed}.json",
    "select": PARAMS_ROOT + "/select/{dataset}/{search}/{select}/seed{seed}.json",
    "retrain": PARAMS_ROOT + "/retrain/{dataset}/{search}/{select}/seed{seed}.json",
    "latency": PARAMS_ROOT + "/latency/{dataset}/{search}/{select}/seed{seed}.json",
    "latency_filter": PARAMS_ROOT + "/latency_filter/{dataset}.json",
    "tables": PARAMS_ROOT + "/tables/{dataset}.json",
    "transfer": PARAMS_ROOT + "/transfer/{target}/{dataset}/{search}/{select}/seed{seed}.json",
}
CODE = PARAMS_ROOT + "/code/{stage}.json"
# Kinds with one job per run: a DVC foreach template each (the others are written out).
TEMPLATED = ("search", "select", "retrain", "latency", "transfer")


def code_path(stage: str) -> str:
    return CODE.format(stage=stage)


@dataclass
class Job:
    """One job: its stage kind, its name within the kind, what it reads and writes."""

    kind: str  # the Snakemake rule (and DVC stage kind): tables_latency runs the 'tables' stage
    name: str  # unique within the kind: "cifar10.darts_1st.magnitude.seed0"
    stage: str
    params: str  # its parameters file ("": the stage takes none, e.g. table_html)
    deps: list[str] = field(default_factory=list)  # artifacts and source data it reads
    outs: list[str] = field(default_factory=list)
    args: str = ""  # the stage CLI's arguments besides --params-file

    @property
    def code(self) -> str:
        return code_path(self.stage)

    @property
    def dvc_name(self) -> str:
        """The DVC stage: ``search@cifar10.darts_1st.seed0`` (foreach) or ``tables_cifar10``."""
        return f"{self.kind}{'@' if self.kind in TEMPLATED else '_'}{self.name}"


def search_runs(config: dict, seeds: list[int], dataset: str | None = None):
    """Every (search method, selection method, seed) run on ``dataset`` (default: the
    config's) as wildcard values, selections per search method: the one expansion the
    DVC jobs here and the Snakefile's input functions (workflow/rules/common.smk) use."""
    dataset = dataset or config["dataset"]
    for search in config["search"]["run"]:
        for select in selections_for(config, search):
            for seed in seeds:
                yield {"dataset": dataset, "search": search, "select": select, "seed": seed}


def _data_sources(config: dict, dataset: str) -> list[str]:
    source = config["data"][dataset]["source"]
    return sorted({source[key] for key in ("train", "test", "root") if key in source})


def jobs(config: dict) -> list[Job]:
    """The jobs of the default target, the latency table (with a 'latency' block) and the
    transfer table (when ``transfer.enabled``): the DVC pipeline's stages."""
    dataset = config["dataset"]
    data = PATHS["data"].format(dataset=dataset)
    out: list[Job] = [
        Job("data", dataset, "data", PARAMS["data"].format(dataset=dataset), _data_sources(config, dataset), [data], f"--out {data}")
    ]
    for search in config["search"]["run"]:
        for seed in config["seeds"]:
            keys = {"dataset": dataset, "search": search, "seed": seed}
            out_dir = PATHS["search_dir"].format(**keys)
            out.append(Job(
                "search", f"{dataset}.{search}.seed{seed}", "search", PARAMS["search"].format(**keys), [data],
                [f"{out_dir}/supernet.pt", f"{out_dir}/metrics.h5"], f"--data {data} --out-dir {out_dir}",
            ))
    metrics, genotypes, latency = [], [], []
    for keys in search_runs(config, config["seeds"]):
        name = "{dataset}.{search}.{select}.seed{seed}".format(**keys)
        supernet = PATHS["search_dir"].format(**keys) + "/supernet.pt"
        genotype, decisions = PATHS["genotype"].format(**keys), PATHS["decisions"].format(**keys)
        out.append(Job(
            "select", name, "select", PARAMS["select"].format(**keys), [supernet, data], [genotype, decisions],
            f"--supernet {supernet} --data {data} --out {genotype} --decisions {decisions}",
        ))
        if judged_by_benchmark(config, keys["search"]):  # the benchmark's accuracy, no retraining
            genotypes.append(genotype)
        else:
            retrain_dir = PATHS["retrain_dir"].format(**keys)
            out.append(Job(
                "retrain", name, "retrain", PARAMS["retrain"].format(**keys), [genotype, data],
                [f"{retrain_dir}/model.pt", f"{retrain_dir}/metrics.h5"], f"--genotype {genotype} --data {data} --out-dir {retrain_dir}",
            ))
            metrics.append(f"{retrain_dir}/metrics.h5")
        if "latency" in config:
            record = PATHS["latency"].format(**keys)
            measure = config["latency"]["method"] == "measure"
            out.append(Job(
                "latency", name, "latency", PARAMS["latency"].format(**keys), [genotype] + ([data] if measure else []), [record],
                f"--genotype {genotype}" + (f" --data {data}" if measure else "") + f" --out {record}",
            ))
            latency.append(record)
    table, table_metrics = PATHS["table"].format(dataset=dataset), PATHS["table_metrics"].format(dataset=dataset)
    tables_params = PARAMS["tables"].format(dataset=dataset)
    judged = f" --genotypes {' '.join(genotypes)}" if genotypes else ""
    out.append(Job("tables", dataset, "tables", tables_params, metrics + genotypes, [table, table_metrics],
                   f"--out {table} --metrics-out {table_metrics} " + " ".join(metrics) + judged))
    table_html = PATHS["table_html"].format(dataset=dataset)  # the report's first page
    out.append(Job("table_html", dataset, "table_html", "", [table], [table_html],
                   f"{table} --out {table_html} --title 'Results: {dataset}'"))
    if "latency" in config:
        filter_out = PATHS["latency_filter"].format(dataset=dataset)
        out.append(Job("latency_filter", dataset, "latency_filter", PARAMS["latency_filter"].format(dataset=dataset), latency,
                       [filter_out], f"--out {filter_out} " + " ".join(latency)))
        latency_table = PATHS["latency_table"].format(dataset=dataset)
        out.append(Job("tables_latency", dataset, "tables", tables_params, metrics + genotypes + [filter_out], [latency_table],
                       f"--latency {filter_out} --out {latency_table} " + " ".join(metrics) + judged))
    transfer = config.get("transfer")
    if transfer is not None and transfer["enabled"]:
        out.extend(_transfer_jobs(config))
    return out


@dataclass
class JobKind:
    """A stage kind of the job graph: its jobs and where their inputs come from."""

    kind: str
    names: list[str]  # its jobs' DVC names
    reads: list[str]  # kinds whose outputs its jobs read, in the graph's order
    sources: list[str]  # files no job writes (source data)


def kind_graph(all_jobs: list[Job]) -> list[JobKind]:
    """The job graph folded by kind, in the order the kinds first appear (upstream first):
    what ``dvc dag`` draws with one box per job, one line per kind."""
    producers = {out: job.kind for job in all_jobs for out in job.outs}
    kinds: dict[str, JobKind] = {}
    for job in all_jobs:
        entry = kinds.setdefault(job.kind, JobKind(job.kind, [], [], []))
        entry.names.append(job.dvc_name)
        for dep in job.deps:
            target = entry.reads if dep in producers else entry.sources
            name = producers.get(dep, dep)
            if name not in target:
                target.append(name)
    order = list(kinds)
    for entry in kinds.values():
        entry.reads.sort(key=order.index)
    return list(kinds.values())


def _transfer_jobs(config: dict) -> list[Job]:
    target = config["transfer"]["dataset"]
    out, metrics = [], []
    for keys in search_runs(config, config["transfer"]["seeds"]):
        genotype = PATHS["genotype"].format(**keys)
        out_dir = PATHS["transfer_dir"].format(target=target, **keys)
        out.append(Job(
            "transfer", "{t}.{dataset}.{search}.{select}.seed{seed}".format(t=target, **keys), "transfer",
            PARAMS["transfer"].format(target=target, **keys), [genotype] + _data_sources(config, target),
            [f"{out_dir}/model.pt", f"{out_dir}/metrics.h5"], f"--genotype {genotype} --out-dir {out_dir}",
        ))
        metrics.append(f"{out_dir}/metrics.h5")
    table = PATHS["table"].format(dataset=target)
    out.append(Job("transfer_tables", target, "tables", PARAMS["tables"].format(dataset=target), metrics, [table],
                   f"--out {table} " + " ".join(metrics)))
    return out


def _params_of(config: dict) -> dict[str, dict[str, Any]]:
    """Parameters file -> content, for every job the config can run: the chain of every
    data entry (Snakemake can target e.g. results/tables/cifar100.csv; the DVC pipeline
    runs the default dataset's), and the transfer jobs whenever a 'transfer' block names a
    data entry."""
    files: dict[str, dict[str, Any]] = {}
    transfer = config.get("transfer")
    target = transfer["dataset"] if transfer is not None and transfer["dataset"] in config["data"] else None
    for dataset in config["data"]:
        if dataset != target or dataset == config["dataset"]:
            files.update(_chain_params(config, dataset))
    if target is not None:
        for keys in search_runs(config, transfer["seeds"]):
            files[PARAMS["transfer"].format(target=target, **keys)] = stage_params(config, "transfer", dataset=target, seed=keys["seed"])
        files[PARAMS["tables"].format(dataset=target)] = stage_params(config, "tables", dataset=target)
    return files


def _chain_params(config: dict, dataset: str) -> dict[str, dict[str, Any]]:
    """The parameters files of one dataset's chain: data, search, select, retrain, latency, tables."""
    files = {PARAMS["data"].format(dataset=dataset): stage_params(config, "data", dataset=dataset)}
    for search in config["search"]["run"]:
        for seed in config["seeds"]:
            keys = {"dataset": dataset, "search": search, "seed": seed}
            files[PARAMS["search"].format(**keys)] = stage_params(config, "search", dataset=dataset, method=search, seed=seed)
    for keys in search_runs(config, config["seeds"], dataset):
        files[PARAMS["select"].format(**keys)] = stage_params(config, "select", dataset=dataset, method=keys["select"], seed=keys["seed"])
        files[PARAMS["retrain"].format(**keys)] = stage_params(config, "retrain", dataset=dataset, seed=keys["seed"])
        if "latency" in config:
            files[PARAMS["latency"].format(**keys)] = stage_params(config, "latency", dataset=dataset, seed=keys["seed"])
    files[PARAMS["tables"].format(dataset=dataset)] = stage_params(config, "tables", dataset=dataset)
    if "latency" in config:
        files[PARAMS["latency_filter"].format(dataset=dataset)] = stage_params(config, "latency_filter", dataset=dataset)
    return files


def job_files(config: dict, repo: str | Path = codedeps.REPO) -> dict[str, str]:
    """Relative path -> text of every parameters file and stage code file."""
    files = {path: json.dumps(params, indent=1, sort_keys=True) + "\n" for path, params in _params_of(config).items()}
    for stage in codedeps.STAGE_ENTRY:
        files[code_path(stage)] = codedeps.manifest_text(stage, repo)
    return files


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError, IsADirectoryError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return True


def write_job_files(config: dict, workdir: str | Path = ".", repo: str | Path | None = None) -> list[str]:
    """Write the job files under ``workdir`` (those whose content changed) and remove the
    ones of jobs the config no longer has; return the paths written."""
    workdir = Path(workdir)
    files = job_files(config, workdir if repo is None else repo)
    written = [path for path, text in sorted(files.items()) if _write_if_changed(workdir / path, text)]
    root = workdir / PARAMS_ROOT
    for stale in sorted(root.rglob("*")) if root.is_dir() else []:
        if stale.is_file() and stale.relative_to(workdir).as_posix() not in files:
            stale.unlink()
    return written


def launcher(config: dict, stage: str) -> str:
    """`python`, or torchrun with one process per GPU when the stage asks for more than one."""
    gpus = launch_gpus(config, stage)
    return "python" if gpus == 1 else f"torchrun --standalone --nproc_per_node {gpus}"
