"""The search loop shared by every method: epochs, LR schedule, validation, checkpoints.

State is saved after every epoch to ``<out_dir>/checkpoint/last.pt``; a rerun with the
same parameters and data resumes there, and the final supernet and metrics are identical
to an uninterrupted run because each epoch's data order comes from (seed, epoch) alone.
The declared outputs (supernet.pt, metrics.h5) are written only at the end.

A method may change its supernet between stages (``supernet_settings``: progressive
DrNAS lowers the partial-channel K): after the last epoch of a stage the mixed ops are
widened in place (``search/widen.py``) before that epoch's checkpoint, so a resumed run
builds the supernet of the stage its checkpoint is in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import artifacts, runtime
from pipeline.config import check_batch_fits
from pipeline.training.data import Augment, BatchLoader, PreparedData, load_prepared, stratified_split
from pipeline.search import METHODS
from pipeline.search.widen import widen_supernet
from pipeline.spaces import get_space
from pipeline.training.shared import (
    check_stop,
    epoch_seed,
    evaluate,
    finish,
    load_resume_state,
    restore_training_state,
    resume_key,
    training_state,
)

SUPERNET_FILE = "supernet.pt"
# What magnitude selection excludes by default (select.magnitude's exclude_ops default; a
# test keeps the two in step): the per-epoch ground truth is of the cell it would derive.
MAGNITUDE_EXCLUDE = ("none",)
METRICS_FILE = "metrics.h5"
RESUME_FILE = Path("checkpoint") / "last.pt"


def run_search(params: dict[str, Any], data_path: str | Path, out_dir: str | Path, threads: int = 0) -> Path:
    settings, options, rt = params["settings"], params["options"], params["runtime"]
    seed = params["seed"]
    out_dir = Path(out_dir)
    device = runtime.resolve_device(rt["device"])
    runtime.configure(threads, seed)
    data = load_prepared(data_path, device)
    space = get_space(settings["space"])
    method_cls = METHODS.get(options["algorithm"])
    loaders = search_loaders(data, settings, rt["channels_last"])
    halves = [loaders.w.num_samples] + ([loaders.a.num_samples] if method_cls.bilevel else [])
    split = f"{data_path}'s search split half (search {params['method']})"
    check_batch_fits("search.settings.batch_size", settings["batch_size"], min(halves), split)
    loader_eval = loaders.eval
    resume_path = out_dir / RESUME_FILE
    resume = resume_key(params, data_path)
    state = load_resume_state(resume_path, "supernet", resume)
    # The supernet of the stage the run starts (or resumes) in.
    shape = method_cls.supernet_settings(options, settings, state["epoch"] if state is not None else 0)
    model = build_supernet(space, shape, data.num_classes, device, rt["channels_last"])
    method = method_cls(space, model, options, settings, device, rt["amp"])
    method.on_data(loaders.w.num_samples, loaders.a.num_samples)
    method.validate = lambda weights: evaluate(model, loader_eval, {"weights": weights}, device, rt["amp"], bn=settings["eval_bn"])
    w_optimizer, w_lr_min = method.make_weight_optimizer(model.parameters())
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, settings["epochs"], eta_min=w_lr_min)

    history: dict[str, list] = {}
    start_epoch = 0
    if state is not None:
        history, start_epoch = restore_training_state(state, model, w_optimizer, scheduler, method.scaler)
        method.load_state_dict(state["method"])

    def payload(epoch: int) -> dict[str, Any]:
        return {
            **training_state(epoch, model, w_optimizer, scheduler, method.scaler, history),
            "method": method.state_dict(),
            "arch_weights": {k: w.cpu() for k, w in method.eval_weights().items()},
            "provenance": artifacts.provenance(
                params,
                seed=seed,
                device=str(device),
                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                search_seconds=float(sum(history.get("wall_time", []))),
                resume_key=resume,
            ),
        }

    epochs = settings["epochs"]
    for epoch in runtime.progress(range(start_epoch, epochs), desc="search epochs", total=epochs - start_epoch, leave=True):
        started = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        method.on_epoch_start(epoch, epochs)
        batch_size = method.batch_size(settings["batch_size"])
        train_loss, train_acc = train_epoch(
            method, loaders, w_optimizer, lr, seed, epoch, desc=f"epoch {epoch + 1}", batch_size=batch_size
        )
        scheduler.step()
        valid_loss, valid_acc = evaluate(
            model, loader_eval, {"weights": method.eval_weights()}, device, rt["amp"], bn=settings["eval_bn"]
        )
        method.on_epoch_end(epoch, epochs)
        row = {
            "epoch": epoch,
            "lr": lr,
            "batch_size": batch_size,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "valid_loss": valid_loss,
            "valid_acc": valid_acc,
            "wall_time": time.perf_counter() - started,
        }
        row.update({f"weights_{k}": w.cpu().numpy() for k, w in method.eval_weights().items()})
        row.update(ground_truth_row(space, method.eval_weights(), params["dataset"]))
        row.update(method.snapshot())
        for key, value in row.items():
            history.setdefault(key, []).append(torch.as_tensor(value))
        following = method_cls.supernet_settings(options, settings, epoch + 1)
        if epoch + 1 < epochs and following != shape:  # the next stage's wider mixed ops
            grown = build_supernet(space, following, data.num_classes, device, rt["channels_last"])
            widen_supernet(model, grown, torch.Generator().manual_seed(epoch_seed(seed, epoch + 1, 2)), w_optimizer)
            shape = following
        artifacts.save_checkpoint(resume_path, "supernet", payload(epoch + 1))
        runtime.log(
            f"search epoch {epoch + 1}/{epochs}: train acc {row['train_acc']:.2f} loss {row['train_loss']:.3f} | "
            f"valid acc {valid_acc:.2f} loss {valid_loss:.3f} | {row['wall_time']:.1f}s"
        )
        check_stop(epoch + 1, epochs, resume_path)

    # The declared outputs appear only once the search is complete.
    _write_metrics(out_dir / METRICS_FILE, history, params, options, settings)
    artifacts.save_checkpoint(out_dir / SUPERNET_FILE, "supernet", payload(epochs))
    finish(resume_path)
    return out_dir / SUPERNET_FILE


def ground_truth_row(space, weights: dict[str, torch.Tensor], dataset: str) -> dict[str, Any]:
    """For a space with a benchmark table (NAS-Bench-201): the benchmark's accuracy on
    ``dataset`` of the cell that magnitude selection derives from ``weights`` now, so a
    search records how its magnitude pick would score after every epoch; else nothing."""
    ground_truth = getattr(space, "ground_truth", None)
    if ground_truth is None:
        return {}
    return ground_truth(space.parse(weights, MAGNITUDE_EXCLUDE), dataset) or {}


@dataclass
class SearchLoaders:
    """The search's data: weights train on ``w``, architecture steps read ``a``, and the
    supernet is validated on ``eval`` (the architecture half, unaugmented)."""

    w: BatchLoader
    a: BatchLoader
    eval: BatchLoader


def search_split(labels: torch.Tensor, num_classes: int, settings: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the weight half and the architecture half of the (subset of the) train set."""
    pool = torch.arange(len(labels))
    if settings["subset_per_class"] is not None:
        per_class = settings["subset_per_class"] / (len(pool) / num_classes)
        pool, _ = stratified_split(labels, min(per_class, 1.0), settings["split_seed"])
    train_pos, arch_pos = stratified_split(labels[pool], settings["train_portion"], settings["split_seed"])
    return pool[train_pos], pool[arch_pos]


