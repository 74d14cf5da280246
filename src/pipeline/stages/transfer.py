"""Transfer stage: a searched cell trained on ImageNet in the mobile setting.

DARTS' ImageNet protocol (14 cells, a stride-8 stem, auxiliary head 0.4, label smoothing
0.1, SGD momentum 0.9, weight decay 3e-5, gradient clipping 5, 250 epochs) with the
schedule of its successors: lr 0.1 per 256 images scaled linearly to the global batch,
a linear warm-up over the first epochs, then cosine to 0, stepped per batch. The initial
channel count is the largest even C whose network stays within the multiply-add budget
(600M at 224x224 for the mobile setting). Data is streamed from ImageFolder directories
(pipeline.training.streaming); multi-GPU runs go through torchrun like the retrain stage.

Multiply-adds are counted by pipeline.nets.counting (convolutions and linear layers): DARTS V2
at C=48 gives 530M here, below the 574M the DARTS paper reports, which counted more than
convolutions and linear layers (github.com/quark0/darts issue 46 finds 523M for
convolutions and linear layers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline import artifacts, runtime
from pipeline.config import check_batch_fits
from pipeline.errors import ConfigError
from pipeline.nets.counting import count_multiply_adds, count_parameters
from pipeline.spaces import get_space
from pipeline.training import distributed
from pipeline.training.loop import RESUME_FILE, EpochLoop, Trained, genotype_origin, history_series
from pipeline.training.steps import auxiliary_criterion, epoch_seed, evaluate_sharded, ramp_drop_path, train_epoch
from pipeline.training.streaming import DeviceBatches, ImageFolderStream, eval_transform, image_folder, train_transform

CHANNEL_STEP = 2  # FactorizedReduce and the stem's C/2 need an even C


# ---------------------------------------------------------------- the network's width


def imagenet_multiply_adds(space, cells: dict, channels: int, layers: int, num_classes: int, resolution: int) -> int:
    """Multiply-adds of one ``resolution`` image through the ImageNet network at ``channels``
    (built on the meta device: shapes only, no memory, no arithmetic)."""
    with torch.device("meta"):
        net = space.build_network(cells, channels, layers, num_classes, auxiliary=False, setting="imagenet")
    return count_multiply_adds(net, (1, 3, resolution, resolution))


def choose_init_channels(count: Callable[[int], int], budget: int, step: int = CHANNEL_STEP) -> tuple[int, int]:
    """The largest multiple of ``step`` whose ``count(C)`` is at most ``budget``, and its count.

    Multiply-adds grow with C, so a doubling search brackets the answer and bisection finds it."""
    low_count = count(step)
    if low_count > budget:
        raise ConfigError(
            f"config key 'transfer.multiply_adds_budget': {budget} is below the smallest network's {low_count} (C={step})"
        )
    low, high = step, 2 * step
    counts = {step: low_count}
    while True:
        counts[high] = count(high)
        if counts[high] > budget:
            break
        low, high = high, 2 * high
    while high - low > step:  # count(low) <= budget < count(high)
        middle = (low + high) // (2 * step) * step
        counts[middle] = count(middle)
        if counts[middle] <= budget:
            low = middle
        else:
            high = middle
    return low, counts[low]


# ---------------------------------------------------------------- the schedule


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor of ``step``: linear from 1/warmup_steps to 1 over the warm-up,
    then half a cosine down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def peak_lr(settings: dict) -> float:
    """The lr for the global batch: linear scaling from ``lr`` at ``lr_batch_size``."""
    return settings["lr"] * settings["batch_size"] / settings["lr_batch_size"]


# ---------------------------------------------------------------- the stage


def run_transfer(params: dict[str, Any], genotype_path: str | Path, out_dir: str | Path, threads: int = 0) -> dict:
    genotype = artifacts.read_genotype(genotype_path)
    world, device = distributed.start(runtime.resolve_device(params["runtime"]["device"]))
    try:
        return _transfer(params, genotype, Path(genotype_path), Path(out_dir), threads, world, device)
    finally:
        distributed.stop(world)


def _check_resolutions(space, cells, settings: dict, num_classes: int) -> None:
    """A forward at the configured sizes (on meta tensors), so that a too small image is a
    config error rather than a crash in the first batch."""
    try:
        with torch.device("meta"):
            net = space.build_network(cells, CHANNEL_STEP * 2, settings["layers"], num_classes, settings["auxiliary_weight"] > 0, setting="imagenet")
    except ValueError as exc:
        raise ConfigError(f"config key 'transfer': no ImageNet network for this {space.name!r} genotype: {exc}") from None
    for key, training in (("train_resolution", True), ("eval_resolution", False)):
        size = settings[key]
        net.train(training)
        try:
            net(torch.zeros(2, 3, size, size, device="meta"))
        except RuntimeError as exc:
            head = " (with the auxiliary head; auxiliary_weight 0 removes it)" if training and settings["auxiliary_weight"] > 0 else ""
            raise ConfigError(f"config key 'transfer.{key}': {size} px is too small for the {settings['layers']}-cell network{head}: {str(exc).splitlines()[0]}") from None


def _transfer(params, genotype, genotype_path: Path, out_dir: Path, threads: int, world, device) -> dict:
    settings, rt, seed, source = params["settings"], params["runtime"], params["seed"], params["source"]
    runtime.configure(rt, threads, world.seed(seed))
    space = get_space(genotype["space"])
    cells = genotype["cells"]

    where = f"config key 'data.{params['dataset']}.source"
    train_set = image_folder(source["train"], train_transform(settings["train_resolution"], settings["color_jitter"]), f"{where}.train'")
    test_set = image_folder(source["test"], eval_transform(settings["eval_resize"], settings["eval_resolution"]), f"{where}.test'")
    if train_set.classes != test_set.classes:
        raise ConfigError(f"{where}.test': its class folders differ from the train split's")
    num_classes = len(train_set.classes)
    check_batch_fits("transfer.batch_size", settings["batch_size"], len(train_set), f"{source['train']}")
    pin = device.type == "cuda"
    train_stream = ImageFolderStream(train_set, settings["batch_size"], True, settings["workers"], world.shard, pin)
    test_stream = ImageFolderStream(test_set, settings["eval_batch_size"], False, settings["workers"], world.shard, pin)
    to_device = DeviceBatches(device, rt["channels_last"])

    _check_resolutions(space, cells, settings, num_classes)
    layers, resolution = settings["layers"], settings["eval_resolution"]
    count = lambda channels: imagenet_multiply_adds(space, cells, channels, layers, num_classes, resolution)  # noqa: E731
    if settings["init_channels"] == "auto":
        channels, multiply_adds = choose_init_channels(count, settings["multiply_adds_budget"])
    else:
        channels, multiply_adds = settings["init_channels"], count(settings["init_channels"])
    network = {"init_channels": channels, "layers": layers, "num_classes": num_classes, "setting": "imagenet",
               "auxiliary": settings["auxiliary_weight"] > 0, "classes": train_set.classes}
    net = space.build_network(cells, channels, layers, num_classes, network["auxiliary"], setting="imagenet")
    net = net.to(device, memory_format=runtime.memory_format(rt["channels_last"]))
    params_count = count_parameters(net)
    runtime.log(
        f"transfer network: C={channels}, {layers} cells, {params_count / 1e6:.2f}M params, "
        f"{multiply_adds / 1e6:.0f}M multiply-adds at {resolution}px (budget {settings['multiply_adds_budget'] / 1e6:.0f}M)"
    )
    model = distributed.wrap(net, world, device)
    net = distributed.unwrap(model)

    lr = peak_lr(settings)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=settings["momentum"], weight_decay=settings["weight_decay"])
    steps_per_epoch = len(train_stream)
    total_steps, warmup_steps = settings["epochs"] * steps_per_epoch, settings["warmup_epochs"] * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps))
    scaler = runtime.grad_scaler(device, rt["amp"])
    criterion = auxiliary_criterion(settings["auxiliary_weight"], settings["label_smoothing"])

    epochs = settings["epochs"]

    def run_epoch(epoch: int) -> dict[str, Any]:
        started = time.perf_counter()
        epoch_lr = scheduler.get_last_lr()[0]
        drop_path_prob = ramp_drop_path(net, settings["drop_path_prob"], epoch, epochs)
        model.train()
        train = train_epoch(
            model, to_device(train_stream.epoch(epoch_seed(seed, epoch, 3))), train_stream.global_batch_sizes(), optimizer,
            scaler, criterion, settings["grad_clip"], device, rt["amp"], world, after_step=scheduler.step, topk=(1, 5),
            desc=f"epoch {epoch + 1}",
        )
        test = evaluate_sharded(model, to_device(test_stream.epoch(0)), device, rt["amp"], world, topk=(1, 5))
        return {"epoch": epoch, "lr": epoch_lr, "drop_path_prob": drop_path_prob, **train, **test,
                "wall_time": time.perf_counter() - started}

    # ImageNet is too big to hash: the key holds the source paths (in params) and the cells.
    resume = {"params": params, "genotype_cells": cells}
    loop = EpochLoop(
        "transfer", "transfer", epochs, Trained(model, optimizer, scheduler, scaler), run_epoch, out_dir / RESUME_FILE, resume,
        fields=lambda epoch: {
            "network": network,
            "provenance": artifacts.provenance(params, seed=seed, device=str(device), world_size=world.world_size, resume_key=resume),
        },
        describe=lambda row: (
            f"train top-1 {row['train_top1']:.2f} loss {row['train_loss']:.3f} | "
            f"test top-1 {row['test_top1']:.2f} top-5 {row['test_top5']:.2f} | {row['wall_time']:.1f}s"
        ),
        world=world,
    )
    history = loop.run()

    top1, top5 = float(history["test_top1"][-1]), float(history["test_top5"][-1])
    summary = {
        "test_top1": top1,
        "test_top5": top5,
        "top1_error": 100.0 - top1,
        "top5_error": 100.0 - top5,
        "init_channels": channels,
        "layers": layers,
        "params": params_count,
        "params_m": params_count / 1e6,
        "multiply_adds": multiply_adds,
        "multiply_adds_m": multiply_adds / 1e6,
        "multiply_adds_budget": settings["multiply_adds_budget"],
        "eval_resolution": resolution,
        "transfer_seconds": float(sum(history["wall_time"])),
        "dataset": params["dataset"],
        "source_dataset": (genotype["provenance"].get("params") or {}).get("dataset", "unknown"),
        "space": genotype["space"],
        "seed": seed,
        **genotype_origin(genotype, genotype_path),
        "device": str(device),
        "world_size": world.world_size,
    }
    provenance = artifacts.provenance(params, seed=seed, genotype_file=str(genotype_path), device=str(device), world_size=world.world_size)
    loop.write_results(out_dir, artifacts.Metrics("transfer", history_series(history), summary, provenance))
    runtime.log(f"transfer done: top-1 {top1:.2f}%, top-5 {top5:.2f}%, C={channels}, {summary['params_m']:.2f}M params")
    return summary
