"""Candidate operations of the DARTS-family cell spaces (ReLU-Conv-BN ordering)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pipeline.nets.depthwise import DepthwiseConv2d


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """Depthwise (dilated) conv then pointwise conv."""

    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(c_in, kernel, stride, padding, dilation),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """The DARTS separable conv: the depthwise-pointwise block applied twice."""

    def __init__(self, c_in, c_out, kernel, stride, padding, affine=True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convs (keeps all pixels in play)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Noise(nn.Module):
    """RobustDARTS S4's harmful op: N(0, 1) of the output's shape, whatever the input."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(x[:, :, :: self.stride, :: self.stride])


OpFactory = Callable[[int, int, bool], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine: Zero(stride),
    "noise": lambda C, stride, affine: Noise(stride),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "sep_conv_7x7": lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
    # NAS-Bench-201's plain convolutions.
    "nor_conv_1x1": lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine),
    "nor_conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine),
}


def after_relu(op: nn.Module) -> nn.Module | None:
    """What ``op`` computes after its leading ReLU, built from its own layers; None if it
    does not start with one. The ops of a mixed edge share one ReLU of their input."""
    if isinstance(op, SepConv):
        return nn.Sequential(after_relu(op[0]), op[1])
    if isinstance(op, (ReLUConvBN, DilConv)):
        return nn.Sequential(*list(op)[1:])
    return None


# Ops that contribute exactly zero: the mixed op never computes them.
ZERO_OPS = frozenset({"none"})


def make_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    if name not in OPS:
        raise KeyError(f"unknown operation {name!r}; known: {', '.join(sorted(OPS))}")
    return OPS[name](channels, stride, affine)
