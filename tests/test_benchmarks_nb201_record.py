"""The NAS-Bench-201 ground-truth record: every epoch of an nb201 search, the benchmark's
accuracy of the cell that magnitude selection derives from that epoch's op weights; a
selection's pick carries its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import search_params
from pipeline import artifacts
from pipeline.benchmarks import nb201
from pipeline.search.run import MAGNITUDE_EXCLUDE, ground_truth_row, run_search
from pipeline.select.magnitude import Magnitude, parse_magnitude
from pipeline.select.run import run_select
from pipeline.spaces import get_space

NB201 = {"space": "nb201", "layers": 5, "init_channels": 4, "epochs": 3, "batch_size": 16}


def test_the_record_follows_magnitude_selections_default():
    assert list(MAGNITUDE_EXCLUDE) == Magnitude.OPTIONS["exclude_ops"]["default"]


@pytest.fixture(scope="module")
def nb201_search(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("nb201_search")
    # A large arch LR so that the magnitude pick changes between epochs on this tiny run.
    params = search_params(settings=NB201, options={"arch_lr": 0.3})
    run_search(params, tiny_data, out, threads=1)
    return out


@pytest.mark.slow
def test_every_epoch_records_the_ground_truth_of_the_magnitude_parse_of_its_alphas(nb201_search):
    metrics = artifacts.read_metrics(nb201_search / "metrics.h5")
    space = get_space("nb201")
    epochs = metrics.epochs
    assert epochs["benchmark_test_acc"].shape == (3,) and epochs["benchmark_index"].shape == (3,)
    picks = []
    for epoch in range(3):
        # The stored op weights of the epoch (softmax(alpha) for DARTS), parsed as the
        # magnitude selection method parses them, looked up in the benchmark.
        weights = {"cell": torch.as_tensor(epochs["weights_cell"][epoch])}
        torch.testing.assert_close(weights["cell"], torch.softmax(torch.as_tensor(epochs["alpha_cell"][epoch]), dim=-1))
        text = space.to_text(parse_magnitude(space, weights, Magnitude.OPTIONS["exclude_ops"]["default"]))
        truth = nb201.lookup(text)
        assert epochs["benchmark_test_acc"][epoch] == pytest.approx(truth.cifar10_test_200ep)
        assert epochs["benchmark_index"][epoch] == truth.index
        picks.append(text)
    assert len(set(picks)) > 1  # the record moves with alpha (else this test could not tell)
    assert metrics.summary["benchmark_test_acc"] == pytest.approx(epochs["benchmark_test_acc"][-1])


def test_the_dataset_chooses_the_column_and_others_record_nothing():
    space = get_space("nb201")
    weights = {"cell": torch.zeros(6, 5).index_fill_(1, torch.tensor([3]), 1.0)}  # nor_conv_3x3 everywhere
    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    for dataset, column in (("cifar10", "cifar10_test_200ep"), ("cifar100", "cifar100_test_200ep"), ("imagenet16", "imagenet16_test_200ep")):
        assert ground_truth_row(space, weights, dataset)["benchmark_test_acc"] == pytest.approx(getattr(nb201.lookup(text), column))
    assert ground_truth_row(space, weights, "svhn") == {}
    assert ground_truth_row(get_space("darts"), {"normal": torch.rand(14, 8), "reduce": torch.rand(14, 8)}, "cifar10") == {}


@pytest.mark.slow
def test_a_darts_search_records_no_ground_truth(tiny_data, tmp_path):
    run_search(search_params(settings={"epochs": 1}), tiny_data, tmp_path, threads=1)
    metrics = artifacts.read_metrics(tmp_path / "metrics.h5")
    assert "benchmark_test_acc" not in metrics.epochs and "benchmark_test_acc" not in metrics.summary


@pytest.mark.slow
@pytest.mark.parametrize("method", ["magnitude", "trainfree"])
def test_a_selected_nb201_cell_carries_its_ground_truth(nb201_search, tiny_data, tmp_path, method):
    from pipeline import select
    from pipeline.config import method_options

    options = method_options(select.METHODS, {"algorithm": method, **({"samples": 2, "batch_size": 16} if method == "trainfree" else {})}, "options")
    params = {"dataset": "cifar10", "seed": 0, "method": method, "options": options, "runtime": {"device": "cpu", "amp": "none", "channels_last": False, "threads": 1}}
    run_select(params, nb201_search / "supernet.pt", tiny_data, tmp_path / "genotype.json", threads=1)
    record = artifacts.read_genotype(tmp_path / "genotype.json")["provenance"]
    truth = nb201.lookup(record["genotype_text"])
    assert record["benchmark_test_acc"] == pytest.approx(truth.cifar10_test_200ep)
    assert record["benchmark_index"] == truth.index
    if method == "magnitude":  # the search's last epoch recorded the same cell
        last = artifacts.read_metrics(nb201_search / "metrics.h5").epochs["benchmark_test_acc"][-1]
        assert np.isclose(record["benchmark_test_acc"], last)


@pytest.mark.slow
def test_the_ground_truth_plot_reads_the_records_and_the_picks(nb201_search, tiny_data, tmp_path):
    import subprocess
    import sys

    from pipeline import select
    from pipeline.config import method_options
    from pipeline.views.plots import PlotError, read_ground_truth

    options = method_options(select.METHODS, {"algorithm": "magnitude"}, "options")
    params = {"dataset": "cifar10", "seed": 0, "method": "magnitude", "options": options, "runtime": {"device": "cpu", "amp": "none", "channels_last": False, "threads": 1}}
    run_select(params, nb201_search / "supernet.pt", tiny_data, tmp_path / "genotype.json", threads=1)
    metrics = nb201_search / "metrics.h5"
    runs, picks, dataset = read_ground_truth([metrics], [tmp_path / "genotype.json"])
    assert dataset == "cifar10" and [(r.search_method, r.seed) for r in runs] == [("darts_1st", 0)]
    np.testing.assert_array_equal(runs[0].accuracy, artifacts.read_metrics(metrics).epochs["benchmark_test_acc"])
    assert [(p.selection_method, p.accuracy) for p in picks] == [("magnitude", pytest.approx(runs[0].accuracy[-1]))]
    out = tmp_path / "ground_truth.svg"
    result = subprocess.run([sys.executable, "-m", "pipeline", "plot-ground-truth", str(metrics), "--genotypes", str(tmp_path / "genotype.json"),
                             "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    svg = out.read_text()
    assert "darts_1st + magnitude, per epoch (1 seed)" in svg and "darts_1st + magnitude: final pick (1 seed)" in svg
    assert "benchmark's best cell (94.37)" in svg
    darts_run = tmp_path / "darts"
    run_search(search_params(settings={"epochs": 1}), tiny_data, darts_run, threads=1)
    with pytest.raises(PlotError, match="not a search with a per-epoch benchmark record"):
        read_ground_truth([darts_run / "metrics.h5"])
