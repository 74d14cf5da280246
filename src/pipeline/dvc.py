"""Render dvc.yaml from the config: the same stages, CLIs and paths as the Snakemake rules.

Each stage lists as ``params`` exactly the config keys its parameters come from (per
config file, only the keys that file sets), so ``dvc repro`` reruns what changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from pipeline.config import (
    LAUNCH_KEYS,
    NUMERIC_RUNTIME,
    PATHS,
    STAGE_CODE,
    TRANSFER_SELECTION_KEYS,
    judged_by_benchmark,
    launch_gpus,
    load_config,
    read_yaml,
    selections_for,
)

CODE_ROOT = "src/pipeline"


def _has_key(tree: dict, dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _params(files: dict[str, dict], keys: Iterable[str]) -> list[dict[str, list[str]]]:
    listed = []
    for name, content in files.items():
        present = [key for key in keys if _has_key(content, key)]
        if present:
            listed.append({name: present})
    return listed


def _code(stage: str) -> list[str]:
    return [f"{CODE_ROOT}/{name}" for name in STAGE_CODE[stage]]


def _launcher(config: dict, stage: str) -> str:
    gpus = launch_gpus(config, stage)
    return "python" if gpus == 1 else f"torchrun --standalone --nproc_per_node {gpus}"


def _latency_stage(stages, cli, files, config, genotype, data_out, keys, select) -> str:
    """One architecture's latency; 'measure' also reads the data (classes, image size)."""
    out = PATHS["latency"].format(select=select, **keys)
    method = config["latency"]["method"]
    params = ["latency.method", f"latency.{method}"]
    deps, data_arg = [genotype], ""
    if method == "measure":
        params += ["retrain.init_channels", "retrain.layers"] + [f"runtime.{key}" for key in NUMERIC_RUNTIME]
        deps, data_arg = [genotype, data_out], f" --data {data_out}"
    stages[f"latency_{keys['dataset']}_{keys['search']}_{select}_seed{keys['seed']}"] = {
        "cmd": f"{cli.format(stage='latency')} --dataset {keys['dataset']} --seed {keys['seed']}"
        f" --genotype {genotype}{data_arg} --out {out}",
        "deps": deps + _code("latency"),
        "params": _params(files, params),
        "outs": [out],
    }
    return out


def _latency_table_stages(stages, cli, files, dataset, metrics, latency_files, genotypes) -> None:
    """The filter over every architecture's latency, and the table with latency columns."""
    filter_out = PATHS["latency_filter"].format(dataset=dataset)
    stages[f"latency_filter_{dataset}"] = {
        "cmd": f"{cli.format(stage='latency-filter')} --dataset {dataset} --out {filter_out} " + " ".join(latency_files),
        "deps": latency_files + _code("latency_filter"),
        "params": _params(files, ["latency.target_ms"]),
        "outs": [filter_out],
    }
    table = PATHS["latency_table"].format(dataset=dataset)
    stages[f"tables_latency_{dataset}"] = {
        "cmd": f"{cli.format(stage='tables')} --dataset {dataset} --latency {filter_out} --out {table} " + " ".join(metrics)
        + (f" --genotypes {' '.join(genotypes)}" if genotypes else ""),
        "deps": metrics + genotypes + [filter_out] + _code("tables"),
        "params": _params(files, ["benchmarks"]),
        "outs": [table],
    }


