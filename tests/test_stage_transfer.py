"""The ImageNet transfer stage at tiny scale: a 10-class ImageFolder of demo CIFAR images."""

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import artifacts
from pipeline.config import ConfigError
from pipeline.nets.counting import count_parameters
from pipeline.spaces import get_space
from pipeline.stages.tables import run_tables
from pipeline.stages.transfer import choose_init_channels, imagenet_multiply_adds, peak_lr, warmup_cosine
from pipeline.training.streaming import ImageFolderStream, eval_transform, image_folder, train_transform
from test_spaces import DARTS_V2

KILLER = Path(__file__).with_name("kill_after_epoch.py")
SETTINGS = {
    "epochs": 2,
    "layers": 5,
    "init_channels": 8,
    "multiply_adds_budget": 5_000_000,
    "batch_size": 16,
    "lr": 0.1,
    "lr_batch_size": 256,
    "warmup_epochs": 1,
    "momentum": 0.9,
    "weight_decay": 3e-5,
    "label_smoothing": 0.1,
    "auxiliary_weight": 0.0,  # the auxiliary head needs 224 px
    "drop_path_prob": 0.1,
    "grad_clip": 5.0,
    "train_resolution": 64,  # the 32 px images are upsampled by the random-resized crop
    "eval_resize": 73,
    "eval_resolution": 64,
    "color_jitter": [0.4, 0.4, 0.4, 0.2],
    "eval_batch_size": 32,
    "workers": 0,
}


def transfer_params(root, seed=0, **settings):
    return {
        "dataset": "imagenet",
        "seed": seed,
        "source": {"format": "imagefolder", "train": str(root / "train"), "test": str(root / "test")},
        "settings": {**SETTINGS, **settings},
        "runtime": {"device": "cpu", "amp": "none", "channels_last": False, "threads": 1},
    }


def transfer_cli(params, genotype, out, killer_epoch=None):
    head = [str(KILLER), str(killer_epoch)] if killer_epoch is not None else ["-m", "pipeline"]
    args = ["transfer", "--params", json.dumps(params), "--genotype", str(genotype), "--out-dir", str(out), "--threads", "1"]
    return subprocess.run([sys.executable, *head, *args], capture_output=True, text=True)


# ---------------------------------------------------------------- width


def test_chooser_finds_the_largest_even_width_within_budget():
    cost = lambda c: 3 * c * c + 50 * c  # noqa: E731 - grows with C like a network's
    for budget in (160, 161, 1000, 5000, 123457):
        expected = max(c for c in range(2, 1000, 2) if cost(c) <= budget)
        assert choose_init_channels(cost, budget) == (expected, cost(expected))
    with pytest.raises(ConfigError, match="transfer.multiply_adds_budget"):
        choose_init_channels(cost, 10)


def test_chooser_against_the_counter():
    space = get_space("darts")
    cells = space.from_text(DARTS_V2)
    count = lambda c: imagenet_multiply_adds(space, cells, c, 5, 10, 64)  # noqa: E731
    budget = 5_000_000
    channels, used = choose_init_channels(count, budget)
    assert channels % 2 == 0 and used == count(channels) <= budget
    assert count(channels + 2) > budget


def test_darts_v2_at_imagenet_scale_matches_the_published_size():
    """DARTS (Liu et al., 2019): C=48, 14 cells, 4.7M parameters. Its 574M multiply-adds
    counted more than convolutions and linear layers; counting those gives ~523-530M
    (github.com/quark0/darts issue 46), under the 600M mobile budget."""
    space = get_space("darts")
    cells = space.from_text(DARTS_V2)
    with torch.device("meta"):
        net = space.build_network(cells, 48, 14, 1000, auxiliary=True, setting="imagenet")
    assert round(count_parameters(net) / 1e6, 1) == 4.7
    assert 520e6 < imagenet_multiply_adds(space, cells, 48, 14, 1000, 224) < 574e6


# ---------------------------------------------------------------- schedule


