"""GDAS (Dong & Yang, CVPR 2019): one sampled op per edge, differentiable by straight-through.

Each forward draws per edge (one draw per cell type, shared by the batch)
index = argmax_k (log softmax(alpha)_k + G_k), G Gumbel noise, i.e. op k with probability
softmax(alpha)_k whatever the temperature, and feeds the supernet the op weights

    h = one_hot(index) - p.detach() + p,    p = softmax((log softmax(alpha) + G) / tau):

in value exactly one-hot (only the sampled op is computed: the supernet skips ops of
weight 0), in gradient that of the relaxed sample p (the straight-through estimator).
The temperature falls linearly per epoch from ``tau_max`` to ``tau_min``
(tau = tau_max - (tau_max - tau_min) * epoch / (epochs - 1)).

Each step first trains the weights on a training batch under one sample, then alpha on
an architecture batch under a fresh sample (the reference's order), alpha by Adam.
Validation and selection use softmax(alpha); the reference derives its genotype from the
same (the DARTS parse).

Defaults from the paper and the authors' code (D-X-Y/AutoDL-Projects, GDAS search on the
DARTS and NAS-Bench-201 spaces): tau 10 -> 0.1, architecture Adam lr 3e-4, betas
(0.5, 0.999), weight decay 1e-3; alpha initialised 1e-3 * N(0, 1); 240 search epochs on the
DARTS space in the paper (the config block's ``settings``; NAS-Bench-201: 250). The
reference's gradient reaches only the sampled op's weight on the DARTS space (its
``MixedOp.forward_gdas``); its NAS-Bench-201 cell also adds each unsampled op's weight (value
0) to the node, which gives those weights the node's summed gradient. Here every space
follows the DARTS-space form.
"""

from __future__ import annotations

from typing import Any

from pipeline.lazy import F, torch
from pipeline.search import METHODS
from pipeline.search.base import SearchMethod, gaussian_alpha_with_adam, require_cell_space
from pipeline.search.darts import Darts
from pipeline.search.sampling import gumbel_noise, linear_temperature


def gumbel_straight_through(alpha: torch.Tensor, tau: float, sample_shape: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, index): the one-hot draw per row of ``alpha`` with the relaxed sample's gradient."""
    log_p = F.log_softmax(alpha, dim=-1).expand(*sample_shape, *alpha.shape)
    relaxed = F.softmax((log_p + gumbel_noise(log_p.shape, log_p)) / tau, dim=-1)
    index = relaxed.detach().argmax(dim=-1, keepdim=True)
    hard = torch.zeros_like(relaxed).scatter_(-1, index, 1.0)
    return hard - relaxed.detach() + relaxed, index.squeeze(-1)


@METHODS.register("gdas")
class Gdas(SearchMethod):
    OPTIONS = {
        **{key: Darts.OPTIONS[key] for key in ("arch_lr", "arch_betas", "arch_weight_decay", "init_scale")},
        "tau_max": {"type": "number", "exclusiveMinimum": 0, "default": 10.0, "description": "temperature at the first epoch"},
        "tau_min": {"type": "number", "exclusiveMinimum": 0, "default": 0.1, "description": "temperature at the last epoch"},
    }

    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        require_cell_space("gdas", settings, key_of)

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        super().__init__(space, model, options, settings, device, amp, validate)
        self.alpha, self.arch_optimizer = gaussian_alpha_with_adam(space, options, device)
        self.tau = float(options["tau_max"])

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.tau = linear_temperature(epoch, epochs, self.options["tau_max"], self.options["tau_min"])

    def sample(self) -> dict[str, torch.Tensor]:
        return {kind: gumbel_straight_through(alpha, self.tau)[0] for kind, alpha in self.alpha.items()}

    def eval_weights(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {kind: F.softmax(alpha, dim=-1) for kind, alpha in self.alpha.items()}

    def train_step(self, batch_w, batch_a, w_optimizer, lr):
        x, y = batch_w
        loss, logits = self.weight_step(x, y, self.sample(), w_optimizer)
        self.arch_optimizer.zero_grad(set_to_none=True)
        arch_loss, _ = self.loss(*batch_a, self.sample())
        alphas = list(self.alpha.values())
        for alpha, grad in zip(alphas, torch.autograd.grad(arch_loss, alphas)):
            alpha.grad = grad
        self.arch_optimizer.step()
        return loss, logits

    def snapshot(self) -> dict[str, Any]:
        snap = {f"alpha_{kind}": alpha.detach().cpu().numpy().copy() for kind, alpha in self.alpha.items()}
        snap["tau"] = self.tau
        return snap

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha.state_dict(), "arch_optimizer": self.arch_optimizer.state_dict(), "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha.load_state_dict(state["alpha"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.tau = float(state["tau"])
