import json

import numpy as np
import pytest

from pipeline import artifacts
from pipeline.artifacts import Metrics
from pipeline.stages.tables import build_table, run_tables


def retrain_metrics(path, search, error, seed, params_m=3.3, search_seconds=3600.0, device="cpu", dataset="cifar10", space="darts", genotype_text=""):
    epochs = {k: np.zeros(1) for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time")}
    summary = {
        "test_acc": 100 - error, "test_error": error, "params_m": params_m, "dataset": dataset, "space": space, "genotype_text": genotype_text,
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
    table = run_tables({"dataset": "cifar10", "benchmarks": {"nb201": {"path": None}}}, paths, tmp_path / "t.csv")
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


def test_metrics_json_holds_each_rows_numbers_for_dvc(tmp_path):
    import json

    paths = [
        retrain_metrics(tmp_path / "a.h5", "darts_2nd", 3.0, 0, search_seconds=86400, device="cuda:0"),
        retrain_metrics(tmp_path / "b.h5", "darts_2nd", 2.0, 1, search_seconds=3600, device="cpu"),
    ]
    table = run_tables({"dataset": "cifar10"}, paths, tmp_path / "t.csv", metrics_out=tmp_path / "t.json")
    metrics = json.loads((tmp_path / "t.json").read_text())
    space = table["space"][0]
    by_unit = metrics[space]["darts_2nd"][table["selection_method"][0]]
    assert set(by_unit) == {"GPU-days", "CPU-hours"}  # the two rows do not overwrite each other
    assert by_unit["GPU-days"]["test_error_mean"] == 3.0 and by_unit["GPU-days"]["search_cost"] == pytest.approx(1.0)
    assert by_unit["CPU-hours"]["test_error_mean"] == 2.0


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


BEST_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def test_nb201_rows_carry_the_benchmark_accuracy_of_the_selected_cells(tmp_path):
    from pipeline.benchmarks import nb201

    paths = [
        retrain_metrics(tmp_path / "a.h5", "darts_2nd", 40.0, 0, space="nb201", genotype_text=BEST_NB201),
        retrain_metrics(tmp_path / "b.h5", "darts_2nd", 45.0, 1, space="nb201", genotype_text=ALL_SKIP),
        retrain_metrics(tmp_path / "c.h5", "darts_1st", 3.0, 0),
    ]
    table = build_table(paths, "cifar10").set_index("space")
    accuracies = [94.37333, nb201.lookup(ALL_SKIP).cifar10_test_200ep]
    expected = f"{np.mean(accuracies):.2f} ± {np.std(accuracies, ddof=1):.2f}"
    assert table.loc["nb201", "benchmark_test_acc"] == expected
    assert table.loc["nb201", "benchmark_test_acc_mean"] == pytest.approx(np.mean(accuracies), abs=1e-4)
    assert table.loc["nb201", "benchmark_test_acc_std"] == pytest.approx(np.std(accuracies, ddof=1), abs=1e-4)
    assert table.loc["darts", "benchmark_test_acc"] == "" and np.isnan(table.loc["darts", "benchmark_test_acc_mean"])


def judged_genotype(path, text, seed, selection="pt", search="darts_1st_nb201", dataset="cifar10", space="nb201"):
    """A selection's genotype file as run_select writes it (the provenance the table reads)."""
    from pipeline.spaces import get_space

    cells = get_space("nb201").from_text(text) if space == "nb201" else None
    record = artifacts.provenance(
        {"dataset": dataset}, seed=seed, search_method=search, selection_method=selection, search_seconds=1800.0,
        search_device="cpu", select_seconds=1800.0, genotype_text=text,
    )
    artifacts.write_genotype(path, {"space": space, "cells": cells}, record)
    return path


def test_benchmark_judged_cells_make_rows_without_retraining(tmp_path):
    """benchmarks.nb201.retrain: false: the genotypes of the nb201 selections are the rows
    (benchmark accuracy, no test error or size), beside the retrained DARTS rows."""
    from pipeline.benchmarks import nb201

    genotypes = [judged_genotype(tmp_path / "a.json", BEST_NB201, 0), judged_genotype(tmp_path / "b.json", ALL_SKIP, 1)]
    metrics = [retrain_metrics(tmp_path / "c.h5", "darts_1st", 3.0, 0)]
    table = run_tables({"dataset": "cifar10", "benchmarks": {"nb201": {"path": None}}}, metrics, tmp_path / "t.csv",
                       metrics_out=tmp_path / "t.json", genotype_paths=genotypes)
    row = table.set_index("space").loc["nb201"]
    accuracies = [94.37333, nb201.lookup(ALL_SKIP).cifar10_test_200ep]
    assert (row["search_method"], row["selection_method"], row["seeds"]) == ("darts_1st_nb201", "pt", "0 1")
    assert row["benchmark_test_acc_mean"] == pytest.approx(np.mean(accuracies), abs=1e-4)
    assert row["test_error"] == "" and np.isnan(row["test_error_mean"]) and np.isnan(row["params_m"])
    assert row["search_cost"] == pytest.approx(1.0) and row["search_cost_unit"] == "CPU-hours"
    written = artifacts.read_table(tmp_path / "t.csv").set_index("space")
    assert written.loc["nb201", "test_error_mean"] != written.loc["nb201", "test_error_mean"]  # NaN: a number column stays numeric
    assert written["benchmark_test_acc_mean"].dtype.kind == "f" and written["test_error_mean"].dtype.kind == "f"
    numbers = json.loads((tmp_path / "t.json").read_text())
    assert set(numbers["nb201"]["darts_1st_nb201"]["pt"]["CPU-hours"]) == {"search_cost", "benchmark_test_acc_mean", "benchmark_test_acc_std"}
    assert numbers["darts"]["darts_1st"]["magnitude"]["CPU-hours"]["test_error_mean"] == 3.0


def test_only_nb201_cells_can_skip_retraining_and_a_row_is_one_kind(tmp_path):
    from pipeline.spaces import get_space
    from test_spaces import DARTS_V2

    darts = tmp_path / "d.json"
    record = artifacts.provenance({"dataset": "cifar10"}, seed=0, search_method="darts_1st", selection_method="magnitude",
                                  search_seconds=1.0, search_device="cpu", select_seconds=1.0, genotype_text="")
    artifacts.write_genotype(darts, {"space": "darts", "cells": get_space("darts").from_text(DARTS_V2)}, record)
    with pytest.raises(artifacts.ArtifactError, match="d.json: a 'darts' cell has no benchmark to judge it; retrain it"):
        build_table([], "cifar10", genotype_paths=[darts])
    mixed = [retrain_metrics(tmp_path / "a.h5", "darts_1st_nb201", 40.0, 0, space="nb201", genotype_text=BEST_NB201)]
    with pytest.raises(artifacts.ArtifactError, match="has retrained and benchmark-judged runs"):
        build_table(mixed, "cifar10", genotype_paths=[judged_genotype(tmp_path / "b.json", ALL_SKIP, 1, selection="magnitude")])
    with pytest.raises(artifacts.ArtifactError, match="b.json: dataset 'cifar100', expected 'cifar10'"):
        build_table([], "cifar10", genotype_paths=[judged_genotype(tmp_path / "b.json", ALL_SKIP, 1, dataset="cifar100")])


def test_an_official_nats_bench_file_replaces_the_vendored_table(tmp_path, monkeypatch):
    import sys
    import types

    from pipeline.benchmarks import nb201

    calls = []

    class FakeAPI:
        def query_index_by_arch(self, arch):
            calls.append(arch)
            return 7

        def get_more_info(self, index, dataset, hp, is_random):
            assert (index, dataset, hp, is_random) == (7, "ImageNet16-120", "200", False)
            return {"test-accuracy": 12.5}

    official = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    official.mkdir()
    monkeypatch.setitem(sys.modules, "nats_bench", types.SimpleNamespace(create=lambda path, space, fast_mode, verbose: FakeAPI()))
    nb201._official_api.cache_clear()
    assert nb201.test_accuracy(BEST_NB201, "imagenet16", str(official)) == 12.5
    assert calls == [BEST_NB201]
    with pytest.raises(nb201.NB201Error, match="does not exist"):
        nb201.test_accuracy(BEST_NB201, "cifar10", str(tmp_path / "missing"))


def transfer_metrics(path, search, top1_error, seed, top5_error=8.0, channels=48, dataset="imagenet", search_seconds=86400.0):
    keys = ("epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "wall_time")
    summary = {
        "test_top1": 100 - top1_error, "test_top5": 100 - top5_error, "top1_error": top1_error, "top5_error": top5_error,
        "init_channels": channels, "params_m": 4.7, "multiply_adds_m": 530.0, "dataset": dataset, "source_dataset": "cifar10",
        "space": "darts", "search_method": search, "selection_method": "magnitude", "seed": seed,
        "search_seconds": search_seconds, "select_seconds": 0.0, "search_device": "cuda:0",
    }
    artifacts.write_metrics(path, Metrics("transfer", {k: np.zeros(1) for k in keys}, summary, {}))
    return path


def test_transfer_table_has_top1_top5_width_size_and_cost(tmp_path):
    paths = [
        transfer_metrics(tmp_path / "a.h5", "darts_2nd", 26.0, 0, top5_error=8.5),
        transfer_metrics(tmp_path / "b.h5", "darts_2nd", 27.0, 1, top5_error=8.9),
        transfer_metrics(tmp_path / "c.h5", "darts_1st", 27.5, 0, channels=50, search_seconds=43200.0),
    ]
    table = run_tables({"dataset": "imagenet"}, paths, tmp_path / "imagenet.csv")
    assert list(table["search_method"]) == ["darts_1st", "darts_2nd"]
    second = table.iloc[1]
    assert second["top1_error"] == "26.50 ± 0.71" and second["top5_error_mean"] == pytest.approx(8.7)
    assert second["init_channels"] == "48" and second["multiply_adds_m"] == 530.0 and second["params_m"] == 4.7
    assert table.iloc[0]["search_cost"] == pytest.approx(0.5) and table.iloc[0]["search_cost_unit"] == "GPU-days"
    written = artifacts.read_table(tmp_path / "imagenet.csv", kind="transfer")
    assert list(written.columns) == list(artifacts.TRANSFER_TABLE_COLUMNS)


def test_a_table_takes_one_kind_of_metrics(tmp_path):
    paths = [transfer_metrics(tmp_path / "a.h5", "darts_2nd", 26.0, 0), retrain_metrics(tmp_path / "b.h5", "darts_2nd", 3.0, 0)]
    with pytest.raises(artifacts.ArtifactError, match="b.h5: a retrain metrics file, expected a transfer one"):
        run_tables({"dataset": "imagenet"}, paths, tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()
