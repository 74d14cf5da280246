import numpy as np
import pytest

from pipeline import artifacts
from pipeline.artifacts import Metrics
from pipeline.tables import build_table, run_tables


def retrain_metrics(path, search, error, seed, params_m=3.3, search_seconds=3600.0, device="cpu", dataset="cifar10"):
    epochs = {k: np.zeros(1) for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time")}
    summary = {
        "test_acc": 100 - error, "test_error": error, "params_m": params_m, "dataset": dataset, "space": "darts",
        "search_method": search, "selection_method": "magnitude", "seed": seed,
        "search_seconds": search_seconds, "select_seconds": 0.0, "search_device": device,
    }
    artifacts.write_metrics(path, Metrics("retrain", epochs, summary, {}))
    return path


def test_table_rows_mean_std_best_params_cost(tmp_path):
    paths = [
        retrain_metrics(tmp_path / "a.h5", "darts_2nd", 3.0, 0, params_m=3.2, search_seconds=1800),
        retrain_metrics(tmp_path / "b.h5", "darts_2nd", 2.5, 1, params_m=3.4, search_seconds=5400),
        retrain_metrics(tmp_path / "c.h5", "darts_1st", 3.1, 0, search_seconds=86400, device="cuda:0"),
    ]
    table = run_tables({"dataset": "cifar10"}, paths, tmp_path / "t.csv")
    assert list(table["search_method"]) == ["darts_1st", "darts_2nd"]
    second = table.iloc[1]
    assert second["test_error_mean"] == pytest.approx(2.75)
    assert second["test_error_std"] == pytest.approx(np.std([3.0, 2.5], ddof=1), abs=1e-4)
    assert second["test_error_best"] == 2.5
    assert second["test_error"] == "2.75 ± 0.35"
    assert second["params_m"] == pytest.approx(3.3)
    assert second["search_cost"] == pytest.approx(1.0) and second["search_cost_unit"] == "CPU-hours"
    assert second["seeds"] == "0 1"
    first = table.iloc[0]
    assert first["search_cost"] == pytest.approx(1.0) and first["search_cost_unit"] == "GPU-days"
    assert first["test_error_std"] == 0.0
    assert artifacts.read_table(tmp_path / "t.csv").shape == (2, len(artifacts.TABLE_COLUMNS))


def test_gpu_and_cpu_searches_get_separate_rows(tmp_path):
    paths = [
        retrain_metrics(tmp_path / "a.h5", "darts_2nd", 3.0, 0, search_seconds=86400, device="cuda:0"),
        retrain_metrics(tmp_path / "b.h5", "darts_2nd", 2.0, 1, search_seconds=3600, device="cpu"),
    ]
    table = build_table(paths, "cifar10")
    assert sorted(table["search_cost_unit"]) == ["CPU-hours", "GPU-days"]
    assert list(table["search_cost"]) == [pytest.approx(1.0), pytest.approx(1.0)]


def test_search_metrics_are_not_a_retrain_result(tmp_path):
    epochs = {k: np.zeros(1) for k in ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "wall_time")}
    artifacts.write_metrics(tmp_path / "s.h5", Metrics("search", epochs, {}, {}))
    with pytest.raises(artifacts.ArtifactError, match="a search metrics file, expected a retrain one"):
        build_table([tmp_path / "s.h5"], "cifar10")


def test_table_rejects_results_of_another_dataset(tmp_path):
    path = retrain_metrics(tmp_path / "a.h5", "darts_1st", 3.0, 0, dataset="cifar100")
    with pytest.raises(artifacts.ArtifactError, match="dataset 'cifar100', expected 'cifar10'"):
        build_table([path], "cifar10")
