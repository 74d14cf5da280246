"""Render dvc.yaml from the config files: the job set as ``vars``, one stage per kind.

The per-job stages (search, select, retrain, latency, transfer) are DVC ``foreach``
templates over the job set; the few aggregate ones (data, tables, latency filter) are
written out. Every stage depends on its job's parameters file and its kind's code file
(``pipeline.planning.jobs``), which the first stage, ``params``, writes from the config files. That
stage also refuses, in one line, to go on when the config's job set is no longer the one
this file lists: a new method or seed needs ``pipeline dvc-yaml`` again.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from pipeline.config import PATHS, load_config
from pipeline.planning.codedeps import PACKAGE
from pipeline.planning.jobs import PARAMS, PARAMS_ROOT, TEMPLATED, Job, code_path, jobs, launcher


def _template(pattern: str) -> str:
    """A path pattern with DVC's ``${item.key}`` for Python's ``{key}``."""
    return re.sub(r"\{(\w+)\}", r"${item.\1}", pattern)


def _keys(job: Job) -> dict[str, Any]:
    parts = job.name.split(".")
    if job.kind == "search":
        return {"dataset": parts[0], "search": parts[1], "seed": int(parts[2][4:])}
    if job.kind == "transfer":
        return {"target": parts[0], "dataset": parts[1], "search": parts[2], "select": parts[3], "seed": int(parts[4][4:])}
    return {"dataset": parts[0], "search": parts[1], "select": parts[2], "seed": int(parts[3][4:])}


def _cli(stage: str, params: str, args: str, launch: str = "python") -> str:
    params_option = f"--params-file {params} " if params else ""
    return f"{launch} -m pipeline {stage.replace('_', '-')} {params_option}{args}".rstrip()


def _templates(config: dict, kinds: set[str]) -> dict[str, dict]:
    data = _template(PATHS["data"])
    search_dir, retrain_dir = _template(PATHS["search_dir"]), _template(PATHS["retrain_dir"])
    genotype, decisions = _template(PATHS["genotype"]), _template(PATHS["decisions"])
    transfer_dir = _template(PATHS["transfer_dir"])
    stages: dict[str, dict] = {}
    if "search" in kinds:
        stages["search"] = {
            "cmd": _cli("search", _template(PARAMS["search"]), f"--data {data} --out-dir {search_dir}"),
            "deps": [_template(PARAMS["search"]), code_path("search"), data],
            "outs": [f"{search_dir}/supernet.pt", f"{search_dir}/metrics.h5"],
        }
    if "select" in kinds:
        stages["select"] = {
            "cmd": _cli("select", _template(PARAMS["select"]),
                        f"--supernet {search_dir}/supernet.pt --data {data} --out {genotype} --decisions {decisions}"),
            "deps": [_template(PARAMS["select"]), code_path("select"), f"{search_dir}/supernet.pt", data],
            "outs": [genotype, decisions],
        }
    if "retrain" in kinds:
        stages["retrain"] = {
            "cmd": _cli("retrain", _template(PARAMS["retrain"]), f"--genotype {genotype} --data {data} --out-dir {retrain_dir}",
                        launcher(config, "retrain")),
            "deps": [_template(PARAMS["retrain"]), code_path("retrain"), genotype, data],
            "outs": [f"{retrain_dir}/model.pt", f"{retrain_dir}/metrics.h5"],
        }
    if "latency" in kinds:
        measure = config["latency"]["method"] == "measure"
        record = _template(PATHS["latency"])
        stages["latency"] = {
            "cmd": _cli("latency", _template(PARAMS["latency"]),
                        f"--genotype {genotype}" + (f" --data {data}" if measure else "") + f" --out {record}"),
            "deps": [_template(PARAMS["latency"]), code_path("latency"), genotype] + ([data] if measure else []),
            "outs": [record],
        }
    if "transfer" in kinds:
        source = config["data"][config["transfer"]["dataset"]]["source"]
        stages["transfer"] = {
            "cmd": _cli("transfer", _template(PARAMS["transfer"]), f"--genotype {genotype} --out-dir {transfer_dir}",
                        launcher(config, "transfer")),
            "deps": [_template(PARAMS["transfer"]), code_path("transfer"), genotype, source["train"], source["test"]],
            "outs": [f"{transfer_dir}/model.pt", f"{transfer_dir}/metrics.h5"],
        }
    return {kind: {"foreach": f"${{{kind}}}", "do": stage} for kind, stage in stages.items()}


def _written_out(job: Job) -> dict:
    deps = [job.params] if job.params else []
    stage = {"cmd": _cli(job.stage, job.params, job.args), "deps": [*deps, job.code, *job.deps], "outs": list(job.outs)}
    if job.kind == "tables":
        # `dvc metrics show` reads the JSON; `dvc plots show` draws test error per method.
        table, table_metrics = stage.pop("outs")
        stage["metrics"] = [table_metrics]
        stage["plots"] = [{table: {"x": "test_error_mean", "y": "search_method", "template": "bar_horizontal"}}]
    return stage


def render_dvc_yaml(config_paths: list[str]) -> str:
    config = load_config(config_paths)
    configs = " ".join(f"--config {path}" for path in config_paths)
    all_jobs = jobs(config)
    kinds = {job.kind for job in all_jobs}
    variables: list[dict] = []
    for kind in TEMPLATED:
        items = {job.name: _keys(job) for job in all_jobs if job.kind == kind}
        if items:
            variables.append({kind: items})
    stages: dict[str, dict] = {
        "params": {
            "cmd": f"python -m pipeline params {configs} --dvc-yaml dvc.yaml",
            "deps": [*config_paths, f"src/{PACKAGE}"],
            "outs": [PARAMS_ROOT],
        }
    }
    stages.update({job.dvc_name: _written_out(job) for job in all_jobs if job.kind == "data"})
    stages.update(_templates(config, kinds))
    stages.update({job.dvc_name: _written_out(job) for job in all_jobs if job.kind not in TEMPLATED + ("data",)})
    header = (
        f"# Generated by `pipeline dvc-yaml {configs} --out dvc.yaml`; regenerate rather than edit.\n"
        "# vars: the job set of those configs; stages: 'params' writes each job's parameters file and\n"
        "# each stage kind's code file (results/params), then one stage per kind, templated over its jobs.\n"
    )
    # one line per job; the stages in block style (a `${...}` cannot stand in a flow list)
    return (
        header
        + yaml.safe_dump({"vars": variables}, sort_keys=False, width=1000, default_flow_style=None)
        + yaml.safe_dump({"stages": stages}, sort_keys=False, width=1000)
    )
