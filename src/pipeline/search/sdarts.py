"""SDARTS (Chen & Hsieh, 2020): DARTS whose weight step sees a perturbed softmax(alpha).

The alpha step is plain DARTS. The weight step's op weights are softmax(alpha) + delta with
|delta| <= eps per entry, eps ramped linearly from ``epsilon_min`` to ``epsilon_max`` over the
epochs (eps = min + (max - min) * epoch / epochs, as the reference does):

- ``rs``: delta uniform in [-eps, eps];
- ``adv``: ``pgd_steps`` steps of L-inf PGD on the training loss from a uniform random start,
  step 2 eps / steps, with the network in eval mode; if the attack ends with a lower loss
  than no perturbation, no perturbation is used (as the reference does).

Perturbed weights are projected onto the probability simplex within the eps box around
softmax(alpha), so they stay both within eps and on the simplex; the reference clamps to
[0, 1] and renormalises, which can leave the eps ball.
"""

from __future__ import annotations

from typing import Any

from pipeline import runtime
from pipeline.lazy import F, torch
from pipeline.search import METHODS
from pipeline.search.base import require_cell_space
from pipeline.search.darts import Darts


def project_simplex_box(v: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto {w : sum w = 1, lower <= w <= upper}.

    The projection is clamp(v - tau, lower, upper) with the row's tau found by bisection
    (the row sum falls monotonically in tau); the set must be non-empty.
    """
    lo_tau = (v - upper).min(dim=-1, keepdim=True).values  # every entry at its upper bound
    hi_tau = (v - lower).max(dim=-1, keepdim=True).values  # every entry at its lower bound
    for _ in range(iterations):
        tau = (lo_tau + hi_tau) / 2
        too_big = torch.minimum(torch.maximum(v - tau, lower), upper).sum(dim=-1, keepdim=True) > 1
        lo_tau = torch.where(too_big, tau, lo_tau)
        hi_tau = torch.where(too_big, hi_tau, tau)
    return torch.minimum(torch.maximum(v - (lo_tau + hi_tau) / 2, lower), upper)


def project_perturbation(perturbed: torch.Tensor, center: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Back onto the simplex without leaving the L-inf ball of radius ``epsilon`` around ``center``."""
    return project_simplex_box(perturbed, (center - epsilon).clamp(min=0), (center + epsilon).clamp(max=1))


@METHODS.register("sdarts")
class SDarts(Darts):
    OPTIONS = {
        **Darts.OPTIONS,
        "mode": {"enum": ["rs", "adv"], "default": "rs", "description": "random smoothing or adversarial (PGD) perturbation"},
        "epsilon_min": {"type": "number", "minimum": 0, "default": 0.03, "description": "eps at the first epoch"},
        "epsilon_max": {"type": "number", "minimum": 0, "default": 0.3, "description": "eps approached at the last epoch"},
        "pgd_steps": {"type": "integer", "minimum": 1, "default": 7, "description": "adv: attack steps (step 2 eps / steps)"},
    }

    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        require_cell_space("sdarts", settings, key_of)

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        super().__init__(space, model, options, settings, device, amp, validate)
        self.epsilon = options["epsilon_min"]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        low, high = self.options["epsilon_min"], self.options["epsilon_max"]
        self.epsilon = low + (high - low) * epoch / epochs

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "epsilon": self.epsilon}

    def train_weights(self, x, y) -> dict[str, torch.Tensor]:
        center = {kind: w.detach() for kind, w in self.weights().items()}
        if self.options["mode"] == "rs":
            return self.random_perturbation(center)
        return self.adversarial_perturbation(center, x, y)

    def random_perturbation(self, center: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Uniform noise in [-eps, eps], projected (RS; ADV's random start)."""
        eps = self.epsilon
        return {
            kind: project_perturbation(c + torch.empty_like(c).uniform_(-eps, eps), c, eps) for kind, c in center.items()
        }

    def _attack_loss(self, x, y, weights) -> torch.Tensor:
        with runtime.autocast(self.device, self.amp):
            logits = self.model(x, weights, keep_zero=True)  # zero-weight ops still have a gradient
        return F.cross_entropy(logits.float(), y)

    def adversarial_perturbation(self, center: dict[str, torch.Tensor], x, y) -> dict[str, torch.Tensor]:
        eps, steps = self.epsilon, self.options["pgd_steps"]
        was_training = self.model.training
        self.model.eval()  # the attack must not move BN statistics (reference: eval mode)
        try:
            with torch.no_grad():
                loss_before = self._attack_loss(x, y, center)
            perturbed = self.random_perturbation(center)
            kinds = list(perturbed)
            for _ in range(steps):
                leaves = [perturbed[k].requires_grad_(True) for k in kinds]
                grads = torch.autograd.grad(self._attack_loss(x, y, dict(zip(kinds, leaves))), leaves)
                perturbed = {
                    k: project_perturbation(w.detach() + (2 * eps / steps) * g.sign(), center[k], eps)
                    for k, w, g in zip(kinds, leaves, grads)
                }
            with torch.no_grad():
                loss_after = self._attack_loss(x, y, perturbed)
        finally:
            self.model.train(was_training)
        return center if loss_before > loss_after else perturbed
