import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, retrain_params
from pipeline import artifacts
from pipeline.nets.counting import count_parameters
from pipeline.spaces import get_space
from pipeline.stages.retrain import run_retrain
from test_spaces import DARTS_V2

KILLER = Path(__file__).with_name("kill_after_epoch.py")
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


@pytest.fixture(scope="module")
def genotype_file(tmp_path_factory):
    space = get_space("darts")
    path = tmp_path_factory.mktemp("genotype") / "genotype.json"
    provenance = {"search_method": "darts_2nd", "selection_method": "magnitude", "search_seconds": 7200.0,
                  "select_seconds": 1.0, "search_device": "cpu", "seed": 0}
    artifacts.write_genotype(path, {"space": "darts", "cells": space.from_text(DARTS_V2)}, provenance)
    return path


@pytest.fixture(scope="module")
def two_epochs(tiny_data, genotype_file, tmp_path_factory):
    """An uninterrupted 2-epoch retrain: (summary, output folder)."""
    out = tmp_path_factory.mktemp("retrain")
    return run_retrain(retrain_params(epochs=2), genotype_file, tiny_data, out, threads=1), out


def test_retrain_trains_and_reports(two_epochs):
    summary, out = two_epochs
    metrics = artifacts.read_metrics(out / "metrics.h5")
    assert metrics.summary["test_acc"] == pytest.approx(metrics.epochs["test_acc"][-1])
    assert metrics.summary["test_error"] == pytest.approx(100 - summary["test_acc"])
    assert metrics.epochs["drop_path_prob"].tolist() == pytest.approx([0.0, 0.1])  # linear ramp over epochs
    assert metrics.epochs["lr"][0] == pytest.approx(0.025) and metrics.epochs["lr"][1] < 0.025
    space = get_space("darts")
    model = space.build_network(space.from_text(DARTS_V2), 4, 3, 10, auxiliary=True)
    assert summary["params"] == count_parameters(model)  # auxiliary head excluded
    assert summary["search_method"] == "darts_2nd" and summary["search_seconds"] == 7200.0
    checkpoint = artifacts.load_checkpoint(out / "model.pt", "retrain")
    assert checkpoint["epoch"] == 2


def run_cli(*args, launcher=(sys.executable,)):
    return subprocess.run([*launcher, *args], capture_output=True, text=True)


def run_ranks(processes, *args):
    """``torchrun`` with ``processes`` CPU ranks."""
    launch = (TORCHRUN, "--standalone", "--nproc_per_node", str(processes), *args)
    return subprocess.run(launch, capture_output=True, text=True, timeout=600)


def kill_after(epoch, *args, processes=1):
    """The pipeline CLI, SIGKILLed right after writing the checkpoint of ``epoch``."""
    if processes == 1:
        return run_cli(str(KILLER), str(epoch), *args)
    return run_ranks(processes, str(KILLER), str(epoch), *args)


def test_only_rank_0_checks_the_outputs_so_ranks_cannot_race_on_them(tmp_path, monkeypatch):
    """Every rank checking --out-dir at once raced: one made the folder, another's mkdir
    failed with 'File exists' (seen in CI). Rank 1 writes nothing, so it checks nothing."""
    from pipeline.cli import build_parser, check_outputs

    args = build_parser().parse_args(["retrain", "--params", "{}", "--genotype", "g", "--data", "d", "--out-dir", str(tmp_path / "new" / "out")])
    checked = []
    monkeypatch.setattr(artifacts, "check_writable", lambda path, directory=False: checked.append(path))
    monkeypatch.setenv("RANK", "1")
    check_outputs(args)
    assert checked == []
    monkeypatch.setenv("RANK", "0")
    check_outputs(args)
    assert checked == [str(tmp_path / "new" / "out")]