def search_loaders(data: PreparedData, settings: dict[str, Any], channels_last: bool, eval_batch_size: int | None = None) -> SearchLoaders:
    """The loaders of a search with ``settings`` (selection methods rebuild the same split)."""
    train_idx, arch_idx = search_split(data.train_labels, data.num_classes, settings)
    augment = Augment(crop_padding=4, flip=True, cutout=0)
    common = dict(mean=data.meta["mean"], std=data.meta["std"], channels_last=channels_last)
    images, labels, batch = data.train_images, data.train_labels, settings["batch_size"]
    return SearchLoaders(
        w=BatchLoader(images, labels, train_idx, batch, augment=augment, shuffle=True, **common),
        a=BatchLoader(images, labels, arch_idx, batch, augment=augment, shuffle=True, **common),
        eval=BatchLoader(images, labels, arch_idx, eval_batch_size or settings["eval_batch_size"], **common),
    )


def build_supernet(space, settings: dict[str, Any], num_classes: int, device: torch.device, channels_last: bool) -> nn.Module:
    """The search's supernet; ``settings.partial_channels`` K > 1 gives PC-DARTS mixed ops
    (any method on a DARTS-family cell space), so whoever rebuilds it from the settings
    (selection) gets the same shapes."""
    k = settings.get("partial_channels", 1)
    if k == 1:
        model = space.build_supernet(settings["init_channels"], settings["layers"], num_classes)
    else:
        model = space.build_supernet(settings["init_channels"], settings["layers"], num_classes, partial_channels=k)
    return model.to(device, memory_format=runtime.memory_format(channels_last))


def train_epoch(
    method, loaders: SearchLoaders, w_optimizer, lr: float, seed: int, epoch: int, desc: str, batch_size: int | None = None
) -> tuple[float, float]:
    """One pass of ``method.train_step`` over the weight half (batches of ``batch_size``,
    default the loaders'); a method that is not bilevel gets no architecture batches.
    Returns (mean loss, accuracy %). The batches depend on (seed, epoch) only, so a resumed
    run replays the same ones."""
    method.model.train()
    size = batch_size or loaders.w.batch_size
    batches_w = loaders.w.epoch(epoch_seed(seed, epoch, 0), size)
    steps = -(-loaders.w.num_samples // size)
    if method.bilevel:
        batches = zip(batches_w, loaders.a.epoch(epoch_seed(seed, epoch, 1), size))
        steps = min(steps, -(-loaders.a.num_samples // size))
    else:
        batches = ((batch_w, None) for batch_w in batches_w)
    loss_sum, correct, seen = 0.0, 0, 0
    for batch_w, batch_a in runtime.progress(batches, desc=desc, total=steps):
        loss, logits = method.train_step(batch_w, batch_a, w_optimizer, lr)
        y = batch_w[1]
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        seen += len(y)
    return loss_sum / seen, 100.0 * correct / seen


def _write_metrics(path: Path, history: dict[str, list], params, options, settings) -> None:
    epochs = {key: np.stack([torch.as_tensor(v).numpy() for v in values]) for key, values in history.items()}
    summary = {
        "search_method": params["method"],
        "algorithm": options["algorithm"],
        "space": settings["space"],
        "search_seconds": float(epochs["wall_time"].sum()),
        "final_valid_acc": float(epochs["valid_acc"][-1]),
    }
    if "benchmark_test_acc" in epochs:  # the magnitude pick's ground truth after the last epoch
        summary["benchmark_test_acc"] = float(epochs["benchmark_test_acc"][-1])
    provenance = artifacts.provenance(params, seed=params["seed"])
    artifacts.write_metrics(path, artifacts.Metrics("search", epochs, summary, provenance))
