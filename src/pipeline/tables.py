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


def build_table(metrics_paths: Iterable[str | Path], dataset: str, nb201_path: str | None = None) -> pd.DataFrame:
    rows = []
    for path in metrics_paths:
        metrics = artifacts.read_metrics(path)
        if metrics.kind != "retrain":
            raise artifacts.ArtifactError(f"{path}: a {metrics.kind} metrics file, expected a retrain one")
        summary = metrics.summary
        if summary.get("dataset") != dataset:
            raise artifacts.ArtifactError(f"{path}: dataset {summary['dataset']!r}, expected {dataset!r}")
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
    return pd.DataFrame(table, columns=list(artifacts.TABLE_COLUMNS))


def run_tables(params: dict, metrics_paths: list[str], out: str | Path) -> pd.DataFrame:
    nb201_path = params.get("benchmarks", {}).get("nb201", {}).get("path")
    table = build_table(metrics_paths, params["dataset"], nb201_path)
    artifacts.write_table(out, table)
    return table