def test_a_folder_made_meanwhile_by_another_process_is_no_error(tmp_path, monkeypatch):
    from pathlib import Path as PathType

    real_mkdir = PathType.mkdir

    def made_by_someone_else_first(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        raise FileExistsError(17, "File exists")

    monkeypatch.setattr(PathType, "mkdir", made_by_someone_else_first)
    artifacts.check_writable(tmp_path / "out", directory=True)
    assert (tmp_path / "out").is_dir()  # the other process's folder stays


def retrain_args(params, genotype, data, out):
    return ["retrain", "--params", json.dumps(params), "--genotype", str(genotype), "--data", str(data), "--out-dir", str(out), "--threads", "1"]


@pytest.mark.slow
def test_retrain_resumes_after_sigkill_with_the_same_results(two_epochs, tiny_data, genotype_file, tmp_path):
    params = retrain_params(epochs=2)
    full, full_dir = two_epochs
    killed = kill_after(1, *retrain_args(params, genotype_file, tiny_data, tmp_path / "b"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "b" / "metrics.h5").exists()
    assert artifacts.load_checkpoint(tmp_path / "b" / "checkpoint" / "last.pt", "retrain")["epoch"] == 1
    resumed = run_cli("-m", "pipeline", *retrain_args(params, genotype_file, tiny_data, tmp_path / "b"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "after epoch 1" in resumed.stderr
    assert "retrain epoch 1/2" not in resumed.stderr  # epoch 1 was not trained again
    first = artifacts.read_metrics(full_dir / "metrics.h5")
    second = artifacts.read_metrics(tmp_path / "b" / "metrics.h5")
    for series in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert first.epochs[series].tolist() == second.epochs[series].tolist(), series
    assert second.summary["test_acc"] == full["test_acc"]
    assert not (tmp_path / "b" / "checkpoint").exists()  # the resume point goes once the outputs exist


def test_cifar100_gets_its_own_drop_path_through_the_config():
    from pipeline.config import load_config, stage_params

    config = load_config([REPO / "config" / "config.yaml", REPO / "config" / "demo.yaml"])
    assert stage_params(config, "retrain", seed=0, dataset="cifar100")["settings"]["drop_path_prob"] == 0.3
    cifar10 = stage_params(config, "retrain", seed=0, dataset="cifar10")["settings"]
    assert cifar10["drop_path_prob"] == 0.2 and "per_dataset" not in cifar10 and "gpus" not in cifar10


@pytest.mark.slow
def test_ddp_two_cpu_processes_follow_the_one_process_trajectory_and_resume(tiny_data, genotype_file, tmp_path):
    """gloo, 2 ranks, each a shard of every global batch (25 does not split evenly), BN over
    the global batch; killed after epoch 1 and resumed. No drop-path: its masks are drawn
    per rank. Clipping is off, so that a wrong gradient average cannot hide behind it."""
    params = retrain_params(epochs=2, batch_size=25, drop_path_prob=0.0, grad_clip=1000.0)
    run_retrain(params, genotype_file, tiny_data, tmp_path / "one", threads=1)
    args = retrain_args(params, genotype_file, tiny_data, tmp_path / "two")
    killed = kill_after(1, *args, processes=2)
    assert killed.returncode != 0
    assert not (tmp_path / "two" / "metrics.h5").exists()
    assert (tmp_path / "two" / "checkpoint" / "last.pt").is_file(), killed.stderr[-3000:]
    state = artifacts.load_checkpoint(tmp_path / "two" / "checkpoint" / "last.pt", "retrain")
    assert state["epoch"] == 1 and len(state["rng_ranks"]) == 2
    resumed = run_ranks(2, "-m", "pipeline", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("resuming from") == 1  # rank 0 alone logs
    one = artifacts.read_metrics(tmp_path / "one" / "metrics.h5")
    two = artifacts.read_metrics(tmp_path / "two" / "metrics.h5")
    assert two.summary["world_size"] == 2 and one.summary["world_size"] == 1
    # Rounding differences grow to ~3e-4 over these steps; a summed instead of averaged
    # gradient, per-shard BN statistics or an unscaled uneven shard move them by >5e-2.
    for series in ("train_loss", "test_loss"):
        assert two.epochs[series] == pytest.approx(one.epochs[series], rel=2e-3), series


def test_logs_hold_one_line_per_epoch(tiny_data, genotype_file, tmp_path, capfd):
    run_retrain(retrain_params(epochs=1), genotype_file, tiny_data, tmp_path / "out", threads=1)
    # In a log (not a terminal) the progress bars stay silent: one line per epoch, then the result.
    log = capfd.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in log] == ["retrain epoch 1/1", "retrain done"]
