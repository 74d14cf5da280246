import pytest

from conftest import retrain_params
from pipeline import artifacts
from pipeline.counting import count_parameters
from pipeline.retrain import run_retrain
from pipeline.spaces import get_space
from test_spaces import DARTS_V2


@pytest.fixture
def genotype_file(tmp_path):
    space = get_space("darts")
    path = tmp_path / "genotype.json"
    provenance = {"search_method": "darts_2nd", "selection_method": "magnitude", "search_seconds": 7200.0,
                  "select_seconds": 1.0, "search_device": "cpu", "seed": 0}
    artifacts.write_genotype(path, {"space": "darts", "cells": space.from_text(DARTS_V2)}, provenance)
    return path


def test_retrain_trains_and_reports(tiny_data, genotype_file, tmp_path, capfd):
    params = retrain_params(epochs=2)
    summary = run_retrain(params, genotype_file, tiny_data, tmp_path / "out", threads=1)
    # In a log (not a terminal) the progress bars stay silent: one line per epoch, then the result.
    log = capfd.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in log] == ["retrain epoch 1/2", "retrain epoch 2/2", "retrain done"]
    metrics = artifacts.read_metrics(tmp_path / "out" / "metrics.h5")
    assert metrics.summary["test_acc"] == pytest.approx(metrics.epochs["test_acc"][-1])
    assert metrics.summary["test_error"] == pytest.approx(100 - summary["test_acc"])
    assert metrics.epochs["drop_path_prob"].tolist() == pytest.approx([0.0, 0.1])  # linear ramp over epochs
    assert metrics.epochs["lr"][0] == pytest.approx(0.025) and metrics.epochs["lr"][1] < 0.025
    space = get_space("darts")
    model = space.build_network(space.from_text(DARTS_V2), 4, 3, 10, auxiliary=True)
    assert summary["params"] == count_parameters(model)  # auxiliary head excluded
    assert summary["search_method"] == "darts_2nd" and summary["search_seconds"] == 7200.0
    checkpoint = artifacts.load_checkpoint(tmp_path / "out" / "model.pt", "retrain")
    assert checkpoint["epoch"] == 2


class Interrupted(Exception):
    pass


def test_retrain_resumes_after_interruption(tiny_data, genotype_file, tmp_path, monkeypatch, capfd):
    full = run_retrain(retrain_params(epochs=2), genotype_file, tiny_data, tmp_path / "a", threads=1)

    real_save = artifacts.save_checkpoint

    def save_then_die(path, kind, payload):
        real_save(path, kind, payload)
        if payload["epoch"] == 1:
            raise Interrupted  # as if killed right after the epoch-1 checkpoint

    monkeypatch.setattr(artifacts, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        run_retrain(retrain_params(epochs=2), genotype_file, tiny_data, tmp_path / "b", threads=1)
    assert not (tmp_path / "b" / "metrics.h5").exists()
    monkeypatch.setattr(artifacts, "save_checkpoint", real_save)
    capfd.readouterr()
    resumed = run_retrain(retrain_params(epochs=2), genotype_file, tiny_data, tmp_path / "b", threads=1)
    log = capfd.readouterr().err
    assert "resuming from" in log and "after epoch 1" in log
    assert "retrain epoch 1/2" not in log  # epoch 1 was not trained again
    first = artifacts.read_metrics(tmp_path / "a" / "metrics.h5")
    second = artifacts.read_metrics(tmp_path / "b" / "metrics.h5")
    assert first.epochs["test_acc"].tolist() == second.epochs["test_acc"].tolist()
    assert first.epochs["train_loss"].tolist() == second.epochs["train_loss"].tolist()
    assert full["test_acc"] == resumed["test_acc"]
