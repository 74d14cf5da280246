import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DEMO_TAR
from pipeline import artifacts
from pipeline.errors import DataSourceError
from pipeline.stages.data import balanced_subset, prepare_dataset, read_imagefolder
from pipeline.training.data import Augment, BatchLoader, cutout, load_prepared, random_crop_flip, stratified_split


def make_folder(root, split, classes=("b_cat", "a_dog"), per_class=3, size=8):
    for c, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size, 3), 10 * c + i, dtype=np.uint8)).save(folder / f"{i}.png")


def test_imagefolder_directory_sorted_classes(tmp_path):
    make_folder(tmp_path, "train")
    images, labels = read_imagefolder(tmp_path / "train", "train")
    assert images.shape == (6, 8, 8, 3)
    assert labels == ["a_dog"] * 3 + ["b_cat"] * 3  # classes in name order, as ImageFolder
    assert images[0, 0, 0, 0] == 10  # a_dog's first image


def test_demo_tarball_is_class_balanced_real_cifar10():
    images, labels = read_imagefolder(DEMO_TAR, "test")
    assert images.shape == (1000, 32, 32, 3)
    assert sorted(set(labels))[:2] == ["airplane", "automobile"]
    assert all(labels.count(name) == 100 for name in set(labels))
    assert DEMO_TAR.stat().st_size < 5 * 2**20


def test_prepare_writes_checksummed_artifact_and_detects_corruption(tmp_path):
    make_folder(tmp_path / "src", "train")
    make_folder(tmp_path / "src", "test", per_class=2)
    out = tmp_path / "d.pt"
    params = {"dataset": "toy", "source": {"format": "imagefolder", "train": str(tmp_path / "src"), "test": str(tmp_path / "src")}}
    meta = prepare_dataset(params, out)
    assert meta["sizes"] == {"train": 6, "test": 4} and meta["classes"] == ["a_dog", "b_cat"]
    data = load_prepared(out)
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape == (6, 3, 8, 8)
    assert data.meta["mean"][0] == pytest.approx(np.mean([10, 11, 12, 0, 1, 2]) / 255)
    tensors, _ = artifacts.load_dataset(out)
    record = torch.load(out, weights_only=True)
    record["tensors"]["train_labels"][0] = 1 - record["tensors"]["train_labels"][0]
    torch.save(record, out)
    with pytest.raises(artifacts.ArtifactError, match="checksum mismatch"):
        load_prepared(out)


def test_tar_with_mismatched_classes_is_rejected(tmp_path):
    make_folder(tmp_path / "a", "train")
    make_folder(tmp_path / "b", "test", classes=("x", "y"))
    params = {"dataset": "toy", "source": {"format": "imagefolder", "train": str(tmp_path / "a"), "test": str(tmp_path / "b")}}
    with pytest.raises(DataSourceError, match="classes of 'test' differ"):
        prepare_dataset(params, tmp_path / "d.pt")
    assert not (tmp_path / "d.pt").exists()


def test_corrupt_image_names_the_file(tmp_path):
    make_folder(tmp_path, "train")
    (tmp_path / "train" / "a_dog" / "9.png").write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match=r"9.png: not a readable image"):
        read_imagefolder(tmp_path / "train", "train")


def test_not_a_tarball(tmp_path):
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"nope")
    with pytest.raises(DataSourceError, match="x.tar.gz: not a readable tar archive"):
        read_imagefolder(bad, "train")


def test_balanced_subset_and_stratified_split():
    labels = np.repeat(np.arange(4), 10)
    keep = balanced_subset(labels, 3, seed=0)
    assert np.bincount(labels[keep]).tolist() == [3, 3, 3, 3]
    assert np.array_equal(keep, balanced_subset(labels, 3, seed=0))
    a, b = stratified_split(torch.from_numpy(labels), 0.5, seed=1)
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) + len(b) == 40
    assert torch.bincount(torch.from_numpy(labels)[a]).tolist() == [5, 5, 5, 5]


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=2, flip=False, generator=generator)
    offsets = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        r, c = offsets[0, i], offsets[1, i]
        assert torch.equal(out[i], padded[i, :, r : r + 6, c : c + 6])


def test_cutout_zeroes_one_clipped_square():
    x = torch.ones(50, 3, 16, 16)
    out = cutout(x, 8, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert zeros.max() == 64 and zeros.min() >= 16  # full square inside, clipped at corners
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)  # same square on every channel