def test_learning_rate_scales_with_the_batch_warms_up_then_decays_to_zero():
    assert peak_lr({"lr": 0.1, "lr_batch_size": 256, "batch_size": 1024}) == pytest.approx(0.4)
    total, warmup = 100, 10
    factors = [warmup_cosine(step, total, warmup) for step in range(total + 1)]
    assert factors[0] == pytest.approx(0.1) and factors[warmup - 1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:warmup], factors[1:warmup]))
    assert factors[warmup] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1 :]))
    assert warmup_cosine(55, total, warmup) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


# ---------------------------------------------------------------- streamed data


def test_stream_is_repeatable_sharded_and_in_the_configured_sizes(tiny_imagenet):
    dataset = image_folder(tiny_imagenet / "train", train_transform(48, [0.4, 0.4, 0.4, 0.2]), "train")
    assert len(dataset) == 60 and dataset.classes[:2] == ["airplane", "automobile"]

    def epoch(shard=(0, 1), seed=3):
        torch.manual_seed(0)  # no workers: the augmentation draws come from the process RNG
        return list(ImageFolderStream(dataset, 16, True, 0, shard).epoch(seed))

    first, again = epoch(), epoch()
    assert [x.shape for x, _ in first] == [(16, 3, 48, 48)] * 3 + [(12, 3, 48, 48)]
    assert first[0][0].dtype == torch.uint8
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    labels = torch.cat([y for _, y in first])
    assert sorted(labels.tolist()) == sorted(dataset.targets) and labels.tolist() != sorted(labels.tolist())
    halves = [epoch((rank, 2)) for rank in range(2)]
    assert [len(y) for _, y in halves[0]] == [8, 8, 8, 6]
    assert torch.equal(torch.cat([torch.cat([a[1], b[1]]) for a, b in zip(*halves)]), labels)

    evaluation = image_folder(tiny_imagenet / "test", eval_transform(40, 32), "test")
    images, _ = next(iter(ImageFolderStream(evaluation, 64, False, 0).epoch(0)))
    assert images.shape == (30, 3, 32, 32)


def test_stream_with_workers_is_repeatable(tiny_imagenet):
    dataset = image_folder(tiny_imagenet / "train", train_transform(32, [0.4, 0.4, 0.4, 0.2]), "train")
    stream = ImageFolderStream(dataset, 32, True, 2)
    first = [x for x, _ in stream.epoch(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, [x for x, _ in stream.epoch(5)]))
    assert not torch.equal(first[0], next(iter(stream.epoch(6)))[0])


def test_resolution_too_small_for_the_auxiliary_head_is_a_config_error(tiny_imagenet, genotype_file, tmp_path):
    from pipeline.stages.transfer import run_transfer

    with pytest.raises(ConfigError, match="config key 'transfer.train_resolution': 64 px is too small"):
        run_transfer(transfer_params(tiny_imagenet, auxiliary_weight=0.4), genotype_file, tmp_path / "out", threads=1)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the stage end to end


