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
import torch.nn.functional as F

from pipeline import artifacts, runtime
from pipeline.training import distributed
from pipeline.config import check_batch_fits
from pipeline.nets.counting import count_multiply_adds, count_parameters
from pipeline.training.data import Augment, BatchLoader, load_prepared, shard_bounds
from pipeline.spaces import get_space
from pipeline.training.shared import (
    check_stop,
    epoch_seed,
    evaluate_sharded,
    genotype_origin,
    load_resume_state,
    record_epoch,
    restore_training_state,
    resume_key,
    train_epoch,
    training_state,
    write_results,
)

RESUME_FILE = Path("checkpoint") / "last.pt"
RANK_SEED_STRIDE = 100_003  # ranks > 0 draw their own drop-path masks


def run_retrain(params: dict[str, Any], genotype_path: str | Path, data_path: str | Path, out_dir: str | Path, threads: int = 0) -> dict:
    genotype = artifacts.read_genotype(genotype_path)
    world, device = distributed.start(runtime.resolve_device(params["runtime"]["device"]))
    try:
        return _retrain(params, genotype, Path(genotype_path), data_path, Path(out_dir), threads, world, device)
    finally:
        distributed.stop(world)


def auxiliary_criterion(auxiliary_weight: float, label_smoothing: float = 0.0):
    """Summed cross-entropy of the logits plus ``auxiliary_weight`` times the auxiliary head's."""

    def criterion(logits, logits_aux, labels):
        loss = F.cross_entropy(logits, labels, reduction="sum", label_smoothing=label_smoothing)
        if logits_aux is not None:
            loss = loss + auxiliary_weight * F.cross_entropy(logits_aux, labels, reduction="sum", label_smoothing=label_smoothing)
        return loss

    return criterion


def _retrain(params, genotype, genotype_path: Path, data_path, out_dir: Path, threads: int, world, device) -> dict:
    settings, rt, seed = params["settings"], params["runtime"], params["seed"]
    runtime.configure(threads, seed + RANK_SEED_STRIDE * world.rank)
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

    history: dict[str, list] = {}
    start_epoch = 0
    resume_path = out_dir / RESUME_FILE
    resume = resume_key(params, data_path, genotype_cells=genotype["cells"])
    state = load_resume_state(resume_path, "retrain", resume)
    if state is not None:
        history, start_epoch = restore_training_state(state, model, optimizer, scheduler, scaler, world)

    def payload(epoch: int) -> dict[str, Any]:
        return {
            **training_state(epoch, model, optimizer, scheduler, scaler, history, world),
            "provenance": artifacts.provenance(
                params, seed=seed, device=str(device), world_size=world.world_size, resume_key=resume
            ),
        }

    epochs = settings["epochs"]
    for epoch in runtime.progress(range(start_epoch, epochs), desc="retrain epochs", total=epochs - start_epoch, leave=True):
        started = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        net.drop_path_prob = settings["drop_path_prob"] * epoch / epochs
        model.train()
        train = train_epoch(
            model, train_loader.epoch(epoch_seed(seed, epoch, 2)), train_loader.global_batch_sizes(), optimizer, scaler,
            criterion, settings["grad_clip"], device, rt["amp"], world, desc=f"epoch {epoch + 1}",
        )
        scheduler.step()
        test = evaluate_sharded(model, test_loader.epoch(seed=0), device, rt["amp"], world)
        row = {
            "epoch": epoch,
            "lr": lr,
            "drop_path_prob": net.drop_path_prob,
            "train_loss": train["train_loss"],
            "train_acc": train["train_top1"],
            "test_loss": test["test_loss"],
            "test_acc": test["test_top1"],
            "wall_time": time.perf_counter() - started,
        }
        record_epoch("retrain", history, row, lambda: payload(epoch + 1), resume_path, world)
        runtime.log(
            f"retrain epoch {epoch + 1}/{epochs}: train acc {row['train_acc']:.2f} loss {row['train_loss']:.3f} | "
            f"test acc {row['test_acc']:.2f} loss {row['test_loss']:.3f} | {row['wall_time']:.1f}s"
        )
        check_stop(epoch + 1, epochs, resume_path)

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
    write_results("retrain", out_dir, history, summary, provenance, payload(epochs), resume_path, world)
    runtime.log(f"retrain done: test acc {summary['test_acc']:.2f}%, {summary['params_m']:.3f}M params")
    return summary
