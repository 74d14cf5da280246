"""The prepared dataset as the training loops read it: the data stage's artifact loaded on a
device, class-stratified splits, and normalised, augmented batches whose randomness comes
from a CPU generator seeded per epoch (the same batches on CPU and GPU, and after a resume).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import artifacts


@dataclass
class PreparedData:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    meta: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])


def load_prepared(path: str | Path, device: torch.device | str = "cpu") -> PreparedData:
    tensors, meta = artifacts.load_dataset(path)
    return PreparedData(
        tensors["train_images"].to(device),
        tensors["train_labels"].to(device),
        tensors["test_images"].to(device),
        tensors["test_labels"].to(device),
        meta,
    )


def stratified_split(labels: torch.Tensor, portion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices per class: ``portion`` of each class to the first part, the rest to the second."""
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    first, second = [], []
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = int(round(portion * len(members)))
        first.append(members[:cut])
        second.append(members[cut:])
    return torch.sort(torch.cat(first)).values, torch.sort(torch.cat(second)).values


@dataclass(frozen=True)
class Augment:
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0


def shard_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous part [lo, hi) of ``size`` items that ``rank`` of ``world_size`` takes;
    parts differ in length by at most one."""
    return size * rank // world_size, size * (rank + 1) // world_size


class BatchLoader:
    """Normalised (optionally augmented) batches of a uint8 image tensor, on its device.

    Randomness (order, crops, flips, cutout) comes from a CPU generator seeded per epoch,
    so an epoch's batches are the same on CPU and GPU and after a resume. The images stay
    on their device; the order and the augmentation draws of a whole epoch travel there
    in one copy, so serving a batch never waits for the device.

    With ``shard=(rank, world_size)`` each global batch of ``batch_size`` is split into
    contiguous parts and this loader serves part ``rank``; the augmentation draws are made
    for the whole global batch, so the shards together are exactly the one-process batch.
    A final global batch smaller than ``world_size`` is skipped by every rank (a rank
    cannot train on zero images).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | None,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Augment | None = None,
        shuffle: bool = False,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
    ):
        self.images, self.labels = images, labels
        self.indices = torch.arange(len(labels)) if indices is None else indices.cpu()
        self.batch_size = batch_size
        self.mean = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
        self.augment = augment
        self.shuffle = shuffle
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.rank, self.world_size = shard

    def __len__(self) -> int:
        return len(self.global_batch_sizes())

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def global_batch_sizes(self, batch_size: int | None = None) -> list[int]:
        """Size of every global batch an epoch yields (before sharding)."""
        size, total = batch_size or self.batch_size, len(self.indices)
        sizes = [min(size, total - start) for start in range(0, total, size)]
        return [n for n in sizes if n >= self.world_size]

    def epoch(self, seed: int, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        order = self.indices[torch.randperm(len(self.indices), generator=generator)] if self.shuffle else self.indices
        size = batch_size or self.batch_size
        starts = range(0, len(order), size)
        per_batch = [augment_draws(self.augment, min(size, len(order) - start), self.images.shape[2:], generator) for start in starts]
        # One host-to-device copy per epoch: a blocking copy per batch would wait for the GPU.
        device = self.images.device
        order = order.to(device)
        draws = {name: torch.cat([d[name] for d in per_batch], dim=-1).to(device) for name in (per_batch[0] if per_batch else {})}
        for start in starts:
            count = min(size, len(order) - start)
            if count < self.world_size:
                continue
            lo, hi = (start + bound for bound in shard_bounds(count, self.rank, self.world_size))
            index = order[lo:hi]
            yield self._batch(self.images[index], {name: value[..., lo:hi] for name, value in draws.items()}), self.labels[index]

    def _batch(self, raw: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        x = raw.float().div_(255.0)
        if "offsets" in draws:
            x = crop_at(x, self.augment.crop_padding, draws["offsets"])
        if "mirror" in draws:
            x = flip_where(x, draws["mirror"])
        x = (x - self.mean) / self.std
        if "centres" in draws:
            x = cutout_at(x, self.augment.cutout, draws["centres"])
        return x.contiguous(memory_format=self.memory_format)


def augment_draws(aug: Augment | None, batch: int, size: Sequence[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The random numbers of one batch's augmentation, drawn on the CPU in a fixed order;
    every tensor has the batch as its last axis."""
    draws: dict[str, torch.Tensor] = {}
    if aug is None:
        return draws
    if aug.crop_padding > 0:
        draws["offsets"] = torch.randint(0, 2 * aug.crop_padding + 1, (2, batch), generator=generator)
    if aug.flip:
        draws["mirror"] = torch.rand(batch, generator=generator) < 0.5
    if aug.cutout > 0:
        height, width = size
        draws["centres"] = torch.stack(
            [torch.randint(0, height, (batch,), generator=generator), torch.randint(0, width, (batch,), generator=generator)]
        )
    return draws


def crop_at(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to size at per-image (row, col) ``offsets``."""
    batch, _, height, width = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = (offsets[0, :, None] + torch.arange(height, device=x.device)).view(batch, 1, height, 1)
    cols = (offsets[1, :, None] + torch.arange(width, device=x.device)).view(batch, 1, 1, width)
    x = padded.gather(2, rows.expand(-1, x.size(1), -1, padded.size(3)))
    return x.gather(3, cols.expand(-1, x.size(1), height, -1))


def flip_where(x: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    return torch.where(mirror.view(-1, 1, 1, 1), x.flip(3), x)


def cutout_at(x: torch.Tensor, length: int, centres: torch.Tensor) -> torch.Tensor:
    """Zero one ``length`` x ``length`` square per image around ``centres`` (clipped at borders)."""
    _, _, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    half = length // 2
    inside_rows = (rows >= centres[0].view(-1, 1, 1) - half) & (rows < centres[0].view(-1, 1, 1) + half)
    inside_cols = (cols >= centres[1].view(-1, 1, 1) - half) & (cols < centres[1].view(-1, 1, 1) + half)
    return x * (~(inside_rows & inside_cols)).unsqueeze(1).to(x.dtype)


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    draws = augment_draws(Augment(padding, flip, 0), len(x), x.shape[2:], generator)
    if "offsets" in draws:
        x = crop_at(x, padding, draws["offsets"].to(x.device))
    if "mirror" in draws:
        x = flip_where(x, draws["mirror"].to(x.device))
    return x


def cutout(x: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one ``length`` x ``length`` square per image, centred anywhere (clipped at borders)."""
    draws = augment_draws(Augment(0, False, length), len(x), x.shape[2:], generator)
    return cutout_at(x, length, draws["centres"].to(x.device))
