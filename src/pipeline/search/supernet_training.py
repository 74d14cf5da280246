"""Training a supernet with a search method, as the search stage does it and the selection
methods that rebuild or fine-tune the supernet repeat it (select/pt.py, select/trainfree.py):
the search's split of the train set and its loaders, the supernet built from the settings,
and one epoch of the method's training steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline import runtime
from pipeline.training.data import Augment, BatchLoader, PreparedData, stratified_split
from pipeline.training.steps import epoch_seed


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


def train_supernet_epoch(
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