def render_dvc_yaml(config_paths: list[str]) -> str:
    config = load_config(config_paths)
    files = {str(path): read_yaml(path) for path in config_paths}
    configs = " ".join(f"--config {path}" for path in config_paths)
    cli = "python -m pipeline {stage} " + configs
    runtime_keys = [f"runtime.{key}" for key in NUMERIC_RUNTIME]
    dataset = config["dataset"]
    stages: dict[str, dict] = {}

    data_out = PATHS["data"].format(dataset=dataset)
    source = config["data"][dataset]["source"]
    source_files = sorted({source[split] for split in ("train", "test") if split in source})
    stages[f"data_{dataset}"] = {
        "cmd": f"{cli.format(stage='data')} --dataset {dataset} --out {data_out}",
        "deps": _code("data") + source_files,
        "params": _params(files, [f"data.{dataset}"]),
        "outs": [data_out],
    }
    metrics, genotypes, latency_files = [], [], []
    for search in config["search"]["run"]:
        for seed in config["seeds"]:
            keys = {"dataset": dataset, "search": search, "seed": seed}
            search_dir = PATHS["search_dir"].format(**keys)
            stages[f"search_{dataset}_{search}_seed{seed}"] = {
                "cmd": f"{cli.format(stage='search')} --dataset {dataset} --method {search} --seed {seed}"
                f" --data {data_out} --out-dir {search_dir}",
                "deps": [data_out] + _code("search"),
                "params": _params(files, ["search.settings", f"search.methods.{search}"] + runtime_keys),
                "outs": [f"{search_dir}/supernet.pt", f"{search_dir}/metrics.h5"],
            }
            for select in selections_for(config, search):
                genotype = PATHS["genotype"].format(select=select, **keys)
                decisions = PATHS["decisions"].format(select=select, **keys)
                retrain_dir = PATHS["retrain_dir"].format(select=select, **keys)
                stages[f"select_{dataset}_{search}_{select}_seed{seed}"] = {
                    "cmd": f"{cli.format(stage='select')} --dataset {dataset} --method {select} --seed {seed}"
                    f" --supernet {search_dir}/supernet.pt --data {data_out} --out {genotype} --decisions {decisions}",
                    "deps": [f"{search_dir}/supernet.pt", data_out] + _code("select"),
                    "params": _params(files, [f"select.methods.{select}"] + runtime_keys),
                    "outs": [genotype, decisions],
                }
                if judged_by_benchmark(config, search):  # the benchmark's accuracy, no retraining
                    genotypes.append(genotype)
                    if "latency" in config:
                        latency_files.append(_latency_stage(stages, cli, files, config, genotype, data_out, keys, select))
                    continue
                stages[f"retrain_{dataset}_{search}_{select}_seed{seed}"] = {
                    "cmd": f"{_launcher(config, 'retrain')} -m pipeline retrain {configs} --dataset {dataset} --seed {seed}"
                    f" --genotype {genotype} --data {data_out} --out-dir {retrain_dir}",
                    "deps": [genotype, data_out] + _code("retrain"),
                    "params": _params(files, ["retrain"] + runtime_keys),
                    "outs": [f"{retrain_dir}/model.pt", f"{retrain_dir}/metrics.h5"],
                }
                metrics.append(f"{retrain_dir}/metrics.h5")
                if "latency" in config:
                    latency_files.append(_latency_stage(stages, cli, files, config, genotype, data_out, keys, select))
    table = PATHS["table"].format(dataset=dataset)
    table_metrics = PATHS["table_metrics"].format(dataset=dataset)
    judged = f" --genotypes {' '.join(genotypes)}" if genotypes else ""
    stages[f"tables_{dataset}"] = {
        "cmd": f"{cli.format(stage='tables')} --dataset {dataset} --out {table} --metrics-out {table_metrics} "
        + " ".join(metrics) + judged,
        "deps": metrics + genotypes + _code("tables"),
        "params": _params(files, ["benchmarks"]),
        # `dvc metrics show` reads the JSON; `dvc plots show` draws test error per method.
        "metrics": [table_metrics],
        "plots": [{table: {"x": "test_error_mean", "y": "search_method", "template": "bar_horizontal"}}],
    }
    table_html = PATHS["table_html"].format(dataset=dataset)
    stages[f"table_html_{dataset}"] = {  # the report's first page, as Snakemake's default target makes it
        "cmd": f"python -m pipeline table-html {table} --out {table_html} --title 'Results: {dataset}'",
        "deps": [table] + _code("table_html"),
        "outs": [table_html],
    }
    transfer = config.get("transfer")
    if transfer is not None and transfer["enabled"]:
        stages.update(_transfer_stages(config, files, configs, runtime_keys))
    if "latency" in config:
        _latency_table_stages(stages, cli, files, dataset, metrics, latency_files, genotypes)
    header = (
        "# Generated by `pipeline dvc-yaml "
        + " ".join(f"--config {path}" for path in config_paths)
        + " --out dvc.yaml`; regenerate rather than edit.\n"
    )
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=1000)


def _transfer_stages(config: dict, files: dict[str, dict], configs: str, runtime_keys: list[str]) -> dict[str, dict]:
    """The transfer jobs and their table (only when ``transfer.enabled``, as in Snakemake's 'all')."""
    transfer, dataset = config["transfer"], config["dataset"]
    target = transfer["dataset"]
    source = config["data"][target]["source"]
    setting_keys = [f"transfer.{key}" for key in transfer if key not in LAUNCH_KEYS | TRANSFER_SELECTION_KEYS]
    stages: dict[str, dict] = {}
    metrics = []
    for search in config["search"]["run"]:
        for select in selections_for(config, search):
            for seed in transfer["seeds"]:
                keys = {"dataset": dataset, "search": search, "select": select, "seed": seed}
                genotype = PATHS["genotype"].format(**keys)
                out_dir = PATHS["transfer_dir"].format(target=target, **keys)
                stages[f"transfer_{target}_{dataset}_{search}_{select}_seed{seed}"] = {
                    "cmd": f"{_launcher(config, 'transfer')} -m pipeline transfer {configs} --dataset {target} --seed {seed}"
                    f" --genotype {genotype} --out-dir {out_dir}",
                    "deps": [genotype, source["train"], source["test"]] + _code("transfer"),
                    "params": _params(files, [f"data.{target}"] + setting_keys + runtime_keys),
                    "outs": [f"{out_dir}/model.pt", f"{out_dir}/metrics.h5"],
                }
                metrics.append(f"{out_dir}/metrics.h5")
    table = PATHS["table"].format(dataset=target)
    stages[f"tables_{target}"] = {
        "cmd": f"python -m pipeline tables {configs} --dataset {target} --out {table} " + " ".join(metrics),
        "deps": metrics + _code("tables"),
        "outs": [table],
    }
    return stages
