"""The weight-sharing supernet of the DARTS-family cell spaces.

The supernet holds only network weights. Architecture weights come from the search
method at each forward: ``weights[cell_type]`` is (edges, ops) or per sample
(batch, edges, ops). Ops whose weight is exactly zero are skipped, so a one-hot or
masked edge costs one op; ``none`` is never computed because it contributes zero.

Partial channels (PC-DARTS, Xu et al., 2020; ``partial_channels`` K > 1): a mixed op
sends only the first C/K channels of its input through its candidate ops (built with C/K
channels); the other channels bypass them (max-pooled 2x2 on stride-2 edges) and are
concatenated after the ops' weighted sum, then the channels are shuffled in K groups.
The bypass is scaled by the edge's total op weight sum_k w_k: 1 for weights on the
simplex (softmax, Dirichlet, one-hot), so it is the reference's plain bypass, and the
edge weight beta of edge normalisation when the weights carry it (beta * softmax(alpha)),
as in the reference's beta * MixedOp(x); an edge whose weights are all 0 (removed by a
selection) passes nothing. K = 1 is the plain DARTS mixed op.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nets.ops import ZERO_OPS, FactorizedReduce, ReLUConvBN, after_relu, make_op


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups (ShuffleNet; PC-DARTS after each edge)."""
    batch, channels, height, width = x.shape
    return x.view(batch, groups, channels // groups, height, width).transpose(1, 2).reshape(batch, channels, height, width)



def grow_cell(states: list, edges, weights: torch.Tensor, active: Sequence[Sequence[int]], nodes: int) -> list:
    """Append ``nodes`` nodes to ``states``, each the sum of its mixed edges from every earlier
    state (edges in that order); shared by the DARTS cell and the NB201 cell."""
    edge = 0
    for _ in range(nodes):
        node = None
        for state in states:
            term = edges[edge](state, weights[..., edge, :], active[edge])
            node = term if node is None else node + term
            edge += 1
        states.append(node)
    return states

class MixedOp(nn.Module):
    def __init__(self, channels: int, stride: int, candidates: Sequence[str], pool_bn: bool = True, partial_channels: int = 1):
        super().__init__()
        if partial_channels < 1 or channels % partial_channels:
            raise ValueError(f"partial_channels {partial_channels} does not divide a mixed op's {channels} channels")
        self.stride = stride
        self.channels = channels
        self.candidates = tuple(candidates)
        self.k = partial_channels
        inner = channels // partial_channels
        self.ops = nn.ModuleList()
        for name in self.candidates:
            op = make_op(name, inner, stride, affine=False)
            if pool_bn and "pool" in name:  # DARTS: pools get a BN so their scale matches the convs'
                op = nn.Sequential(op, nn.BatchNorm2d(inner, affine=False))
            self.ops.append(op)
        # A plain list: these share the ops' layers, which must not be registered twice.
        self.after_relu = [after_relu(op) for op in self.ops]

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: Sequence[int]) -> torch.Tensor:
        if self.k == 1:
            return self._mix(x, weights, active)
        inner = x.shape[1] // self.k
        through, bypass = x[:, :inner], x[:, inner:]
        if self.stride > 1:  # ceil mode: the ops' padded stride-2 output size, also for odd sizes
            bypass = F.max_pool2d(bypass, self.stride, self.stride, ceil_mode=True)
        total = weights.sum(-1)
        total = total.view(-1, 1, 1, 1) if total.ndim else total
        out = torch.cat([self._mix(through, weights, active), total * bypass], dim=1)
        return channel_shuffle(out, self.k)

    def _mix(self, x: torch.Tensor, weights: torch.Tensor, active: Sequence[int]) -> torch.Tensor:
        """sum_k w_k op_k(x) over the active ops."""
        out = relu_x = None
        for k in active:
            w = weights[..., k]
            if w.ndim:  # per-sample weights
                w = w.view(-1, 1, 1, 1)
            if self.after_relu[k] is None:
                y = self.ops[k](x)
            else:
                relu_x = F.relu(x) if relu_x is None else relu_x
                y = self.after_relu[k](relu_x)
            term = w * y
            out = term if out is None else out + term
        if out is None:
            batch, channels, height, width = x.shape
            out = x.new_zeros(batch, channels, height // self.stride, width // self.stride)
        return out


class SearchCell(nn.Module):
    def __init__(self, candidates, steps, multiplier, c_pp, c_p, c, reduction, reduction_prev, partial_channels: int = 1):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(c_pp, c, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        edge = 0
        for node in range(steps):
            for source in range(node + 2):
                stride = 2 if reduction and source < 2 else 1
                self.edges.append(MixedOp(c, stride, candidates[edge], partial_channels=partial_channels))
                edge += 1

    def forward(self, s0, s1, weights: torch.Tensor, active: Sequence[Sequence[int]]):
        states = grow_cell([self.preprocess0(s0), self.preprocess1(s1)], self.edges, weights, active, self.steps)
        return torch.cat(states[-self.multiplier :], dim=1)


def without_each_op(weights: dict[str, torch.Tensor], kind: str, edge: int, ops: Sequence[int]) -> list[dict[str, torch.Tensor]]:
    """Per op of ``ops``, ``weights`` with that op's weight on the edge set to 0 (the rest
    kept): the perturbations DARTS-PT evaluates."""
    sets = []
    for op in ops:
        removed = weights[kind].clone()
        removed[edge, op] = 0.0
        sets.append({**weights, kind: removed})
    return sets


def active_ops(weights: torch.Tensor, candidates: Sequence[Sequence[str]], keep_zero: bool = False) -> list[list[int]]:
    """Per edge, the indices of ops that can contribute: non-zero weight (unless ``keep_zero``)
    and not ``none``."""
    if keep_zero:
        return [[k for k, name in enumerate(names) if name not in ZERO_OPS] for names in candidates]
    nonzero = weights.detach().reshape(-1, *weights.shape[-2:]).ne(0).any(dim=0).cpu().tolist()
    return [
        [k for k, name in enumerate(names) if nonzero[e][k] and name not in ZERO_OPS]
        for e, names in enumerate(candidates)
    ]


class SuperNet(nn.Module):
    def __init__(
        self,
        candidates: dict[str, list[list[str]]],
        channels: int,
        num_classes: int,
        layers: int,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        partial_channels: int = 1,
    ):
        super().__init__()
        self.candidates = candidates
        self.partial_channels = partial_channels
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for index in range(layers):
            reduction = index in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell_type = "reduce" if reduction else "normal"
            cell = SearchCell(candidates[cell_type], steps, multiplier, c_pp, c_p, c_curr, reduction, reduction_prev, partial_channels)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    shares_prefix = True  # forward(..., copies=k): see there

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor], copies: int = 1, keep_zero: bool = False) -> torch.Tensor:
        """``copies`` > 1 evaluates several weight settings at once: ``x`` is one batch, the
        weights are per sample for ``copies`` stacked copies of it, and the cells before the
        first one whose weights differ between the copies run once (their output is the
        same for all); the logits are those of the stacked copies. ``keep_zero`` computes
        zero-weight ops too: the gradient w.r.t. an op's weight is not zero where the weight
        is (SDARTS-ADV's attack needs it)."""
        active = {kind: active_ops(w, self.candidates[kind], keep_zero) for kind, w in weights.items()}
        n = len(x)
        shared = copies > 1
        if shared:
            varies = {kind: bool((w.view(copies, n, *w.shape[1:]) != w[:n]).any()) for kind, w in weights.items()}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            w = weights[kind]
            if shared and varies[kind]:
                s0, s1, shared = torch.cat([s0] * copies), torch.cat([s1] * copies), False
            s0, s1 = s1, cell(s0, s1, w[:n] if shared else w, active[kind])
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return torch.cat([logits] * copies) if shared else logits
