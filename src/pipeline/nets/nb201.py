"""The NAS-Bench-201 macro network (Dong & Yang, 2020) around a searched or a fixed cell.

Stem (3x3 conv, BN), three stages of ``cells_per_stage`` cells at C, 2C, 4C channels joined
by residual reduction blocks (ResNet basic block, stride 2, avg-pool + 1x1 conv shortcut),
then BN-ReLU, global pooling and a linear classifier. A cell has nodes 0..3; node j sums
one op on each earlier node; the cell's output is node 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.nets.evaluation import EvaluationNetwork
from pipeline.nets.ops import ReLUConvBN, make_op
from pipeline.nets.supernet import MixedOp, active_ops, grow_cell

NB201_NODES = 4


class ResidualReduction(nn.Module):
    def __init__(self, c_in: int, c_out: int, affine: bool):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class NB201SearchCell(nn.Module):
    def __init__(self, channels: int, candidates: Sequence[Sequence[str]]):
        super().__init__()
        # No BN after pools: NB201's avg_pool_3x3 is the bare pool.
        self.edges = nn.ModuleList(MixedOp(channels, 1, names, pool_bn=False) for names in candidates)

    def forward(self, x, weights: torch.Tensor, active):
        return grow_cell([x], self.edges, weights, active, NB201_NODES - 1)[-1]


class NB201FixedCell(nn.Module):
    def __init__(self, channels: int, edges: Sequence[tuple[int, int, str]]):
        super().__init__()
        # 'none' edges contribute nothing, so they are not built at all.
        kept = [(node, source, op) for node, source, op in edges if op != "none"]
        self.edges = [(node, source) for node, source, _ in kept]
        self.ops = nn.ModuleList(make_op(op, channels, 1, affine=True) for _, _, op in kept)

    def forward(self, x):
        states = [x]
        for node in range(1, NB201_NODES):
            total = torch.zeros_like(x)
            for (target, source), op in zip(self.edges, self.ops):
                if target == node:
                    total = total + op(states[source])
            states.append(total)
        return states[-1]


class NB201Macro(nn.Module):
    def __init__(self, make_cell, channels: int, cells_per_stage: int, num_classes: int, affine: bool):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        blocks = []
        c = channels
        for stage in range(3):
            if stage:
                blocks.append(ResidualReduction(c, 2 * c, affine))
                c *= 2
            blocks.extend(make_cell(c) for _ in range(cells_per_stage))
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def head(self, x):
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


class NB201SuperNet(NB201Macro):
    """Weights ``{"cell": (6, ops)}`` (or per sample); every cell shares them."""

    def __init__(self, candidates: dict[str, list[list[str]]], channels: int, cells_per_stage: int, num_classes: int):
        super().__init__(lambda c: NB201SearchCell(c, candidates["cell"]), channels, cells_per_stage, num_classes, affine=False)
        self.candidates = candidates

    def forward(self, x, weights: dict[str, torch.Tensor], keep_zero: bool = False):
        active = active_ops(weights["cell"], self.candidates["cell"], keep_zero)
        x = self.stem(x)
        for block in self.cells:
            x = block(x, weights["cell"], active) if isinstance(block, NB201SearchCell) else block(x)
        return self.head(x)


class NB201Network(NB201Macro, EvaluationNetwork):
    """The fixed-cell network; returns (logits, None) like the other evaluation networks."""

    uses_drop_path = False  # NAS-Bench-201 trains without drop-path

    def __init__(self, edges, channels: int, cells_per_stage: int, num_classes: int):
        super().__init__(lambda c: NB201FixedCell(c, edges), channels, cells_per_stage, num_classes, affine=True)

    def forward(self, x):
        x = self.stem(x)
        for block in self.cells:
            x = block(x)
        return self.head(x), None
