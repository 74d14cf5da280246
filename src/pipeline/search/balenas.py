"""BaLeNAS (Zhang et al., 2022): alpha ~ N(mu, sigma^2), learnt with the Bayesian learning
rule in its Variational Adam form (Khan et al., 2018); supernet and weight training are DARTS'.

Each architecture step draws ``samples`` (M) alphas mu + sigma * eps, averages their DARTS
gradient g (1st or 2nd order) and updates

    m <- b1 m + (1 - b1) (g + delta mu)        s <- b2 s + (1 - b2) g^2
    mu <- mu - lr * m_hat / (sqrt(s_hat) + delta)    (m_hat, s_hat bias-corrected)
    sigma = 1 / sqrt(N (s + delta))

with N the number of images alpha learns from (the architecture split) and delta the prior
precision divided by N. delta (choice) defaults to 1e-3, DARTS' alpha weight decay, whose
role the delta * mu term plays. The weight step and validation use softmax(mu).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.lazy import torch
from pipeline.search import METHODS
from pipeline.search.darts import Darts

if TYPE_CHECKING:  # defined with torch, imported where it is constructed
    from pipeline.search.variational_adam import VariationalAdam


@METHODS.register("balenas")
class BaLeNAS(Darts):
    OPTIONS = {
        **{key: spec for key, spec in Darts.OPTIONS.items() if key != "arch_weight_decay"},
        "init_scale": {"type": "number", "minimum": 0, "default": 1e-3, "description": "mu ~ init_scale * N(0, 1)"},
        "samples": {"type": "integer", "minimum": 1, "default": 3, "description": "M Monte-Carlo samples per step"},
        "delta": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 1e-3,
            "description": "prior precision / N (choice; DARTS' alpha weight decay)",
        },
    }

    def build_arch_optimizer(self) -> VariationalAdam:
        from pipeline.search.variational_adam import VariationalAdam

        return VariationalAdam(
            self.alpha.parameters(), lr=self.options["arch_lr"], betas=self.options["arch_betas"], delta=self.options["delta"]
        )

    def on_data(self, train_size: int, arch_size: int) -> None:
        self.arch_optimizer.set_dataset_size(arch_size)

    @property
    def mu(self) -> dict[str, torch.Tensor]:
        return dict(self.alpha.items())

    def sigma(self) -> dict[str, torch.Tensor]:
        return {kind: self.arch_optimizer.sigma(mu) for kind, mu in self.alpha.items()}

    def arch_gradient(self, batch_w, batch_a, w_optimizer, lr, alpha=None) -> list[torch.Tensor]:
        """The DARTS gradient averaged over M samples of alpha."""
        sigma = self.sigma()
        total = None
        for _ in range(self.options["samples"]):
            sample = {
                kind: (mu.detach() + sigma[kind] * torch.randn_like(mu)).requires_grad_(True) for kind, mu in self.alpha.items()
            }
            grads = super().arch_gradient(batch_w, batch_a, w_optimizer, lr, alpha=sample)
            total = grads if total is None else [t + g for t, g in zip(total, grads)]
        return [t / self.options["samples"] for t in total]

    def snapshot(self) -> dict[str, Any]:
        sigma = self.sigma()
        out = {}
        for kind, mu in self.alpha.items():
            out[f"mu_{kind}"] = mu.detach().cpu().numpy().copy()
            out[f"sigma_{kind}"] = sigma[kind].cpu().numpy().copy()
        return out

    def state_dict(self) -> dict[str, Any]:
        # m, s and the step count live in the optimiser state; sigma follows from s, saved for readers.
        return {**super().state_dict(), "sigma": {kind: s.cpu() for kind, s in self.sigma().items()}}
