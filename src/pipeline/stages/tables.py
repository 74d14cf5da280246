"""Tables stage: one row per (search method, selection method) in the papers' format.

Retrain metrics make the CIFAR-style table (test error); transfer metrics the ImageNet
one (top-1 and top-5 error, width, parameters, multiply-adds). Cells of a benchmark space
that are judged by the benchmark instead of retrained (``benchmarks.nb201.retrain:
false``) enter as their genotype files: their rows carry the benchmark's accuracy and no
test error. ``*_mean``/``*_std`` columns hold the numbers, ``test_error`` and
``benchmark_test_acc`` the same as "mean ± std" text."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipeline import artifacts
from pipeline.benchmarks import nb201

SECONDS_PER = {"GPU-days": 86400.0, "CPU-hours": 3600.0}


def cost_unit(device: str) -> str:
    return "GPU-days" if device.startswith("cuda") else "CPU-hours"


def mean_std(values: pd.Series) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def benchmark_accuracy(group: pd.DataFrame, dataset: str, nb201_path: str | None) -> tuple[str, float, float]:
    """NAS-Bench-201 200-epoch test accuracy of the selected cells, for nb201 rows:
    ("mean ± std", mean, std); ("", nan, nan) for other rows."""
    if group["space"].iloc[0] != "nb201" or dataset not in nb201.DATASETS:
        return "", math.nan, math.nan
    accuracies = pd.Series([nb201.test_accuracy(text, dataset, nb201_path) for text in group["genotype_text"]])
    mean, std = mean_std(accuracies)
    return f"{mean:.2f} ± {std:.2f}", round(mean, 4), round(std, 4)


def genotype_summary(path: str | Path) -> dict:
    """A table run of a cell judged by its benchmark, not retrained: what its genotype file
    records (methods, seed, costs, the cell's text), no test error or size."""
    genotype = artifacts.read_genotype(path)
    record = genotype["provenance"]
    try:
        summary = {
            "dataset": record["params"]["dataset"],
            "space": genotype["space"],
            "search_method": record["search_method"],
            "selection_method": record["selection_method"],
            "seed": int(record["seed"]),
            "search_seconds": float(record["search_seconds"]),
            "select_seconds": float(record["select_seconds"]),
            "search_device": record["search_device"],
            "genotype_text": record["genotype_text"],
        }
    except (KeyError, TypeError, ValueError):
        raise artifacts.ArtifactError(f"{path}: genotype provenance lacks the selection record (methods, seed, costs)") from None
    if genotype["space"] != "nb201":
        raise artifacts.ArtifactError(f"{path}: a {genotype['space']!r} cell has no benchmark to judge it; retrain it")
    return {**summary, "test_error": math.nan, "params_m": math.nan, "genotype_sha256": artifacts.sha256_file(path)}


def build_table(
    metrics_paths: Iterable[str | Path],
    dataset: str,
    nb201_path: str | None = None,
    latency: dict | None = None,
    genotype_paths: Iterable[str | Path] = (),
) -> pd.DataFrame:
    """``latency``: the latency filter's summary; rows then show latency and who passed.
    ``genotype_paths``: cells judged by the benchmark (rows without test error)."""
    by_genotype = {entry["genotype_sha256"]: entry for entry in latency["results"]} if latency else {}
    rows = []
    for path in metrics_paths:
        metrics = artifacts.read_metrics(path)
        if metrics.kind != "retrain":
            raise artifacts.ArtifactError(f"{path}: a {metrics.kind} metrics file, expected a retrain one")
        rows.append((path, metrics.summary))
    rows += [(path, genotype_summary(path)) for path in genotype_paths]
    runs_list = []
    for path, summary in rows:
        if summary.get("dataset") != dataset:
            raise artifacts.ArtifactError(f"{path}: dataset {summary['dataset']!r}, expected {dataset!r}")
        if latency is not None:
            entry = by_genotype.get(summary.get("genotype_sha256"))
            if entry is None:
                raise artifacts.ArtifactError(f"{path}: the latency results hold no entry for its genotype")
            summary = {**summary, "latency_ms": entry["latency_ms"], "latency_passed": entry["passed"], "latency_source": entry["source"]}
        runs_list.append(summary)
    if not runs_list:
        raise artifacts.ArtifactError("tables: no retrain metrics or benchmark-judged genotypes given")
    runs = pd.DataFrame(runs_list)
    # Searches on GPU and on CPU do not add up: they get separate rows.
    runs["search_cost_unit"] = [cost_unit(device) for device in runs["search_device"]]
    table = []
    keys = ["space", "search_method", "selection_method", "search_cost_unit"]
    for (space, search, selection, unit), group in runs.groupby(keys, sort=True):
        errors = group["test_error"].astype(float)
        _, std = mean_std(errors)
        cost = ((group["search_seconds"] + group["select_seconds"]) / SECONDS_PER[unit]).mean()
        benchmark_text, benchmark_mean, benchmark_std = benchmark_accuracy(group, dataset, nb201_path)
        retrained = bool(errors.notna().all())
        if errors.notna().any() and not retrained:
            raise artifacts.ArtifactError(f"tables: {search} + {selection} has retrained and benchmark-judged runs; give one kind")
        table.append(
            {
                "dataset": dataset,
                "space": space,
                "search_method": search,
                "selection_method": selection,
                "seeds": " ".join(str(s) for s in sorted(group["seed"])),
                "test_error": f"{errors.mean():.2f} ± {std:.2f}" if retrained else "",
                "test_error_mean": round(float(errors.mean()), 4) if retrained else math.nan,
                "test_error_std": round(std, 4) if retrained else math.nan,
                "test_error_best": round(float(errors.min()), 4) if retrained else math.nan,
                "params_m": round(float(group["params_m"].astype(float).mean()), 4) if retrained else math.nan,
                "search_cost": round(float(cost), 6),
                "search_cost_unit": unit,
                "device": ",".join(sorted(set(group["search_device"]))),
                "benchmark_test_acc": benchmark_text,
                "benchmark_test_acc_mean": benchmark_mean,
                "benchmark_test_acc_std": benchmark_std,
            }
        )
        if latency is not None:
            table[-1].update(_latency_columns(group, latency))
    columns = list(artifacts.TABLE_COLUMNS) + (list(artifacts.LATENCY_COLUMNS) if latency is not None else [])
    return pd.DataFrame(table, columns=columns)


def _latency_columns(group: pd.DataFrame, latency: dict) -> dict:
    """Mean latency over the seeds, and how many (and which) seeds' architectures passed."""
    passed = group[group["latency_passed"].astype(bool)]
    return {
        "latency_ms": round(float(group["latency_ms"].mean()), 4),
        "latency_target_ms": latency["target_ms"],
        "latency_passed": f"{len(passed)}/{len(group)}",
        "latency_passed_seeds": " ".join(str(s) for s in sorted(passed["seed"])),
        "latency_source": ", ".join(sorted(set(group["latency_source"]))),
    }


def build_transfer_table(metrics_paths: Iterable[str | Path], dataset: str) -> pd.DataFrame:
    rows = []
    for path in metrics_paths:
        metrics = artifacts.read_metrics(path)
        if metrics.kind != "transfer":
            raise artifacts.ArtifactError(f"{path}: a {metrics.kind} metrics file, expected a transfer one")
        if metrics.summary.get("dataset") != dataset:
            raise artifacts.ArtifactError(f"{path}: dataset {metrics.summary['dataset']!r}, expected {dataset!r}")
        rows.append(metrics.summary)
    if not rows:
        raise artifacts.ArtifactError("tables: no transfer metrics given")
    runs = pd.DataFrame(rows)
    runs["search_cost_unit"] = [cost_unit(device) for device in runs["search_device"]]
    table = []
    keys = ["source_dataset", "space", "search_method", "selection_method", "search_cost_unit"]
    for (source, space, search, selection, unit), group in runs.groupby(keys, sort=True):
        top1, top1_std = mean_std(group["top1_error"])
        top5, top5_std = mean_std(group["top5_error"])
        cost = ((group["search_seconds"] + group["select_seconds"]) / SECONDS_PER[unit]).mean()
        table.append(
            {
                "dataset": dataset,
                "source_dataset": source,
                "space": space,
                "search_method": search,
                "selection_method": selection,
                "seeds": " ".join(str(s) for s in sorted(group["seed"])),
                "top1_error": f"{top1:.2f} ± {top1_std:.2f}",
                "top1_error_mean": round(top1, 4),
                "top1_error_std": round(top1_std, 4),
                "top5_error": f"{top5:.2f} ± {top5_std:.2f}",
                "top5_error_mean": round(top5, 4),
                "top5_error_std": round(top5_std, 4),
                "init_channels": " ".join(str(c) for c in sorted(set(group["init_channels"]))),
                "params_m": round(float(group["params_m"].mean()), 4),
                "multiply_adds_m": round(float(group["multiply_adds_m"].mean()), 2),
                "search_cost": round(float(cost), 6),
                "search_cost_unit": unit,
                "device": ",".join(sorted(set(group["search_device"]))),
            }
        )
    return pd.DataFrame(table, columns=list(artifacts.TRANSFER_TABLE_COLUMNS))


def run_tables(
    params: dict,
    metrics_paths: list[str],
    out: str | Path,
    latency: str | Path | None = None,
    metrics_out: str | Path | None = None,
    genotype_paths: list[str] = (),
) -> pd.DataFrame:
    """The table of the metrics files' kind: retrain (CIFAR-style) or transfer (ImageNet);
    ``genotype_paths`` add the rows of benchmark-judged cells to a CIFAR-style table."""
    first = artifacts.read_metrics(metrics_paths[0]) if metrics_paths else None
    if first is not None and first.kind == "transfer":
        if latency is not None:
            raise artifacts.ArtifactError(f"{latency}: latency columns are for retrain tables, not transfer ones")
        if genotype_paths:
            raise artifacts.ArtifactError(f"{genotype_paths[0]}: benchmark-judged genotypes are for retrain tables, not transfer ones")
        table = build_transfer_table(metrics_paths, params["dataset"])
        artifacts.write_table(out, table, kind="transfer")
        return table
    nb201_path = params.get("benchmarks", {}).get("nb201", {}).get("path")
    summary = artifacts.read_latency_filter(latency) if latency is not None else None
    if summary is not None and summary["dataset"] != params["dataset"]:
        raise artifacts.ArtifactError(f"{latency}: dataset {summary['dataset']!r}, expected {params['dataset']!r}")
    table = build_table(metrics_paths, params["dataset"], nb201_path, summary, genotype_paths)
    artifacts.write_table(out, table)
    if metrics_out is not None:
        artifacts.write_table_metrics(metrics_out, table)
    return table
