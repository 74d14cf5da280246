"""Tables stage: one row per (search method, selection method) in the papers' format."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from pipeline import artifacts, nb201

SECONDS_PER = {"GPU-days": 86400.0, "CPU-hours": 3600.0}


def cost_unit(device: str) -> str:
    return "GPU-days" if device.startswith("cuda") else "CPU-hours"


def mean_std(values: pd.Series) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def benchmark_accuracy(group: pd.DataFrame, dataset: str, nb201_path: str | None) -> str:
    """NAS-Bench-201 200-epoch test accuracy of the selected cells ("mean ± std"), for nb201 rows."""
    if group["space"].iloc[0] != "nb201" or dataset not in nb201.DATASETS:
        return ""
    accuracies = pd.Series([nb201.test_accuracy(text, dataset, nb201_path) for text in group["genotype_text"]])
    mean, std = mean_std(accuracies)
    return f"{mean:.2f} ± {std:.2f}"


def build_table(metrics_paths: Iterable[str | Path], dataset: str, nb201_path: str | None = None, latency: dict | None = None) -> pd.DataFrame:
    """``latency``: the latency filter's summary; rows then show latency and who passed."""
    by_genotype = {entry["genotype_sha256"]: entry for entry in latency["results"]} if latency else {}
    rows = []
    for path in metrics_paths:
        metrics = artifacts.read_metrics(path)
        if metrics.kind != "retrain":
            raise artifacts.ArtifactError(f"{path}: a {metrics.kind} metrics file, expected a retrain one")
        summary = metrics.summary
        if summary.get("dataset") != dataset:
            raise artifacts.ArtifactError(f"{path}: dataset {summary['dataset']!r}, expected {dataset!r}")
        if latency is not None:
            entry = by_genotype.get(summary.get("genotype_sha256"))
            if entry is None:
                raise artifacts.ArtifactError(f"{path}: the latency results hold no entry for its genotype")
            summary = {**summary, "latency_ms": entry["latency_ms"], "latency_passed": entry["passed"], "latency_source": entry["source"]}
        rows.append(summary)
    if not rows:
        raise artifacts.ArtifactError("tables: no retrain metrics given")
    runs = pd.DataFrame(rows)
    # Searches on GPU and on CPU do not add up: they get separate rows.
    runs["search_cost_unit"] = [cost_unit(device) for device in runs["search_device"]]
    table = []
    keys = ["space", "search_method", "selection_method", "search_cost_unit"]
    for (space, search, selection, unit), group in runs.groupby(keys, sort=True):
        errors = group["test_error"]
        _, std = mean_std(errors)
        cost = ((group["search_seconds"] + group["select_seconds"]) / SECONDS_PER[unit]).mean()
        table.append(
            {
                "dataset": dataset,
                "space": space,
                "search_method": search,
                "selection_method": selection,
                "seeds": " ".join(str(s) for s in sorted(group["seed"])),
                "test_error": f"{errors.mean():.2f} ± {std:.2f}",
                "test_error_mean": round(float(errors.mean()), 4),
                "test_error_std": round(std, 4),
                "test_error_best": round(float(errors.min()), 4),
                "params_m": round(float(group["params_m"].mean()), 4),
                "search_cost": round(float(cost), 6),
                "search_cost_unit": unit,
                "device": ",".join(sorted(set(group["search_device"]))),
                "benchmark_test_acc": benchmark_accuracy(group, dataset, nb201_path),
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


def run_tables(
    params: dict, metrics_paths: list[str], out: str | Path, latency: str | Path | None = None, metrics_out: str | Path | None = None
) -> pd.DataFrame:
    nb201_path = params.get("benchmarks", {}).get("nb201", {}).get("path")
    summary = artifacts.read_latency_filter(latency) if latency is not None else None
    if summary is not None and summary["dataset"] != params["dataset"]:
        raise artifacts.ArtifactError(f"{latency}: dataset {summary['dataset']!r}, expected {params['dataset']!r}")
    table = build_table(metrics_paths, params["dataset"], nb201_path, summary)
    artifacts.write_table(out, table)
    if metrics_out is not None:
        artifacts.write_table_metrics(metrics_out, table)
    return table
