"""The evaluation network built from a derived cell (CIFAR setting of DARTS)."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from pipeline.nets.evaluation import EvaluationNetwork
from pipeline.nets.ops import FactorizedReduce, ReLUConvBN, make_op


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of a branch with probability ``drop_prob`` and rescale the rest."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class EvalCell(nn.Module):
    """``edges`` are (node, input, op) triples; a node sums its incoming edges."""

    def __init__(self, edges: Sequence[tuple[int, int, str]], concat, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.edges = [(node, source) for node, source, _ in edges]
        self.ops = nn.ModuleList(
            make_op(op, c, 2 if reduction and source < 2 else 1, affine=True) for _, source, op in edges
        )
        self.nodes = sorted({node for node, _ in self.edges})
        self.concat = list(concat)
        self.multiplier = len(self.concat)

    def forward(self, s0, s1, drop_prob: float):
        states = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for node in self.nodes:
            total = None
            for (target, source), op in zip(self.edges, self.ops):
                if target != node:
                    continue
                h = op(states[source])
                if self.training and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states[node] = total
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier after the second reduction: 8x8 maps with ``pool_stride`` 3 (CIFAR),
    7x7 with 2 (ImageNet). ``last_bn``: a BatchNorm after the 768-channel conv, as DARTS'
    CIFAR head; its ImageNet head leaves it out (commented out in the original "for
    consistency with the experiments in the paper")."""

    def __init__(self, channels: int, num_classes: int, pool_stride: int, last_bn: bool = True):
        super().__init__()
        # Not in-place: the head reads the cell output that the network goes on using.
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            *([nn.BatchNorm2d(768)] if last_bn else []),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class EvalNetwork(EvaluationNetwork, metaclass=ABCMeta):
    """Cells after a stem, reductions at 1/3 and 2/3 of the depth, auxiliary head after the
    second; subclasses define the stem (``stem_states``)."""

    aux_pool_stride = 3
    aux_last_bn = True  # the auxiliary head's BatchNorm after its 768-channel conv
    stem_reduces = False  # whether the stem's last step halves the resolution

    def __init__(self, cells: dict, channels: int, num_classes: int, layers: int, auxiliary: bool, stem_channels: int):
        super().__init__()
        c_pp, c_p, c_curr = stem_channels, stem_channels, channels
        self.cells = nn.ModuleList()
        reduction_prev = self.stem_reduces
        self.auxiliary_index = 2 * layers // 3
        aux_channels = None
        for index in range(layers):
            reduction = index in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            spec = cells["reduce" if reduction else "normal"]
            cell = EvalCell(spec["edges"], spec["concat"], c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if index == self.auxiliary_index:
                aux_channels = c_p
        self.auxiliary_head = AuxiliaryHead(aux_channels, num_classes, self.aux_pool_stride, self.aux_last_bn) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    @abstractmethod
    def stem_states(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """The two states the first cell reads."""

    def forward(self, x):
        logits_aux = None
        s0, s1 = self.stem_states(x)
        for index, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if index == self.auxiliary_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux


class NetworkCIFAR(EvalNetwork):
    def __init__(self, cells: dict, channels: int, num_classes: int, layers: int, auxiliary: bool):
        super().__init__(cells, channels, num_classes, layers, auxiliary, stem_channels=3 * channels)
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * channels, 3, padding=1, bias=False), nn.BatchNorm2d(3 * channels))

    def stem_states(self, x):
        s = self.stem(x)
        return s, s
