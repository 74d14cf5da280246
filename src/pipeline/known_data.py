"""What is known about the standard datasets without reading them (no torch here: the
config check uses it): class counts and split sizes of the torchvision datasets the data
stage reads. The data stage refuses a read whose sizes differ, so a wrong entry shows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownDataset:
    classes: int
    train: int
    test: int
    balanced: bool  # every class has train // classes images


# SVHN: its 'train' split (not 'extra'), as the papers use it; the digit classes differ in size.
TORCHVISION = {
    "cifar10": KnownDataset(classes=10, train=50_000, test=10_000, balanced=True),
    "cifar100": KnownDataset(classes=100, train=50_000, test=10_000, balanced=True),
    "svhn": KnownDataset(classes=10, train=73_257, test=26_032, balanced=False),
}
