"""Stop signals: SLURM's (SIGTERM, SIGUSR1: exit 75) and Ctrl-C (SIGINT: exit 130). A stage
checkpoints, prints one line, exits with that code, and the rerun ends as if never stopped."""

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
from pipeline.search.run import run_search
from pipeline.spaces import get_space
from pipeline.stages.retrain import run_retrain
from pipeline.training.signals import INTERRUPTED_EXIT, PREEMPTED_EXIT, check_stop, stop_on_signal
from test_select_pt import run_cli as start_select
from test_select_pt import select_params
from test_spaces import DARTS_V2
from test_stage_transfer import transfer_params


def write_genotype(path: Path) -> Path:
    """DARTS V2 as a genotype file, for retrain runs."""
    provenance = {"search_method": "darts_1st", "selection_method": "magnitude", "search_seconds": 1.0,
                  "select_seconds": 1.0, "search_device": "cpu", "seed": 0}
    artifacts.write_genotype(path, {"space": "darts", "cells": get_space("darts").from_text(DARTS_V2)}, provenance)
    return path


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


def assert_stopped_in_one_line(err: str, stage: str, signum, unit: str, done: int, total: int) -> None:
    """No traceback; the last line says what stopped the stage, where, and what resumes it."""
    assert "Traceback" not in err, err
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1].startswith(f"pipeline {stage}: stopped by {name} after {unit} {done}/{total}; "), err
    assert err.strip().splitlines()[-1].endswith("checkpoint/last.pt resumes it"), err


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, PREEMPTED_EXIT), (signal.SIGINT, INTERRUPTED_EXIT)])
def test_stop_signal_stops_search_at_the_epoch_checkpoint_and_the_rerun_matches(signum, exit_code, tiny_data, tmp_path):
    params = search_params(settings={"epochs": 3})
    out = tmp_path / "stopped"
    args = ("--data", str(tiny_data), "--out-dir", str(out))
    code, err = signal_after_first_checkpoint(start("search", params, *args), out / "checkpoint" / "last.pt", signum)
    assert code == exit_code, err
    done = artifacts.load_checkpoint(out / "checkpoint" / "last.pt", "supernet")["epoch"]
    assert done in (1, 2)
    assert_stopped_in_one_line(err, "search", signum, "epoch", done, 3)
    assert not (out / "supernet.pt").exists() and not (out / "metrics.h5").exists()

    resumed = start("search", params, *args)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"after epoch {done}" in err and f"search epoch {done}/3" not in err

    reference = artifacts.load_checkpoint(run_search(params, tiny_data, tmp_path / "ref", threads=1), "supernet")
    final = artifacts.load_checkpoint(out / "supernet.pt", "supernet")
    for kind in ("normal", "reduce"):
        assert torch.equal(reference["method"]["alpha"][kind], final["method"]["alpha"][kind])
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, final["model"][name]), name
    assert artifacts.read_metrics(out / "metrics.h5").epochs["epoch"].tolist() == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGUSR1, PREEMPTED_EXIT), (signal.SIGINT, INTERRUPTED_EXIT)])
def test_stop_signal_stops_retrain_and_the_rerun_matches(signum, exit_code, tiny_data, tmp_path):
    space = get_space("darts")
    genotype = tmp_path / "genotype.json"
    provenance = {"search_method": "darts_1st", "selection_method": "magnitude", "search_seconds": 1.0,
                  "select_seconds": 1.0, "search_device": "cpu", "seed": 0}
    artifacts.write_genotype(genotype, {"space": "darts", "cells": space.from_text(DARTS_V2)}, provenance)
    params = retrain_params(epochs=3)
    out = tmp_path / "stopped"
    args = ("--genotype", str(genotype), "--data", str(tiny_data), "--out-dir", str(out))
    code, err = signal_after_first_checkpoint(start("retrain", params, *args), out / "checkpoint" / "last.pt", signum)
    assert code == exit_code, err
    done = artifacts.load_checkpoint(out / "checkpoint" / "last.pt", "retrain")["epoch"]
    assert done in (1, 2)
    assert_stopped_in_one_line(err, "retrain", signum, "epoch", done, 3)
    assert not (out / "model.pt").exists()

    resumed = start("retrain", params, *args)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"after epoch {done}" in err and f"retrain epoch {done}/3" not in err

    reference = run_retrain(params, genotype, tiny_data, tmp_path / "ref", threads=1)
    final = artifacts.read_metrics(out / "metrics.h5")
    assert final.summary["test_acc"] == reference["test_acc"]
    assert np.array_equal(final.epochs["train_loss"], artifacts.read_metrics(tmp_path / "ref" / "metrics.h5").epochs["train_loss"])
    ours, theirs = (artifacts.load_checkpoint(path / "model.pt", "retrain")["model"] for path in (out, tmp_path / "ref"))
    for name, tensor in theirs.items():
        assert torch.equal(tensor, ours[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, PREEMPTED_EXIT), (signal.SIGINT, INTERRUPTED_EXIT)])
def test_stop_signal_stops_pt_selection_after_a_step_and_the_rerun_matches(signum, exit_code, s2_supernet, tiny8_data, tmp_path):
    params = select_params("pt", finetune_epochs=1)  # tuning between steps: optimiser, alpha and RNG must resume
    out = tmp_path / "stopped"
    code, err = signal_after_first_checkpoint(start_select(params, s2_supernet, tiny8_data, out), out / "checkpoint" / "last.pt", signum)
    assert code == exit_code, err
    done = artifacts.load_checkpoint(out / "checkpoint" / "last.pt", "select")["step"]
    assert 1 <= done < 17
    assert_stopped_in_one_line(err, "select", signum, "step", done, 17)
    assert not (out / "genotype.json").exists() and not (out / "record.h5").exists()

    resumed = start_select(params, s2_supernet, tiny8_data, out)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"after step {done}" in err
    reference = start_select(params, s2_supernet, tiny8_data, tmp_path / "ref")
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    a, b = (artifacts.read_decisions(path / "record.h5") for path in (tmp_path / "ref", out))
    for table in ("decisions", "candidates"):
        for column, values in getattr(a, table).items():
            assert np.array_equal(values, getattr(b, table)[column], equal_nan=values.dtype != object), (table, column)
    assert artifacts.read_genotype(out / "genotype.json")["cells"] == artifacts.read_genotype(tmp_path / "ref" / "genotype.json")["cells"]


