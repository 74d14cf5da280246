"""The demo chain on one device, stage by stage through the stage CLIs, with wall times.

For a machine without Snakemake (e.g. a bare GPU box): builds each job's parameters with
``pipeline.config.stage_params`` exactly as the Snakefile does, runs ``python -m pipeline
<stage>`` with the same arguments as the rules, prints each job's wall time and the table.

    python bench/device_chain.py --device cuda --amp bf16 --channels-last   # GPU
    python bench/device_chain.py --methods darts_1st --seeds 0              # one CPU row
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from pipeline.config import PATHS, deep_merge, load_config, selections_for, stage_params, validate_config


def run_stage(stage: str, params: dict, args: list[str], log: Path) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pipeline", stage, "--params", json.dumps(params, sort_keys=True), *args]
    start = time.perf_counter()
    with log.open("w") as stream:
        code = subprocess.call(command, stderr=stream)
    seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{stage} failed (exit {code}); see {log}:\n{log.read_text()[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", nargs="+", default=["config/config.yaml", "config/demo.yaml"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", help="comma-separated search methods (default: search.run)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: seeds)")
    parser.add_argument("--root", default="results", help="where the artifacts go (PATHS relative to it)")
    args = parser.parse_args()

    runtime = {"device": args.device, "amp": args.amp, "channels_last": args.channels_last, "threads": args.threads}
    config = deep_merge(load_config(args.configfile), {"runtime": runtime})
    validate_config(config)
    methods = args.methods.split(",") if args.methods else config["search"]["run"]
    seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else config["seeds"]
    dataset = config["dataset"]
    root = Path(args.root)
    def place(key, **keys):
        return root / Path(PATHS[key].format(dataset=dataset, **keys)).relative_to("results")
    logs = root / "logs"
    threads = ["--threads", str(args.threads)]

    data = place("data")
    seconds = run_stage("data", stage_params(config, "data", dataset=dataset), ["--out", str(data)], logs / "data.log")
    print(f"data {seconds:7.1f} s", flush=True)
    metrics = []
    for method in methods:
        for seed in seeds:
            search_dir = place("search_dir", search=method, seed=seed)
            params = stage_params(config, "search", dataset=dataset, method=method, seed=seed)
            seconds = run_stage("search", params, ["--data", str(data), "--out-dir", str(search_dir), *threads], logs / f"search-{method}-{seed}.log")
            print(f"search {method} seed {seed} {seconds:7.1f} s", flush=True)
            for select in selections_for(config, method):
                keys = {"search": method, "select": select, "seed": seed}
                genotype, decisions = place("genotype", **keys), place("decisions", **keys)
                params = stage_params(config, "select", dataset=dataset, method=select, seed=seed)
                select_args = ["--supernet", str(search_dir / "supernet.pt"), "--data", str(data), "--out", str(genotype), "--decisions", str(decisions), *threads]
                seconds = run_stage("select", params, select_args, logs / f"select-{method}-{select}-{seed}.log")
                print(f"  select {select} {seconds:7.1f} s", flush=True)
                retrain_dir = place("retrain_dir", **keys)
                params = stage_params(config, "retrain", dataset=dataset, seed=seed)
                retrain_args = ["--genotype", str(genotype), "--data", str(data), "--out-dir", str(retrain_dir), *threads]
                seconds = run_stage("retrain", params, retrain_args, logs / f"retrain-{method}-{select}-{seed}.log")
                print(f"  retrain {select} {seconds:7.1f} s", flush=True)
                metrics.append(str(retrain_dir / "metrics.h5"))
    table = place("table")
    run_stage("tables", stage_params(config, "tables", dataset=dataset), ["--out", str(table), *metrics], logs / "tables.log")
    print(table.read_text())


if __name__ == "__main__":
    main()
