"""Streamed ImageFolder data for the transfer stage (ImageNet does not fit in memory).

DataLoader workers decode and augment: training gets a random-resized crop, a horizontal
flip and colour jitter; evaluation resizes the shorter side and takes the centre crop.
Workers hand over uint8 tensors (a quarter of float32's bytes to pin and copy); the
device converts and normalises them.

Batches follow the retrain loader's rules: the order of an epoch comes from its seed,
each global batch is split into contiguous shards, one per rank, and a final global
batch smaller than the number of ranks is skipped. The augmentation draws of worker w
come from a generator seeded with (epoch seed, rank), so an epoch is repeatable for a
fixed worker count; with no workers they come from the process's RNG, which the
training checkpoints save.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler

from pipeline.errors import DataSourceError
from pipeline.training.data import shard_bounds

# The ImageNet channel statistics every DARTS-family ImageNet run normalises with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _read_rgb(path: str) -> Image.Image:
    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            return image.convert("RGB")
    except (OSError, Image.UnidentifiedImageError) as exc:
        raise DataSourceError(f"{path}: not a readable image ({exc.__class__.__name__})") from None


def train_transform(resolution: int, color_jitter: Sequence[float]):
    from torchvision.transforms import v2

    brightness, contrast, saturation, hue = color_jitter
    return v2.Compose(
        [
            v2.RandomResizedCrop(resolution, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue),
            v2.PILToTensor(),
        ]
    )


def eval_transform(resize: int, resolution: int):
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(resolution), v2.PILToTensor()])


def image_folder(root: str | Path, transform, where: str):
    """torchvision's ImageFolder (classes = sorted sub-folder names) with one-line errors."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"{where}: {root} is not a directory of class folders")
    try:
        return ImageFolder(str(root), transform=transform, loader=_read_rgb)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataSourceError(f"{where}: {root}: {str(exc).splitlines()[0]}") from None


class ShardedBatches(Sampler[list[int]]):
    """This rank's index lists: global batches of ``batch_size`` from a seeded order, each
    cut into ``world_size`` contiguous shards."""

    def __init__(self, size: int, batch_size: int, shuffle: bool, shard: tuple[int, int] = (0, 1)):
        self.size, self.batch_size, self.shuffle = size, batch_size, shuffle
        self.rank, self.world_size = shard
        self.seed = 0

    def global_batch_sizes(self) -> list[int]:
        sizes = [min(self.batch_size, self.size - start) for start in range(0, self.size, self.batch_size)]
        return [n for n in sizes if n >= self.world_size]

    def __len__(self) -> int:
        return len(self.global_batch_sizes())

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed))
        else:
            order = torch.arange(self.size)
        for start in range(0, self.size, self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) < self.world_size:
                continue
            lo, hi = shard_bounds(len(batch), self.rank, self.world_size)
            yield batch[lo:hi].tolist()


class ImageFolderStream:
    """Batches of one ImageFolder split as (uint8 images on the CPU, labels)."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, workers: int, shard: tuple[int, int] = (0, 1), pin_memory: bool = False):
        self.dataset = dataset
        self.sampler = ShardedBatches(len(dataset), batch_size, shuffle, shard)
        self.workers = workers
        self.pin_memory = pin_memory
        self.rank = shard[0]

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    def __len__(self) -> int:
        return len(self.sampler)

    def global_batch_sizes(self) -> list[int]:
        return self.sampler.global_batch_sizes()

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.seed = seed
        # Worker w seeds its augmentation with base + w; the base depends on (seed, rank).
        generator = torch.Generator().manual_seed(seed * 1_000 + self.rank)
        loader = DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            generator=generator,
        )
        try:
            yield from loader
        except DataSourceError as exc:
            # A worker's error arrives with its traceback; keep the line naming the file.
            raise DataSourceError(str(exc).strip().splitlines()[-1].split("DataSourceError: ")[-1]) from None


class DeviceBatches:
    """Moves uint8 batches to the device and normalises them there."""

    def __init__(self, device: torch.device, channels_last: bool, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.device = device
        self.mean = 255.0 * torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = 255.0 * torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in batches:
            x = images.to(self.device, non_blocking=True).float()
            x = ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)
            yield x, labels.to(self.device, non_blocking=True)

