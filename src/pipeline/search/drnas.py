"""DrNAS (Chen et al., ICLR 2021): a Dirichlet distribution over each edge's op weights.

Per edge the op weights are w ~ Dir(c), concentration c = elu(alpha) + 1 (> 0). Every
supernet forward of the search, the weight step's and the architecture step's, draws one
w per edge and cell type (shared by the batch) by ``torch.distributions.Dirichlet.rsample``,
whose gradient with respect to c is pathwise (implicit reparameterisation, Figurnov et
al., 2018), so alpha is trained by plain backpropagation of the validation loss through
the sample, first order, with Adam.

Regulariser (``reg_type``): ``l2`` (the reference's default) is Adam weight decay
``reg_scale`` on alpha; ``kl`` adds reg_scale * sum over edges and cell types of
KL(Dir(c) || Dir(1)) to the architecture loss (the anchor Dir(1) is uniform on the
simplex) and no weight decay.

Validation and selection use softmax(alpha) (``eval_weights: softmax``), the weights the
reference derives its genotype from; ``mean`` uses the Dirichlet mean c / sum(c), the
expected op weights the supernet was trained under. Both have the same argmax per edge.

Defaults from the authors' code (xiangning-chen/DrNAS): the DARTS space without ``none``
(``darts_nonone``, the config block's setting), architecture Adam lr 6e-4 (DARTS space;
3e-4 in its NAS-Bench-201 script), betas (0.5, 0.999), reg l2 1e-3; alpha
initialised 1e-3 * N(0, 1); architecture frozen for the first ``warmup_epochs`` (DARTS
space: 10 per stage; NAS-Bench-201: none, the default). The progressive variant the
paper reports on the DARTS space (partial channels K 6 -> 4 with wider stages, ops pruned
to 4 per edge between two 25-epoch stages) is not implemented; partial channels alone are
``search.settings.partial_channels`` (see ``pc_darts``). The reference validates with a
fresh sample; here validation uses ``eval_weights`` (deterministic).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet, kl_divergence

from pipeline.config import ConfigError
from pipeline.search import METHODS
from pipeline.search.darts import Darts
from pipeline.spaces import get_space
from pipeline.spaces.cell import CellSpace
from pipeline.spaces.nb201 import NB201Space


def concentration(alpha: torch.Tensor) -> torch.Tensor:
    return F.elu(alpha) + 1


def dirichlet_kl(alpha: torch.Tensor) -> torch.Tensor:
    """sum over rows of KL(Dir(elu(alpha) + 1) || Dir(1))."""
    c = concentration(alpha)
    return kl_divergence(Dirichlet(c), Dirichlet(torch.ones_like(c))).sum()


@METHODS.register("drnas")
class DrNAS(Darts):
    OPTIONS = {
        **{key: Darts.OPTIONS[key] for key in ("arch_betas", "init_scale")},
        "arch_lr": {"type": "number", "exclusiveMinimum": 0, "default": 6e-4},
        "reg_type": {"enum": ["l2", "kl"], "default": "l2", "description": "l2: Adam weight decay on alpha; kl: KL(Dir(c) || Dir(1)) in the loss"},
        "reg_scale": {"type": "number", "minimum": 0, "default": 1e-3, "description": "weight decay (l2) or KL weight (kl)"},
        "warmup_epochs": {"type": "integer", "minimum": 0, "default": 0, "description": "epochs with the architecture frozen"},
        "eval_weights": {"enum": ["softmax", "mean"], "default": "softmax", "description": "op weights for validation and selection"},
    }

    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        if not isinstance(get_space(settings["space"]), (CellSpace, NB201Space)):
            raise ConfigError(
                f"config key '{key_of('space')}': search method drnas needs a cell space (DARTS family or nb201); got {settings['space']!r}"
            )

    def __init__(self, space, model, options, settings, device, amp):
        super().__init__(space, model, options, settings, device, amp)
        self.epoch = 0

    def build_arch_optimizer(self) -> torch.optim.Optimizer:
        decay = self.options["reg_scale"] if self.options["reg_type"] == "l2" else 0.0
        return torch.optim.Adam(self.alpha.parameters(), lr=self.options["arch_lr"], betas=tuple(self.options["arch_betas"]), weight_decay=decay)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def weights(self, alpha: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One Dirichlet sample per edge (differentiable in alpha)."""
        alpha = self.alpha if alpha is None else alpha
        return {kind: Dirichlet(concentration(a)).rsample() for kind, a in alpha.items()}

    def eval_weights(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            if self.options["eval_weights"] == "softmax":
                return {kind: F.softmax(a, dim=-1) for kind, a in self.alpha.items()}
            return {kind: concentration(a) / concentration(a).sum(-1, keepdim=True) for kind, a in self.alpha.items()}

    def train_step(self, batch_w, batch_a, w_optimizer, lr):
        if self.epoch >= self.options["warmup_epochs"]:
            self.arch_step(batch_w, batch_a, w_optimizer, lr)
        return self.weight_update(batch_w, w_optimizer)

    def arch_gradient(self, batch_w, batch_a, w_optimizer, lr, alpha=None) -> list[torch.Tensor]:
        alpha = self.alpha if alpha is None else alpha
        alphas = list(alpha.values())
        loss, _ = self.loss(*batch_a, self.weights(alpha))
        if self.options["reg_type"] == "kl":
            loss = loss + self.options["reg_scale"] * sum(dirichlet_kl(a) for a in alphas)
        return list(torch.autograd.grad(loss, alphas))

    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        for kind, a in self.alpha.items():
            snap[f"concentration_{kind}"] = concentration(a).detach().cpu().numpy().copy()
        return snap

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.epoch = int(state["epoch"])