@pytest.mark.slow
def test_transfer_cli_trains_reports_and_resumes_after_sigkill(tiny_imagenet, genotype_file, tmp_path):
    params = transfer_params(tiny_imagenet, init_channels="auto")
    full = transfer_cli(params, genotype_file, tmp_path / "a")
    assert full.returncode == 0, full.stderr[-3000:]
    metrics = artifacts.read_metrics(tmp_path / "a" / "metrics.h5")
    summary = metrics.summary
    assert f"C={summary['init_channels']}" in full.stdout and "top-5" in full.stdout
    assert summary["multiply_adds"] <= SETTINGS["multiply_adds_budget"] and summary["init_channels"] % 2 == 0
    assert summary["dataset"] == "imagenet" and summary["source_dataset"] == "cifar10"
    assert 0 <= summary["test_top1"] <= summary["test_top5"] <= 100
    assert summary["top1_error"] == pytest.approx(100 - summary["test_top1"])
    lr = metrics.epochs["lr"]  # per-step warm-up over epoch 1: it starts at a quarter of 0.1 * 16/256
    assert lr[0] == pytest.approx(0.1 * 16 / 256 / 4) and lr[1] == pytest.approx(0.1 * 16 / 256)
    model = artifacts.load_checkpoint(tmp_path / "a" / "model.pt", "transfer")
    assert model["network"]["init_channels"] == summary["init_channels"] and model["network"]["num_classes"] == 10

    killed = transfer_cli(params, genotype_file, tmp_path / "b", killer_epoch=1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "b" / "metrics.h5").exists()
    resumed = transfer_cli(params, genotype_file, tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "after epoch 1" in resumed.stderr and "transfer epoch 1/2" not in resumed.stderr
    again = artifacts.read_metrics(tmp_path / "b" / "metrics.h5")
    for series in ("train_loss", "train_top1", "test_loss", "test_top1", "test_top5"):
        assert metrics.epochs[series].tolist() == again.epochs[series].tolist(), series

    table = run_tables({"dataset": "imagenet"}, [tmp_path / "a" / "metrics.h5"], tmp_path / "imagenet.csv")
    row = artifacts.read_table(tmp_path / "imagenet.csv", kind="transfer").iloc[0]
    assert row["search_method"] == "darts_2nd" and row["source_dataset"] == "cifar10"
    assert row["top1_error_mean"] == pytest.approx(summary["top1_error"], abs=1e-4)
    assert row["init_channels"] == summary["init_channels"] and row["search_cost"] == 1.0
    assert row["search_cost_unit"] == "GPU-days" and len(table) == 1


@pytest.mark.slow
def test_transfer_cli_names_a_missing_folder(genotype_file, tmp_path):
    params = transfer_params(tmp_path / "nowhere")
    result = transfer_cli(params, genotype_file, tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "params.source.train" in result.stderr and "nowhere" in result.stderr
    assert not (tmp_path / "out").exists()


def test_dvc_yaml_gets_transfer_stages_only_when_enabled(tiny_imagenet, tmp_path, monkeypatch):
    import yaml

    from conftest import REPO
    from pipeline.planning.dvc import render_dvc_yaml

    base = [str(REPO / "config" / "config.yaml"), str(REPO / "config" / "demo.yaml")]
    overlay = tmp_path / "imagenet.yaml"
    source = {"format": "imagefolder", "train": str(tiny_imagenet / "train"), "test": str(tiny_imagenet / "test")}
    runs = {"search": {"run": ["darts_1st", "darts_2nd"]}, "select": {"run_for": {"darts_1st": ["magnitude"]}}}
    overlay.write_text(yaml.safe_dump({**runs, "data": {"imagenet": {"source": source}}, "transfer": {"enabled": True, "gpus": 4}}))
    monkeypatch.chdir(REPO)
    plain = yaml.safe_load(render_dvc_yaml(base))
    assert "transfer" not in plain["stages"] and not any("transfer" in entry for entry in plain["vars"])
    rendered = yaml.safe_load(render_dvc_yaml([*base, str(overlay)]))
    stages, variables = rendered["stages"], {k: v for entry in rendered["vars"] for k, v in entry.items()}
    assert list(variables["transfer"]) == [f"imagenet.cifar10.{search}.magnitude.seed0" for search in ("darts_1st", "darts_2nd")]
    assert stages["transfer"]["foreach"] == "${transfer}"
    stage = stages["transfer"]["do"]
    assert stage["cmd"].startswith("torchrun --standalone --nproc_per_node 4 -m pipeline transfer --params-file results/params/transfer/")
    assert "--genotype results/select/${item.dataset}/${item.search}/${item.select}/seed${item.seed}/genotype.json" in stage["cmd"]
    assert source["train"] in stage["deps"] and "results/params/code/transfer.json" in stage["deps"]
    assert stages["transfer_tables_imagenet"]["outs"] == ["results/tables/imagenet.csv"]
    # The job's parameters file holds the transfer settings, not how it is launched.
    from pipeline.config import load_config
    from pipeline.planning.codedeps import stage_code
    from pipeline.planning.jobs import job_files

    files = job_files(load_config([*base, str(overlay)]))
    params = json.loads(files["results/params/transfer/imagenet/cifar10/darts_1st/magnitude/seed0.json"])
    assert "epochs" in params["settings"] and "gpus" not in params["settings"] and params["source"] == source
    assert "src/pipeline/stages/transfer.py" in stage_code("transfer")
