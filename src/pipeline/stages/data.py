"""Data stage: read CIFAR-style data from its source, write one checksummed uint8 artifact,
and serve (augmented) batches from it on any device.

Sources (config ``data.source``):
- ``imagefolder``: ``train`` and ``test`` each a directory or a .tar/.tar.gz of class
  folders (``<class>/<image>``), optionally under a top-level folder named like the split
  (the layout of a CIFAR-10 JPEG tarball). Classes are sorted by name.
- ``torchvision``: torchvision's CIFAR-10, CIFAR-100 or SVHN files under ``root`` (chosen by
  the dataset's name; SVHN's .mat files need scipy); downloads only when ``download`` is true.
  SVHN uses its ``train`` split (not ``extra``), as the papers do.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from pipeline.errors import UserError
from pipeline import artifacts, runtime
from pipeline.known_data import TORCHVISION

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


class DataSourceError(UserError, ValueError):
    pass


# ---------------------------------------------------------------- reading sources


def _split_prefix(names: Sequence[PurePosixPath], split: str) -> tuple[str, ...]:
    """Folder parts to strip: a top-level folder named like the split, if there is one."""
    tops = {name.parts[0] for name in names if len(name.parts) > 1}
    return (split,) if split in tops else ()


def _collect(entries: dict[PurePosixPath, Any], split: str, where: str) -> list[tuple[str, Any]]:
    prefix = _split_prefix(list(entries), split)
    items = []
    for name, handle in entries.items():
        parts = name.parts[len(prefix) :]
        if name.parts[: len(prefix)] != prefix or len(parts) != 2:
            continue
        if name.suffix.lower() in IMAGE_SUFFIXES:
            items.append((parts[0], name, handle))
    if not items:
        raise DataSourceError(f"{where}: no images in <class>/<image> layout for split {split!r}")
    return [(label, handle) for label, _, handle in sorted(items, key=lambda item: (item[0], str(item[1])))]


def _decode(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, Image.UnidentifiedImageError) as exc:
        raise DataSourceError(f"{where}: not a readable image ({exc.__class__.__name__})") from None


def read_imagefolder(path: str | Path, split: str) -> tuple[np.ndarray, list[str]]:
    """Images (N,H,W,3) uint8 and their class names from a directory or tarball."""
    path = Path(path)
    if not path.exists():
        raise DataSourceError(f"{path}: file not found")
    if path.is_dir():
        entries = {PurePosixPath(p.relative_to(path).as_posix()): p for p in path.rglob("*") if p.is_file()}
        items = _collect(entries, split, str(path))
        images = [_decode(handle.read_bytes(), str(handle)) for _, handle in runtime.progress(items, desc=f"decode {split}")]
    else:
        try:
            with tarfile.open(path) as archive:
                members = {PurePosixPath(m.name.lstrip("./")): m for m in archive.getmembers() if m.isfile()}
                items = _collect(members, split, str(path))
                images = [
                    _decode(archive.extractfile(member).read(), f"{path}:{member.name}")
                    for _, member in runtime.progress(items, desc=f"decode {split}")
                ]
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataSourceError(f"{path}: not a readable tar archive ({exc.__class__.__name__}: {exc})") from None
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise DataSourceError(f"{path}: images of different sizes {sorted(shapes)[:3]}")
    return np.stack(images), [label for label, _ in items]


def read_torchvision(dataset: str, root: str | Path, download: bool, train: bool) -> tuple[np.ndarray, list[int], list[str]]:
    """Images (N,H,W,3) uint8, labels and class names of one split of a torchvision dataset."""
    import torchvision

    datasets = {
        "cifar10": lambda: torchvision.datasets.CIFAR10(root=str(root), train=train, download=download),
        "cifar100": lambda: torchvision.datasets.CIFAR100(root=str(root), train=train, download=download),
        "svhn": lambda: torchvision.datasets.SVHN(root=str(root), split="train" if train else "test", download=download),
    }
    if dataset not in TORCHVISION:
        raise DataSourceError(f"data.source.format 'torchvision' supports {', '.join(TORCHVISION)}, not {dataset!r}")
    try:
        ds = datasets[dataset]()
    except RuntimeError as exc:
        raise DataSourceError(f"{root}: {exc}") from None
    except ImportError as exc:
        raise DataSourceError(f"{root}: reading {dataset} needs the missing module {exc.name!r}") from None
    if dataset == "svhn":  # stored (N,3,H,W) with digit labels 0-9
        images, labels, classes = np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1)), [int(v) for v in ds.labels], [str(d) for d in range(10)]
    else:
        images, labels, classes = np.asarray(ds.data, dtype=np.uint8), list(ds.targets), list(ds.classes)
    # The config check sizes batches by this table before any data is read.
    known = TORCHVISION[dataset]
    expected = (known.train if train else known.test, known.classes)
    if (len(labels), len(classes)) != expected:
        split = "train" if train else "test"
        raise DataSourceError(f"{root}: {dataset} {split} has {len(labels)} images of {len(classes)} classes, not the known {expected[0]} of {expected[1]}")
    return images, labels, classes


def balanced_subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of ``per_class`` images of every class, chosen with ``seed`` (all if None)."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise DataSourceError(f"class {label} has {len(members)} images, fewer than per_class={per_class}")
        chosen.append(np.sort(rng.choice(members, per_class, replace=False)))
    return np.sort(np.concatenate(chosen))


def prepare_dataset(params: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Read the configured source and write the prepared artifact; returns its meta."""
    dataset, source = params["dataset"], params["source"]
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if source["format"] == "imagefolder":
        classes = None
        for split in ("train", "test"):
            images, names = read_imagefolder(source[split], split)
            split_classes = sorted(set(names))
            if classes is None:
                classes = split_classes
            elif split_classes != classes:
                raise DataSourceError(f"{source[split]}: classes of {split!r} differ from the train split's")
            index = {name: i for i, name in enumerate(classes)}
            splits[split] = (images, np.array([index[n] for n in names], dtype=np.int64))
        files = {split: str(source[split]) for split in ("train", "test")}
    else:
        for split in ("train", "test"):
            images, labels, classes = read_torchvision(dataset, source["root"], source.get("download", False), split == "train")
            splits[split] = (images, np.asarray(labels, dtype=np.int64))
        files = {"root": str(source["root"])}

    tensors: dict[str, torch.Tensor] = {}
    subset = params.get("subset") or {}
    for split, (images, labels) in splits.items():
        keep = balanced_subset(labels, subset.get(f"{split}_per_class"), subset.get("seed", 0))
        tensors[f"{split}_images"] = torch.from_numpy(np.ascontiguousarray(images[keep].transpose(0, 3, 1, 2)))
        tensors[f"{split}_labels"] = torch.from_numpy(labels[keep])
    train = tensors["train_images"].double() / 255.0
    meta = {
        "dataset": dataset,
        "classes": list(classes),
        "num_classes": len(classes),
        "mean": train.mean(dim=(0, 2, 3)).tolist(),
        "std": train.std(dim=(0, 2, 3)).tolist(),
        "sizes": {split: len(tensors[f"{split}_labels"]) for split in ("train", "test")},
        "source_files": files,
        "provenance": artifacts.provenance(params, seed=subset.get("seed", 0)),
    }
    artifacts.save_dataset(out, tensors, meta)
    return meta


# ---------------------------------------------------------------- serving batches


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
