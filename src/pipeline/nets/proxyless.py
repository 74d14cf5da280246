"""ProxylessNAS networks (Cai et al., 2019): a MobileNetV2 backbone whose searchable layers
each hold one MBConv (expand e, kernel k) or are skipped.

A layer reads the previous layer's output; a layer whose input and output shapes match has
an identity shortcut, and choosing ``skip_connect`` there leaves only the shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nets.depthwise import DepthwiseConv2d
from pipeline.nets.evaluation import EvaluationNetwork

SKIP = "skip_connect"


@dataclass(frozen=True)
class LayerShape:
    c_in: int
    c_out: int
    stride: int
    residual: bool  # identity shortcut (and the skip choice) allowed


def mbconv_name(expand: int, kernel: int) -> str:
    return f"mbconv{expand}_k{kernel}"


def parse_mbconv(name: str) -> tuple[int, int]:
    expand, kernel = name.removeprefix("mbconv").split("_k")
    return int(expand), int(kernel)


class MBConv(nn.Sequential):
    """Inverted residual body: 1x1 expand (unless e = 1), depthwise kxk, 1x1 linear projection."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int, affine: bool = True):
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden, affine=affine), nn.ReLU6(inplace=True)]
        layers += [
            DepthwiseConv2d(hidden, kernel, stride, kernel // 2),
            nn.BatchNorm2d(hidden, affine=affine),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        ]
        super().__init__(*layers)


def make_choice(name: str, shape: LayerShape, affine: bool) -> nn.Module | None:
    """The module of one choice; ``None`` for skip (the shortcut alone)."""
    if name == SKIP:
        if not shape.residual:
            raise ValueError("skip_connect is only a choice where the layer's input and output shapes match")
        return None
    expand, kernel = parse_mbconv(name)
    return MBConv(shape.c_in, shape.c_out, kernel, shape.stride, expand, affine)


class Backbone(nn.Module):
    """Stem conv, a fixed MBConv1 3x3, the searchable layers (subclasses), 1x1 feature mix, classifier."""

    def __init__(self, stem: int, first: int, mix: int, stem_stride: int, num_classes: int, last: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6(inplace=True)
        )
        self.first = MBConv(stem, first, 3, 1, 1)
        self.feature_mix = nn.Sequential(nn.Conv2d(last, mix, 1, bias=False), nn.BatchNorm2d(mix), nn.ReLU6(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(mix, num_classes)

    def head(self, x):
        return self.classifier(self.global_pooling(self.feature_mix(x)).flatten(1))


class ProxylessSuperNet(Backbone):
    """Weights ``{"layers": (layers, ops)}`` (or per sample). Columns past a layer's own
    candidates are ignored and each layer's weights are renormalised over its candidates,
    so softmax over the full row equals softmax over the layer's own ops.

    ``skip_dropout`` (set by a search method for its training steps, as in P-DARTS): the
    skip choice's output is dropout(x) instead of x; UNAS (appendix E.1) uses it so that a
    latency penalty does not over-select skip."""

    skip_dropout = 0.0

    def __init__(self, candidates: dict[str, list[list[str]]], shapes: Sequence[LayerShape], widths: dict, num_classes: int):
        super().__init__(widths["stem"], widths["first"], widths["mix"], widths["stem_stride"], num_classes, shapes[-1].c_out)
        self.candidates = candidates
        self.shapes = list(shapes)
        self.choices = nn.ModuleList(
            nn.ModuleList(
                nn.Identity() if name == SKIP else make_choice(name, shape, affine=False) for name in names
            )
            for names, shape in zip(candidates["layers"], shapes)
        )

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        w_all = weights["layers"]
        x = self.first(self.stem(x))
        for index, (names, shape, modules) in enumerate(zip(self.candidates["layers"], self.shapes, self.choices)):
            w = w_all[..., index, : len(names)]
            w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
            active = w.detach().reshape(-1, len(names)).ne(0).any(dim=0).tolist()
            out = x if shape.residual else None
            for k, name in enumerate(names):
                if not active[k] or name == SKIP:  # skip adds nothing beyond the shortcut
                    continue
                wk = w[..., k]
                term = (wk.view(-1, 1, 1, 1) if wk.ndim else wk) * modules[k](x)
                out = term if out is None else out + term
            if self.training and self.skip_dropout > 0 and SKIP in names and active[names.index(SKIP)]:
                wk = w[..., names.index(SKIP)]
                dropped = F.dropout(x, self.skip_dropout, training=True) - x
                out = out + (wk.view(-1, 1, 1, 1) if wk.ndim else wk) * dropped
            if out is None:  # a non-residual layer with all-zero weights
                out = x.new_zeros(x.shape[0], shape.c_out, x.shape[2] // shape.stride, x.shape[3] // shape.stride)
            x = out
        return self.head(x)


class ProxylessNetwork(Backbone, EvaluationNetwork):
    """The network of one choice per layer; returns (logits, None) like the other evaluation networks."""

    uses_drop_path = False  # ProxylessNAS trains without drop-path

    def __init__(self, ops: Sequence[str], shapes: Sequence[LayerShape], widths: dict, num_classes: int):
        super().__init__(widths["stem"], widths["first"], widths["mix"], widths["stem_stride"], num_classes, shapes[-1].c_out)
        self.ops = list(ops)
        self.residual = [shape.residual for shape in shapes]
        self.layers = nn.ModuleList(
            nn.Identity() if name == SKIP else make_choice(name, shape, affine=True) for name, shape in zip(ops, shapes)
        )

    def forward(self, x):
        x = self.first(self.stem(x))
        for name, residual, layer in zip(self.ops, self.residual, self.layers):
            if name == SKIP:
                continue
            x = x + layer(x) if residual else layer(x)
        return self.head(x), None
