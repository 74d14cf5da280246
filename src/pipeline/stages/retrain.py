"""Retrain stage: the derived network from scratch (DARTS' CIFAR protocol).

SGD with cosine LR, cutout, drop-path ramped linearly from 0 to ``drop_path_prob``,
auxiliary head weighted by ``auxiliary_weight``, gradient clipping. Resumable per epoch.
The prepared uint8 images live on the training device and are augmented there. Under
``torchrun`` (see pipeline.training.distributed) each rank trains on its shard of every global
batch of ``batch_size``; rank 0 writes the checkpoints and artifacts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from pipeline import artifacts, runtime
from pipeline.config import check_batch_fits
from pipeline.nets.counting import count_multiply_adds, count_parameters
from pipeline.spaces import get_space
from pipeline.training import distributed
from pipeline.training.checkpoints import resume_key
from pipeline.training.data import Augment, BatchLoader, load_prepared, shard_bounds
from pipeline.training.loop import RESUME_FILE, EpochLoop, Trained, genotype_origin, history_series
from pipeline.training.steps import auxiliary_criterion, epoch_seed, evaluate_sharded, ramp_drop_path, train_epoch


def run_retrain(params: dict[str, Any], genotype_path: str | Path, data_path: str | Path, out_dir: str | Path, threads: int = 0) -> dict:
    genotype = artifacts.read_genotype(genotype_path)
    world, device = distributed.start(runtime.resolve_device(params["runtime"]["device"]))
    try:
        return _retrain(params, genotype, Path(genotype_path), data_path, Path(out_dir), threads, world, device)
    finally:
        distributed.stop(world)


def _retrain(params, genotype, genotype_path: Path, data_path, out_dir: Path, threads: int, world, device) -> dict:
    settings, rt, seed = params["settings"], params["runtime"], params["seed"]
    runtime.configure(rt, threads, world.seed(seed))
    data = load_prepared(data_path, device)
    check_batch_fits("retrain.batch_size", settings["batch_size"], len(data.train_labels), f"{data_path}'s train split")
    space = get_space(genotype["space"])

    fmt = runtime.memory_format(rt["channels_last"])
    net = space.build_network(
        genotype["cells"], settings["init_channels"], settings["layers"], data.num_classes, settings["auxiliary_weight"] > 0
    ).to(device, memory_format=fmt)
    params_count = count_parameters(net)
    multiply_adds = count_multiply_adds(net, (1, 3, *data.train_images.shape[2:]))
    model = distributed.wrap(net, world, device)
    net = distributed.unwrap(model)

    common = dict(mean=data.meta["mean"], std=data.meta["std"], channels_last=rt["channels_last"])
    train_loader = BatchLoader(
        data.train_images, data.train_labels, None, settings["batch_size"],
        augment=Augment(crop_padding=4, flip=True, cutout=settings["cutout"]), shuffle=True, shard=world.shard, **common,
    )
    test_part = torch.arange(*shard_bounds(len(data.test_labels), *world.shard))
    test_loader = BatchLoader(data.test_images, data.test_labels, test_part, settings["eval_batch_size"], **common)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings["epochs"], eta_min=settings["lr_min"])
    scaler = runtime.grad_scaler(device, rt["amp"])
    criterion = auxiliary_criterion(settings["auxiliary_weight"])

    epochs = settings["epochs"]

    def run_epoch(epoch: int) -> dict[str, Any]:
        started = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        drop_path_prob = ramp_drop_path(net, settings["drop_path_prob"], epoch, epochs)
        model.train()
        train = train_epoch(
            model, train_loader.epoch(epoch_seed(seed, epoch, 2)), train_loader.global_batch_sizes(), optimizer, scaler,
            criterion, settings["grad_clip"], device, rt["amp"], world, desc=f"epoch {epoch + 1}",
        )
        scheduler.step()
        test = evaluate_sharded(model, test_loader.epoch(seed=0), device, rt["amp"], world)
        return {
            "epoch": epoch,
            "lr": lr,
            "drop_path_prob": drop_path_prob,
            "train_loss": train["train_loss"],
            "train_acc": train["train_top1"],
            "test_loss": test["test_loss"],
            "test_acc": test["test_top1"],
            "wall_time": time.perf_counter() - started,
        }

    resume = resume_key(params, data_path, genotype_cells=genotype["cells"])
    loop = EpochLoop(
        "retrain", "retrain", epochs, Trained(model, optimizer, scheduler, scaler), run_epoch, out_dir / RESUME_FILE, resume,
        fields=lambda epoch: {
            "provenance": artifacts.provenance(params, seed=seed, device=str(device), world_size=world.world_size, resume_key=resume)
        },
        describe=lambda row: (
            f"train acc {row['train_acc']:.2f} loss {row['train_loss']:.3f} | "
            f"test acc {row['test_acc']:.2f} loss {row['test_loss']:.3f} | {row['wall_time']:.1f}s"
        ),
        world=world,
    )
    history = loop.run()

    summary = {
        "test_acc": float(history["test_acc"][-1]),
        "test_error": 100.0 - float(history["test_acc"][-1]),
        "params": params_count,
        "params_m": params_count / 1e6,
        "multiply_adds": multiply_adds,
        "retrain_seconds": float(sum(history["wall_time"])),
        "dataset": params["dataset"],
        "space": genotype["space"],
        "seed": seed,
        **genotype_origin(genotype, genotype_path),
        "genotype_text": space.to_text(genotype["cells"]),
        "device": str(device),
        "world_size": world.world_size,
    }
    provenance = artifacts.provenance(params, seed=seed, genotype_file=str(genotype_path), device=str(device), world_size=world.world_size)
    loop.write_results(out_dir, artifacts.Metrics("retrain", history_series(history), summary, provenance))
    runtime.log(f"retrain done: test acc {summary['test_acc']:.2f}%, {summary['params_m']:.3f}M params")
    return summary