@pytest.mark.slow
def test_sigint_stops_transfer_at_the_epoch_checkpoint_and_the_rerun_matches(tiny_imagenet, genotype_file, tmp_path):
    from pipeline.stages.transfer import run_transfer

    params = transfer_params(tiny_imagenet, epochs=3)  # 60 images in batches of 16: 4 steps an epoch
    out = tmp_path / "stopped"
    args = ("--genotype", str(genotype_file), "--out-dir", str(out))
    code, err = signal_after_first_checkpoint(start("transfer", params, *args), out / "checkpoint" / "last.pt", signal.SIGINT)
    assert code == INTERRUPTED_EXIT, err
    done = artifacts.load_checkpoint(out / "checkpoint" / "last.pt", "transfer")["epoch"]
    assert done in (1, 2)
    assert_stopped_in_one_line(err, "transfer", signal.SIGINT, "epoch", done, 3)
    assert not (out / "model.pt").exists() and not (out / "metrics.h5").exists()

    resumed = start("transfer", params, *args)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"after epoch {done}" in err and f"transfer epoch {done}/3" not in err

    run_transfer(params, genotype_file, tmp_path / "ref", threads=1)
    ours, theirs = (artifacts.read_metrics(path / "metrics.h5").epochs for path in (out, tmp_path / "ref"))
    for series in ("train_loss", "test_loss", "test_top1", "lr"):
        assert np.array_equal(ours[series], theirs[series]), series
    ours, theirs = (artifacts.load_checkpoint(path / "model.pt", "transfer")["model"] for path in (out, tmp_path / "ref"))
    for name, tensor in theirs.items():
        assert torch.equal(tensor, ours[name]), name


@pytest.mark.slow
def test_ddp_ranks_stop_after_the_same_epoch_when_one_rank_is_signalled(tiny_data, tmp_path):
    """torchrun, 2 CPU ranks; only rank 0 gets SIGUSR1 after epoch 1. Both must stop there:
    a rank that went on alone would wait in the next all-reduce."""
    from test_stage_retrain import retrain_args, run_ranks

    space = get_space("darts")
    genotype = tmp_path / "genotype.json"
    provenance = {"search_method": "darts_1st", "selection_method": "magnitude", "search_seconds": 1.0,
                  "select_seconds": 1.0, "search_device": "cpu", "seed": 0}
    artifacts.write_genotype(genotype, {"space": "darts", "cells": space.from_text(DARTS_V2)}, provenance)
    args = retrain_args(retrain_params(epochs=3, batch_size=24), genotype, tiny_data, tmp_path / "out")
    script = str(Path(__file__).with_name("signal_after_epoch.py"))
    run = run_ranks(2, script, "1", *args)
    assert run.returncode != 0, run.stderr[-3000:]
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


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated zip"])
def test_a_corrupt_search_checkpoint_is_set_aside_with_a_warning_and_the_run_starts_afresh(content, tiny_data, tmp_path, capsys):
    params = search_params(settings={"epochs": 1})
    last = tmp_path / "out" / "checkpoint" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(content)
    final = artifacts.load_checkpoint(run_search(params, tiny_data, tmp_path / "out", threads=1), "supernet")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{last}: not a readable checkpoint" in warnings[0] and "set aside as last.pt.corrupt" in warnings[0]
    assert (last.parent / "last.pt.corrupt").read_bytes() == content and not last.exists()
    reference = artifacts.load_checkpoint(run_search(params, tiny_data, tmp_path / "ref", threads=1), "supernet")
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, final["model"][name]), name


def test_a_corrupt_retrain_checkpoint_is_set_aside_next_to_an_earlier_one(tiny_data, tmp_path):
    genotype = write_genotype(tmp_path / "genotype.json")
    last = tmp_path / "out" / "checkpoint" / "last.pt"
    last.parent.mkdir(parents=True)
    (last.parent / "last.pt.corrupt").write_bytes(b"an earlier one")
    last.write_bytes(b"garbage")
    run_retrain(retrain_params(epochs=1), genotype, tiny_data, tmp_path / "out", threads=1)
    assert (last.parent / "last.pt.corrupt").read_bytes() == b"an earlier one"
    assert (last.parent / "last.pt.corrupt-2").read_bytes() == b"garbage"
    assert (tmp_path / "out" / "model.pt").exists()


def test_a_corrupt_pt_checkpoint_is_set_aside(s2_supernet, tiny8_data, tmp_path, capsys):
    from pipeline.config import validate_stage_params
    from pipeline.select.run import run_select

    last = tmp_path / "checkpoint" / "last.pt"
    last.parent.mkdir()
    last.write_bytes(b"garbage")
    params = validate_stage_params("select", json.loads(json.dumps(select_params("pt"))))
    run_select(params, s2_supernet, tiny8_data, tmp_path / "genotype.json", threads=1)
    assert (last.parent / "last.pt.corrupt").read_bytes() == b"garbage"
    assert "set aside as last.pt.corrupt" in capsys.readouterr().err
    assert (tmp_path / "genotype.json").exists()
