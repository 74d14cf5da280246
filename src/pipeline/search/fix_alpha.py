"""Fix-alpha, DARTS-PT's "blank" baseline (Wang et al., 2021): alpha = 0 and never trained.

Every op of every edge weighs 1/|ops| (softmax of zeros); only the network weights train,
on the weight split. No architecture batches are drawn.
"""

from __future__ import annotations

from typing import Any

from pipeline.lazy import F, torch
from pipeline.search import METHODS
from pipeline.search.base import SearchMethod


@METHODS.register("fix_alpha")
class FixAlpha(SearchMethod):
    OPTIONS: dict[str, dict[str, Any]] = {}
    bilevel = False

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        super().__init__(space, model, options, settings, device, amp, validate)
        edges, ops = space.arch_shape()
        self.alpha = {kind: torch.zeros(edges, ops, device=device) for kind in space.cell_types}

    def eval_weights(self) -> dict[str, torch.Tensor]:
        return {kind: F.softmax(alpha, dim=-1) for kind, alpha in self.alpha.items()}

    def train_step(self, batch_w, batch_a, w_optimizer, lr):
        return self.weight_update(batch_w, w_optimizer)

    def weight_update(self, batch_w, w_optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch_w
        return self.weight_step(x, y, self.eval_weights(), w_optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {}  # nothing trains but the network, which the loop saves

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