def test_batch_loader_is_deterministic_per_epoch_seed(tiny_data):
    data = load_prepared(tiny_data)
    loader = BatchLoader(data.train_images, data.train_labels, None, 32, data.meta["mean"], data.meta["std"], Augment(cutout=4), shuffle=True)
    first = [x for x, _ in loader.epoch(seed=5)]
    again = [x for x, _ in loader.epoch(seed=5)]
    other = [x for x, _ in loader.epoch(seed=6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert sum(len(x) for x in first) == 120 and len(loader) == 4
    plain = BatchLoader(data.train_images, data.train_labels, None, 500, data.meta["mean"], data.meta["std"])
    (x, y), = list(plain.epoch(seed=0))
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # normalised with the train statistics


def test_data_cli_bad_source_names_file_and_writes_nothing(tmp_path):
    out = tmp_path / "d.pt"
    params = '{"dataset": "cifar10", "source": {"format": "imagefolder", "train": "missing.tar", "test": "missing.tar"}}'
    result = subprocess.run([sys.executable, "-m", "pipeline", "data", "--params", params, "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "pipeline data: error: config key 'params.source.train': file not found: missing.tar"
    assert not out.exists()


def test_shards_of_every_global_batch_make_up_the_one_process_batch(tiny_data):
    data = load_prepared(tiny_data)
    common = dict(mean=data.meta["mean"], std=data.meta["std"], augment=Augment(cutout=8), shuffle=True)
    whole = list(BatchLoader(data.train_images, data.train_labels, None, 25, **common).epoch(seed=3))
    for world in (2, 3):
        shards = [list(BatchLoader(data.train_images, data.train_labels, None, 25, shard=(r, world), **common).epoch(seed=3)) for r in range(world)]
        for index, (x, y) in enumerate(whole):
            parts = [shard[index] for shard in shards]
            assert [len(part[1]) for part in parts] == [len(y) * (r + 1) // world - len(y) * r // world for r in range(world)]
            assert torch.equal(torch.cat([part[0] for part in parts]), x)  # same crops, flips, cutouts
            assert torch.equal(torch.cat([part[1] for part in parts]), y)
    # A last global batch smaller than the world is skipped on every rank.
    loader = BatchLoader(data.train_images, data.train_labels, torch.arange(21), 10, shard=(1, 2), **common)
    assert loader.global_batch_sizes() == [10, 10] and len(list(loader.epoch(seed=0))) == 2


def test_svhn_in_torchvision_format(tmp_path, monkeypatch):
    import scipy.io
    import torchvision

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 4)):
        # SVHN's .mat layout: X is (32, 32, 3, N), y holds 1-10 with 10 for the digit 0.
        images = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)
        digits = np.arange(count).reshape(-1, 1) % 10
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": images, "y": np.where(digits == 0, 10, digits)})
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)  # not the real files' md5
    params = {"dataset": "svhn", "source": {"format": "torchvision", "root": str(tmp_path)}}
    # The config check sizes batches by the known sizes: a read that differs is refused.
    with pytest.raises(DataSourceError, match="svhn train has 6 images of 10 classes, not the known 73257 of 10"):
        prepare_dataset(params, tmp_path / "svhn.pt")
    assert not (tmp_path / "svhn.pt").exists()
    from pipeline import known_data

    monkeypatch.setitem(known_data.TORCHVISION, "svhn", known_data.KnownDataset(classes=10, train=6, test=4, balanced=False))
    meta = prepare_dataset(params, tmp_path / "svhn.pt")
    assert meta["sizes"] == {"train": 6, "test": 4} and meta["num_classes"] == 10
    data = load_prepared(tmp_path / "svhn.pt")
    assert data.train_labels.tolist() == [0, 1, 2, 3, 4, 5]
    original = scipy.io.loadmat(tmp_path / "train_32x32.mat")["X"]
    assert torch.equal(data.train_images[2], torch.from_numpy(original[..., 2].transpose(2, 0, 1).copy()))


def test_torchvision_format_names_unknown_datasets(tmp_path):
    with pytest.raises(DataSourceError, match="supports cifar10, cifar100, svhn, not 'mnist'"):
        prepare_dataset({"dataset": "mnist", "source": {"format": "torchvision", "root": str(tmp_path)}}, tmp_path / "x.pt")
