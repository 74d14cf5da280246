"""beta-DARTS (Ye et al., CVPR 2022): DARTS with the Beta-Decay regulariser.

The architecture loss gains lambda_t * L_beta with

    L_beta = mean over edges e (of every cell type) of log sum_k exp(alpha_e,k),

whose gradient with respect to alpha_e is softmax(alpha_e) / E (E the number of edges):
it acts on beta = softmax(alpha), pulling the mass of the largest beta down and so keeping
the softmax-normalised architecture weights from saturating. The weight grows linearly
with the epoch (0-based): lambda_t = decay_start + (decay_end - decay_start) * t / decay_epochs,
uncapped, the reference's 0 + 50 * epoch / 100. The weight steps, supernet and derivation
are DARTS'.

Defaults from the authors' code (Sunshine-Ye/Beta-DARTS, ``Architect._backward_step`` and
``mlc_loss``): the schedule above, architecture Adam lr 3e-4, betas (0.5, 0.999), weight
decay 1e-3, first order. Difference: the reference adds the regulariser only in its
first-order step; here the 2nd-order step gets it too (the term depends on alpha alone, so
its gradient is the same in both).
"""

from __future__ import annotations

from typing import Any

from pipeline.lazy import torch
from pipeline.search import METHODS
from pipeline.search.darts import Darts


def beta_decay(alphas: list[torch.Tensor]) -> torch.Tensor:
    """mean over the rows of every tensor in ``alphas`` of logsumexp(row)."""
    return torch.cat([torch.logsumexp(a, dim=-1).reshape(-1) for a in alphas]).mean()


@METHODS.register("beta_darts")
class BetaDarts(Darts):
    OPTIONS = {
        **Darts.OPTIONS,
        "decay_start": {"type": "number", "minimum": 0, "default": 0.0, "description": "lambda at epoch 0"},
        "decay_end": {"type": "number", "minimum": 0, "default": 50.0, "description": "lambda at epoch decay_epochs"},
        "decay_epochs": {"type": "number", "exclusiveMinimum": 0, "default": 100, "description": "epochs over which lambda goes from start to end (linear, uncapped)"},
    }

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        super().__init__(space, model, options, settings, device, amp, validate)
        self.decay_weight = float(options["decay_start"])

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        o = self.options
        self.decay_weight = o["decay_start"] + (o["decay_end"] - o["decay_start"]) * epoch / o["decay_epochs"]

    def arch_gradient(self, batch_w, batch_a, w_optimizer, lr, alpha=None) -> list[torch.Tensor]:
        alpha = self.alpha if alpha is None else alpha
        grads = super().arch_gradient(batch_w, batch_a, w_optimizer, lr, alpha)
        if self.decay_weight == 0:
            return grads
        alphas = list(alpha.values())
        reg = torch.autograd.grad(self.decay_weight * beta_decay(alphas), alphas)
        return [g + r for g, r in zip(grads, reg)]

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "decay_weight": self.decay_weight}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "decay_weight": self.decay_weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.decay_weight = float(state["decay_weight"])
