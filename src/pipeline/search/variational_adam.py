"""BaLeNAS' optimiser of the architecture means (variational Adam), a torch optimiser kept
apart from ``balenas.py`` so that the method's declaration imports no torch."""

from __future__ import annotations

import torch


class VariationalAdam(torch.optim.Optimizer):
    """Variational Adam on the means; ``step`` takes the Monte-Carlo-averaged gradient in ``.grad``."""

    def __init__(self, params, lr: float, betas: tuple[float, float], delta: float, dataset_size: int = 1):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), delta=delta, dataset_size=dataset_size))

    def set_dataset_size(self, size: int) -> None:
        for group in self.param_groups:
            group["dataset_size"] = size

    def _group(self, p: torch.Tensor) -> dict:
        return next(group for group in self.param_groups if any(q is p for q in group["params"]))

    @torch.no_grad()
    def sigma(self, p: torch.Tensor) -> torch.Tensor:
        group = self._group(p)
        s = self.state[p].get("s", torch.zeros_like(p))
        return (group["dataset_size"] * (s + group["delta"])).rsqrt()

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            (b1, b2), delta, lr = group["betas"], group["delta"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["m"] = torch.zeros_like(p)
                    state["s"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, s = state["m"], state["s"]
                m.mul_(b1).add_(g + delta * p, alpha=1 - b1)
                s.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = m / (1 - b1**t)
                s_hat = s / (1 - b2**t)
                p.sub_(lr * m_hat / (s_hat.sqrt() + delta))
