"""SLURM's stop signals: a stage checkpoints, exits 75, and the rerun ends as if never stopped."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import retrain_params, search_params
from pipeline import artifacts
from pipeline.retrain import run_retrain
from pipeline.search.loop import run_search
from pipeline.spaces import get_space
from pipeline.training import PREEMPTED_EXIT, check_stop, stop_on_signal
from test_spaces import DARTS_V2


def start(stage: str, params: dict, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipeline", stage, "--params", json.dumps(params), *args, "--threads", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_after_first_checkpoint(proc: subprocess.Popen, checkpoint, signum) -> tuple[int, str]:
    """Signal once epoch 1 is checkpointed: the stage stops after epoch 1 or 2, not 3."""
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the stage ended before it could be signalled"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def test_sigterm_stops_search_at_the_epoch_checkpoint_and_the_rerun_matches(tiny_data, tmp_path):
    params = search_params(settings={"epochs": 3})
    out = tmp_path / "stopped"
    args = ("--data", str(tiny_data), "--out-dir", str(out))
    code, err = signal_after_first_checkpoint(start("search", params, *args), out / "checkpoint" / "last.pt", signal.SIGTERM)
    assert code == PREEMPTED_EXIT, err
    done = artifacts.load_checkpoint(out / "checkpoint" / "last.pt", "supernet")["epoch"]
    assert done in (1, 2) and f"stopped by SIGTERM after epoch {done}/3" in err
    assert not (out / "supernet.pt").exists() and not (out / "metrics.h5").exists()

    resumed = start("search", params, *args)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"after epoch {done}" in err and f"search epoch {done}/3" not in err

    reference = artifacts.load_checkpoint(run_search(params, tiny_data, tmp_path / "ref", threads=1), "supernet")
    final = artifacts.load_checkpoint(out / "supernet.pt", "supernet")
    for kind in ("normal", "reduce"):
        assert torch.equal(reference["method"]["alpha"][kind], final["method"]["alpha"][kind])
    assert artifacts.read_metrics(out / "metrics.h5").epochs["epoch"].tolist() == [0, 1, 2]


def test_sigusr1_stops_retrain_and_the_rerun_matches(tiny_data, tmp_path):
    space = get_space("darts")
    genotype = tmp_path / "genotype.json"
    provenance = {"search_method": "darts_1st", "selection_method": "magnitude", "search_seconds": 1.0,
                  "select_seconds": 1.0, "search_device": "cpu", "seed": 0}
    artifacts.write_genotype(genotype, {"space": "darts", "cells": space.from_text(DARTS_V2)}, provenance)
    params = retrain_params(epochs=3)
    out = tmp_path / "stopped"
    args = ("--genotype", str(genotype), "--data", str(tiny_data), "--out-dir", str(out))
    code, err = signal_after_first_checkpoint(start("retrain", params, *args), out / "checkpoint" / "last.pt", signal.SIGUSR1)
    assert code == PREEMPTED_EXIT, err
    done = artifacts.load_checkpoint(out / "checkpoint" / "last.pt", "retrain")["epoch"]
    assert done in (1, 2) and f"stopped by SIGUSR1 after epoch {done}/3" in err
    assert not (out / "model.pt").exists()

    resumed = start("retrain", params, *args)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"after epoch {done}" in err and f"retrain epoch {done}/3" not in err

    reference = run_retrain(params, genotype, tiny_data, tmp_path / "ref", threads=1)
    final = artifacts.read_metrics(out / "metrics.h5")
    assert final.summary["test_acc"] == reference["test_acc"]
    assert np.array_equal(final.epochs["train_loss"], artifacts.read_metrics(tmp_path / "ref" / "metrics.h5").epochs["train_loss"])


def test_ddp_ranks_stop_after_the_same_epoch_when_one_rank_is_signalled(tiny_data, tmp_path):
    """torchrun, 2 CPU ranks; only rank 0 gets SIGUSR1 after epoch 1. Both must stop there:
    a rank that went on alone would wait in the next all-reduce."""
    from test_retrain import TORCHRUN, retrain_args

    space = get_space("darts")
    genotype = tmp_path / "genotype.json"
    provenance = {"search_method": "darts_1st", "selection_method": "magnitude", "search_seconds": 1.0,
                  "select_seconds": 1.0, "search_device": "cpu", "seed": 0}
    artifacts.write_genotype(genotype, {"space": "darts", "cells": space.from_text(DARTS_V2)}, provenance)
    args = retrain_args(retrain_params(epochs=3, batch_size=24), genotype, tiny_data, tmp_path / "out")
    script = str(Path(__file__).with_name("signal_after_epoch.py"))
    run = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", script, "1", *args],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert run.stderr.count("stopped by SIGUSR1 after epoch 1/3") == 2, run.stderr[-3000:]  # one line per rank
    assert artifacts.load_checkpoint(tmp_path / "out" / "checkpoint" / "last.pt", "retrain")["epoch"] == 1


def test_stop_request_is_ignored_after_the_last_epoch_and_cleared_on_exit(tmp_path):
    with stop_on_signal():
        signal.raise_signal(signal.SIGTERM)
        check_stop(3, 3, tmp_path)  # the final epoch: finish and write the outputs
        with pytest.raises(Exception, match="stopped by SIGTERM after epoch 2/3"):
            check_stop(2, 3, tmp_path)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    check_stop(2, 3, tmp_path)  # outside the context nothing is pending
