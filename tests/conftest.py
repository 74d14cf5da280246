from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from pipeline.stages.data import prepare_dataset

REPO = Path(__file__).resolve().parents[1]
DEMO_TAR = REPO / "data" / "demo" / "cifar10-demo.tar.gz"

SEARCH_SETTINGS = {
    "space": "darts",
    "epochs": 2,
    "init_channels": 2,
    "layers": 3,
    "batch_size": 16,
    "subset_per_class": None,
    "train_portion": 0.5,
    "split_seed": 0,
    "w_lr": 0.025,
    "w_lr_min": 0.001,
    "w_momentum": 0.9,
    "w_weight_decay": 3e-4,
    "grad_clip": 5.0,
    "eval_batch_size": 64,
    "eval_bn": "running",
}
DARTS_OPTIONS = {
    "algorithm": "darts",
    "order": 1,
    "arch_lr": 3e-4,
    "arch_betas": [0.5, 0.999],
    "arch_weight_decay": 1e-3,
    "init_scale": 1e-3,
    "hvp_epsilon": 0.01,
}
RETRAIN_SETTINGS = {
    "epochs": 2,
    "init_channels": 4,
    "layers": 3,
    "batch_size": 32,
    "lr": 0.025,
    "lr_min": 0.0,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,
    "cutout": 8,
    "drop_path_prob": 0.2,
    "auxiliary_weight": 0.4,
    "eval_batch_size": 64,
}
RUNTIME = {"device": "cpu", "amp": "none", "channels_last": False, "threads": 1}


def search_params(seed=0, **changes) -> dict:
    """DARTS 1st order unless ``options`` names another algorithm (then with its defaults)."""
    from pipeline import search
    from pipeline.config import method_options

    settings = {**SEARCH_SETTINGS, **changes.pop("settings", {})}
    given = changes.pop("options", {})
    algorithm = given.get("algorithm", "darts")
    if algorithm == "darts":
        options, method = {**DARTS_OPTIONS, **given}, "darts_1st"
    else:
        options, method = method_options(search.METHODS, given, "options"), algorithm
    params = {"dataset": "cifar10", "seed": seed, "method": method, "options": options, "settings": settings, "runtime": dict(RUNTIME)}
    params.update(changes)
    return copy.deepcopy(params)


def retrain_params(seed=0, **settings) -> dict:
    return {"dataset": "cifar10", "seed": seed, "settings": {**RETRAIN_SETTINGS, **settings}, "runtime": dict(RUNTIME)}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """12 train and 5 test images per class of the committed demo subset, prepared."""
    out = tmp_path_factory.mktemp("data") / "cifar10.pt"
    prepare_dataset(
        {
            "dataset": "cifar10",
            "source": {"format": "imagefolder", "train": str(DEMO_TAR), "test": str(DEMO_TAR)},
            "subset": {"train_per_class": 12, "test_per_class": 5, "seed": 0},
        },
        out,
    )
    return out


@pytest.fixture(scope="session")
def tiny8_data(tiny_data, tmp_path_factory) -> Path:
    """tiny_data shrunk to 8x8 pixels, for tests that run a supernet many times."""
    from pipeline import artifacts

    tensors, meta = artifacts.load_dataset(tiny_data)
    small = {
        name: torch.nn.functional.avg_pool2d(t.float(), 4).round().to(torch.uint8) if name.endswith("_images") else t
        for name, t in tensors.items()
    }
    out = tmp_path_factory.mktemp("data8") / "cifar10_8px.pt"
    artifacts.save_dataset(out, small, meta)
    return out


@pytest.fixture(scope="session")
def tiny_supernet(tiny8_data, tmp_path_factory) -> Path:
    """A DARTS supernet after a 1-epoch search on 8x8 images, 2 per class (10 + 10 split)."""
    from pipeline.search.run import run_search

    params = search_params(settings={"epochs": 1, "subset_per_class": 2, "batch_size": 10, "eval_batch_size": 10})
    return run_search(params, tiny8_data, tmp_path_factory.mktemp("search"), threads=1)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def build_method(
    algorithm: str, seed: int = 0, channels: int = 4, layers: int = 3, space: str = "darts", settings: dict | None = None, validate=None, **options
):
    """A search method on a small supernet, options defaulted from its schema: (space, model, method).
    ``settings`` change the search settings the method sees (SEARCH_SETTINGS in ``space``);
    ``validate`` is the search loop's validation, given at construction."""
    from pipeline.config import method_options
    from pipeline.search import METHODS
    from pipeline.spaces import get_space

    torch.manual_seed(seed)
    cell_space = get_space(space)
    model = cell_space.build_supernet(channels, layers, 10)
    resolved = method_options(METHODS, {"algorithm": algorithm, **options}, "options")
    settings = {**SEARCH_SETTINGS, "space": space, **(settings or {})}
    method = METHODS.get(algorithm)(cell_space, model, resolved, settings, torch.device("cpu"), "none", validate=validate)
    return cell_space, model, method


def random_batch(seed: int = 0, size: int = 8, resolution: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, resolution, resolution, generator=g), torch.randint(0, 10, (size,), generator=g)


# Module-scoped fixtures shared by several test files (pytest finds them here).


@pytest.fixture(scope="module")
def s2_supernet(tiny8_data, tmp_path_factory):
    """A supernet of RobustDARTS' S2 (skip_connect, sep_conv_3x3): the cheapest to fine-tune."""
    from pipeline.search.run import run_search

    params = search_params(settings={"epochs": 1, "subset_per_class": 2, "batch_size": 10, "eval_batch_size": 10, "space": "s2"})
    return run_search(params, tiny8_data, tmp_path_factory.mktemp("search_s2"), threads=1)


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    """ImageFolder directories: 10 classes, 6 train and 3 test images each, as PNG."""
    import numpy as np
    from PIL import Image

    from pipeline.stages.data import balanced_subset, read_imagefolder

    root = tmp_path_factory.mktemp("imagenet")
    for split, per_class in (("train", 6), ("test", 3)):
        images, names = read_imagefolder(DEMO_TAR, split)
        classes = sorted(set(names))
        labels = np.array([classes.index(name) for name in names])
        for index in balanced_subset(labels, per_class, seed=0):
            folder = root / split / names[index]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index]).save(folder / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def genotype_file(tmp_path_factory):
    from pipeline import artifacts
    from pipeline.spaces import get_space
    from test_spaces import DARTS_V2

    space = get_space("darts")
    path = tmp_path_factory.mktemp("genotype") / "genotype.json"
    provenance = {"search_method": "darts_2nd", "selection_method": "magnitude", "search_seconds": 86400.0,
                  "select_seconds": 0.0, "search_device": "cuda:0", "seed": 0, "params": {"dataset": "cifar10"}}
    artifacts.write_genotype(path, {"space": "darts", "cells": space.from_text(DARTS_V2)}, provenance)
    return path
