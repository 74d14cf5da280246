"""Data stage: read CIFAR-style data from its source and write one checksummed uint8
artifact (``pipeline.training.data`` serves batches from it).

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
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline import artifacts, runtime
from pipeline.errors import DataSourceError
from pipeline.known_data import TORCHVISION

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


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
