"""Supernet pieces for selection methods: decisions applied to the architecture weights,
and fast evaluation of many weight settings on the validation split.

Speed (the evaluation passes dominate perturbation-based selection):
- ops whose weight is exactly 0 are not computed (the supernet skips them), so a
  decided edge costs one op and a removed op or edge costs nothing;
- the candidates of a decision share each forward (per-sample weights), so the Python and
  kernel-launch overhead of the supernet is paid once per batch, not once per candidate,
  and the cells before the first one the candidates differ in run once (a reduction-cell
  edge's candidates share the stem and the first normal cells);
- large batches under ``no_grad`` and AMP on CUDA; with batch-statistics BN the
  statistics are still taken over groups of ``bn_batch_size`` samples ("ghost" batches),
  so a large batch computes the same function as the reference's batches of 64.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import runtime


class ProjectedSupernet(nn.Module):
    """A supernet whose decided edges are fixed: an edge given op k gets the one-hot
    weight of k, a removed edge weight 0; undecided edges keep the weights passed in.

    Search methods train through it unchanged (alpha of decided edges gets no gradient).
    The decisions are plain tensors, not buffers, so they stay out of ``state_dict``.
    """

    def __init__(self, supernet: nn.Module, space):
        super().__init__()
        self.supernet = supernet
        self.cell_types = tuple(space.cell_types)
        edges, ops = space.arch_shape()
        self.op_choice = {kind: torch.full((edges,), -1, dtype=torch.long) for kind in self.cell_types}
        self.removed = {kind: torch.zeros(edges, dtype=torch.bool) for kind in self.cell_types}
        self.num_ops = ops
        self._cache: dict[tuple[str, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __getattr__(self, name: str):
        """Anything else is the supernet's (search methods inspect e.g. its cells)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["supernet"], name)

    # -- decisions
    def decide_op(self, kind: str, edge: int, op: int) -> None:
        self.op_choice[kind][edge] = op
        self._cache.clear()

    def remove_edge(self, kind: str, edge: int) -> None:
        self.removed[kind][edge] = True
        self._cache.clear()

    def undecided(self, kind: str) -> list[int]:
        return [e for e, k in enumerate(self.op_choice[kind].tolist()) if k < 0]

    def state(self) -> dict[str, Any]:
        return {"op_choice": {k: v.clone() for k, v in self.op_choice.items()}, "removed": {k: v.clone() for k, v in self.removed.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.op_choice = {k: v.clone().cpu() for k, v in state["op_choice"].items()}
        self.removed = {k: v.clone().cpu() for k, v in state["removed"].items()}
        self._cache.clear()

    # -- weights
    def _fixed(self, kind: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (kind, like.device, like.dtype)
        if key not in self._cache:
            choice, removed = self.op_choice[kind], self.removed[kind]
            fixed = F.one_hot(choice.clamp(min=0), self.num_ops).to(like.dtype)
            fixed[removed] = 0
            mask = ((choice >= 0) | removed).view(-1, 1)
            self._cache[key] = (fixed.to(like.device), mask.to(like.device))
        return self._cache[key]

    def project(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        projected = {}
        for kind, w in weights.items():
            fixed, mask = self._fixed(kind, w)
            projected[kind] = torch.where(mask, fixed, w)  # broadcasts over per-sample weights
        return projected

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.supernet(x, self.project(weights))


# ---------------------------------------------------------------- ghost batch norm


class _Ghost:
    """Settings of the patched BNs: ``group`` samples per statistics group, groups never
    straddling a ``segment`` (the block of samples that belongs to one weight setting)."""

    def __init__(self, group: int):
        self.group = group
        self.segment: int | None = None


def _chunks(n: int, group: int, segment: int) -> list[int]:
    """Sizes of the statistics groups of ``n`` samples: ``group`` each, restarting every ``segment``."""
    sizes = []
    for start in range(0, n, segment):
        length = min(segment, n - start)
        sizes += [group] * (length // group) + ([length % group] if length % group else [])
    return sizes


def _ghost_forward(bn: nn.BatchNorm2d, ghost: _Ghost):
    def forward(x: torch.Tensor) -> torch.Tensor:
        # One native batch_norm per group: as fast as one over the whole batch on CPU.
        parts = x.split(_chunks(len(x), ghost.group, ghost.segment or len(x)))
        return torch.cat([F.batch_norm(p, None, None, bn.weight, bn.bias, True, 0.0, bn.eps) for p in parts])

    return forward


@contextlib.contextmanager
def ghost_batch_norm(model: nn.Module, group: int | None) -> Iterator[_Ghost | None]:
    """Within the block every BatchNorm2d normalises with batch statistics of groups of
    ``group`` consecutive samples and leaves its running statistics alone (None: no change)."""
    if group is None:
        yield None
        return
    ghost = _Ghost(group)
    patched = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for module in patched:
        module.forward = _ghost_forward(module, ghost)
    try:
        yield ghost
    finally:
        for module in patched:
            del module.forward


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_weight_sets(
    model: nn.Module,
    loader,
    weight_sets: Sequence[dict[str, torch.Tensor]],
    device: torch.device,
    amp: str = "none",
    bn: str = "batch",
    bn_batch_size: int | None = None,
    batch_size: int | None = None,
) -> list[tuple[float, float]]:
    """(mean loss, accuracy %) of ``model(x, weights)`` on ``loader`` for each weight setting.

    ``bn="running"`` uses BN running statistics (eval mode); ``bn="batch"`` normalises with
    batch statistics (DARTS-PT's reference) over groups of ``bn_batch_size`` samples
    (None: each whole batch). Unless that last case, the settings are evaluated together:
    each batch is repeated once per setting and the supernet runs once with per-sample
    weights, at most ``batch_size`` (default: the loader's) images per forward; results do
    not depend on how many settings share a forward. Buffers and mode are left as they were.
    """
    count = len(weight_sets)
    if not count:
        return []
    total = batch_size or loader.batch_size
    group = bn_batch_size if bn == "batch" else None
    stacked = bn == "running" or group is not None
    per_setting = total
    if stacked:
        per_setting = max(1, total // count)
        if group is not None:  # whole groups per setting, so statistics never mix settings
            per_setting = max(group, per_setting // group * group)
    kinds = list(weight_sets[0])
    stacks = {kind: torch.stack([ws[kind].to(device) for ws in weight_sets]) for kind in kinds}

    was_training, want_training = model.training, bn == "batch"
    if was_training != want_training:  # train() walks every module: skip it when it changes nothing
        model.train(want_training)
    # Plain train-mode BN moves the running statistics; ghost BN leaves them alone.
    saved = {name: b.clone() for name, b in model.named_buffers()} if bn == "batch" and group is None else {}
    losses = torch.zeros(count, dtype=torch.float64, device=device)
    correct = torch.zeros(count, dtype=torch.long, device=device)
    try:
        with ghost_batch_norm(model, group) as ghost:
            for x, y in loader.epoch(seed=0, batch_size=per_setting):
                n = len(y)
                if stacked:
                    if ghost is not None:
                        ghost.segment = n
                    weights = {kind: w.repeat_interleave(n, dim=0) for kind, w in stacks.items()}
                    with runtime.autocast(device, amp):
                        if getattr(model, "shares_prefix", False):  # cells all settings agree on run once
                            logits = model(x, weights, copies=count)
                        else:
                            logits = model(torch.cat([x] * count), weights)  # cat keeps the memory format
                    logits = (logits[0] if isinstance(logits, tuple) else logits).float().view(count, n, -1)
                    losses += F.cross_entropy(logits.transpose(1, 2), y.expand(count, n), reduction="none").sum(1).double()
                    correct += (logits.argmax(dim=2) == y).sum(1)
                else:
                    for index, weights in enumerate(weight_sets):
                        with runtime.autocast(device, amp):
                            logits = model(x, weights)
                        logits = (logits[0] if isinstance(logits, tuple) else logits).float()
                        losses[index] += F.cross_entropy(logits, y, reduction="sum").double()
                        correct[index] += (logits.argmax(dim=1) == y).sum()
    finally:
        if saved:
            for name, buffer in model.named_buffers():
                buffer.copy_(saved[name])
        if model.training != was_training:
            model.train(was_training)
    n = loader.num_samples
    return [(loss / n, 100.0 * hits / n) for loss, hits in zip(losses.tolist(), correct.tolist())]
