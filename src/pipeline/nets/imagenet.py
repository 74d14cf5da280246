"""The evaluation network of DARTS' ImageNet (mobile) setting: a 3-conv stride-8 stem,
then cells from 28x28 (at 224x224 input) with two reductions."""

from __future__ import annotations

from torch import nn

from pipeline.nets.cifar import EvalNetwork


class NetworkImageNet(EvalNetwork):
    aux_pool_stride = 2
    aux_last_bn = False  # DARTS' AuxiliaryHeadImageNet has no BatchNorm after the 768-channel conv
    stem_reduces = True  # stem1 halves the resolution after stem0

    def __init__(self, cells: dict, channels: int, num_classes: int, layers: int, auxiliary: bool):
        super().__init__(cells, channels, num_classes, layers, auxiliary, stem_channels=channels)
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, channels // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def stem_states(self, x):
        s0 = self.stem0(x)
        return s0, self.stem1(s0)
