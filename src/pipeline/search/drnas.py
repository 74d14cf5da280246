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
initialised 1e-3 * N(0, 1); architecture frozen for the first ``warmup_epochs`` of each
stage (DARTS space: 10; NAS-Bench-201: none, the default). The reference validates with
a fresh sample; here validation uses ``eval_weights`` (deterministic).

Progressive search (``progressive``, off by default), the variant the paper reports on
the DARTS space: the search runs in stages, each with its own partial-channel divisor K
(``search.settings.partial_channels``, see ``pc_darts``) and number of ops kept per edge.
The reference's DARTS-space schedule (DARTS-space/train_search.py) is two stages of 25
epochs, K 6 then 4, 7 ops (all of darts_nonone) then 4, on the 20-cell, 36-channel
network with batch 64 and weight lr 0.1 (cosine over all 50 epochs):

    progressive: [{epochs: 25, partial_channels: 6}, {epochs: 25, partial_channels: 4, keep_ops: 4}]

(its NB201 script: K 4 then 2, 5 then 3 ops, 50 + 50 epochs; NB201 has no partial
channels here). Between two stages, as the reference: each edge keeps the ``keep_ops`` ops
of highest concentration among those it still has (the others get weight exactly 0: the
Dirichlet sample and softmax are renormalised over the kept ops, which for the sample is
the Dirichlet of the kept concentrations), then the mixed ops are widened to the next K
by Net2WiderNet (``search/widen.py``, which says what is and is not preserved), with the
weight optimiser's momentum, and the LR schedule continues. The last stage's K must be
``search.settings.partial_channels``, so the final supernet is the one every later stage
rebuilds from the settings; the kept ops are in the checkpoint (``method.mask`` and zeros
in ``arch_weights``), and PT's op decisions consider only them (``kept_ops``). A resumed search rebuilds the supernet of its epoch's stage.
Differences: the reference keeps updating the pruned alphas (they are masked, so it
matters nowhere) and zeroes them; here they stay as they were.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError
from pipeline.lazy import F, np, torch
from pipeline.search import METHODS
from pipeline.search.base import require_cell_space
from pipeline.search.darts import Darts
from pipeline.spaces import get_space


def concentration(alpha: torch.Tensor) -> torch.Tensor:
    return F.elu(alpha) + 1


def dirichlet_kl(alpha: torch.Tensor) -> torch.Tensor:
    """sum over rows of KL(Dir(elu(alpha) + 1) || Dir(1))."""
    c = concentration(alpha)
    dist = torch.distributions
    return dist.kl_divergence(dist.Dirichlet(c), dist.Dirichlet(torch.ones_like(c))).sum()


@METHODS.register("drnas")
class DrNAS(Darts):
    OPTIONS = {
        **{key: Darts.OPTIONS[key] for key in ("arch_betas", "init_scale")},
        "arch_lr": {"type": "number", "exclusiveMinimum": 0, "default": 6e-4},
        "reg_type": {"enum": ["l2", "kl"], "default": "l2", "description": "l2: Adam weight decay on alpha; kl: KL(Dir(c) || Dir(1)) in the loss"},
        "reg_scale": {"type": "number", "minimum": 0, "default": 1e-3, "description": "weight decay (l2) or KL weight (kl)"},
        "warmup_epochs": {"type": "integer", "minimum": 0, "default": 0, "description": "epochs with the architecture frozen"},
        "eval_weights": {"enum": ["softmax", "mean"], "default": "softmax", "description": "op weights for validation and selection"},
        "progressive": {
            "type": "array",
            "default": [],
            "description": "stages of the progressive search (empty: one stage); see search/drnas.py",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["epochs", "partial_channels"],
                "properties": {
                    "epochs": {"type": "integer", "minimum": 1},
                    "partial_channels": {"type": "integer", "minimum": 1},
                    "keep_ops": {"type": ["integer", "null"], "minimum": 2, "default": None, "description": "ops kept per edge from this stage on (null: all left)"},
                },
            },
        },
    }

    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        require_cell_space("drnas", settings, key_of)

    @classmethod
    def check_options(cls, options: dict, settings: dict, key: str = "options", key_of=lambda setting: f"search.settings.{setting}") -> None:
        stages = options.get("progressive") or []
        if not stages:
            return
        where = f"config key '{key}.progressive'"
        space = get_space(settings["space"])
        if not space.darts_cells:
            raise ConfigError(f"{where}: a progressive search needs a DARTS-family cell space (partial channels); got {settings['space']!r}")
        total = sum(stage["epochs"] for stage in stages)
        if total != settings["epochs"]:
            raise ConfigError(f"{where}: the stages' epochs sum to {total}, not {key_of('epochs')} {settings['epochs']}")
        if stages[-1]["partial_channels"] != settings.get("partial_channels", 1):
            raise ConfigError(
                f"{where}: the last stage's partial_channels {stages[-1]['partial_channels']} must be "
                f"{key_of('partial_channels')} ({settings.get('partial_channels', 1)}), the supernet selection rebuilds"
            )
        ops = space.arch_shape()[1]
        kept, k = ops, None
        for index, stage in enumerate(stages):
            if settings["init_channels"] % stage["partial_channels"]:
                raise ConfigError(f"{where}[{index}]: partial_channels {stage['partial_channels']} does not divide init_channels {settings['init_channels']}")
            if k is not None and stage["partial_channels"] > k:
                raise ConfigError(f"{where}[{index}]: partial_channels {stage['partial_channels']} is above the previous stage's {k} (stages only widen)")
            keep = stage.get("keep_ops")
            if keep is not None and (index == 0 and keep != ops or keep > kept):
                raise ConfigError(f"{where}[{index}]: keep_ops {keep} is more than the {kept} ops left" if index else f"{where}[0]: keep_ops must be null or {ops} (nothing is pruned before the search)")
            kept = kept if keep is None else keep
            k = stage["partial_channels"]

    @classmethod
    def stage_of(cls, options: dict, epoch: int) -> int:
        """Index of the stage that epoch ``epoch`` (0-based) belongs to (the last for epochs past the end)."""
        end = 0
        stages = options.get("progressive") or []
        for index, stage in enumerate(stages):
            end += stage["epochs"]
            if epoch < end:
                return index
        return max(len(stages) - 1, 0)

    @classmethod
    def stage_start(cls, options: dict, stage: int) -> int:
        return sum(s["epochs"] for s in (options.get("progressive") or [])[:stage])

    @classmethod
    def supernet_settings(cls, options: dict, settings: dict, epoch: int) -> dict:
        stages = options.get("progressive") or []
        if not stages:
            return settings
        return {**settings, "partial_channels": stages[cls.stage_of(options, epoch)]["partial_channels"]}

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        self.check_options(options, settings)
        super().__init__(space, model, options, settings, device, amp, validate)
        self.epoch = 0
        # Ops still in the search per cell type (edges, ops); pruned between progressive stages.
        self.mask = {kind: torch.ones_like(a, dtype=torch.bool) for kind, a in self.alpha.items()}

    def build_arch_optimizer(self) -> torch.optim.Optimizer:
        decay = self.options["reg_scale"] if self.options["reg_type"] == "l2" else 0.0
        return torch.optim.Adam(self.alpha.parameters(), lr=self.options["arch_lr"], betas=tuple(self.options["arch_betas"]), weight_decay=decay)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, epochs: int) -> None:
        """At the end of a progressive stage, prune each edge to the next stage's ``keep_ops``."""
        if epoch + 1 >= epochs or not self.options.get("progressive"):
            return
        stage = self.stage_of(self.options, epoch + 1)
        if self.stage_start(self.options, stage) == epoch + 1 and self.options.get("progressive")[stage].get("keep_ops") is not None:
            self.prune(self.options.get("progressive")[stage]["keep_ops"])

    def prune(self, keep: int) -> None:
        """Keep, per edge, the ``keep`` still-kept ops of highest concentration."""
        with torch.no_grad():
            for kind, a in self.alpha.items():
                scores = concentration(a).masked_fill(~self.mask[kind], float("-inf"))
                top = scores.topk(keep, dim=-1).indices
                self.mask[kind] = torch.zeros_like(self.mask[kind]).scatter(-1, top, True)

    def kept_ops(self) -> dict[str, torch.Tensor] | None:
        return None if all(bool(m.all()) for m in self.mask.values()) else {kind: m.cpu() for kind, m in self.mask.items()}

    def _masked(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weights renormalised over each edge's kept ops (unchanged while nothing is pruned)."""
        out = {}
        for kind, w in weights.items():
            mask = self.mask[kind]
            if bool(mask.all()):
                out[kind] = w
            else:
                w = w * mask
                out[kind] = w / w.sum(-1, keepdim=True)
        return out

    def weights(self, alpha: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One Dirichlet sample per edge (differentiable in alpha), of the kept ops'
        concentrations once ops are pruned (each edge keeps as many), 0 for the others."""
        alpha = self.alpha if alpha is None else alpha
        out = {}
        for kind, a in alpha.items():
            mask = self.mask[kind]
            if bool(mask.all()):
                out[kind] = torch.distributions.Dirichlet(concentration(a)).rsample()
            else:
                kept = concentration(a)[mask].view(len(a), -1)
                out[kind] = torch.zeros_like(a).masked_scatter(mask, torch.distributions.Dirichlet(kept).rsample())
        return out

    def eval_weights(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            if self.options["eval_weights"] == "softmax":
                return self._masked({kind: F.softmax(a, dim=-1) for kind, a in self.alpha.items()})
            return self._masked({kind: concentration(a) / concentration(a).sum(-1, keepdim=True) for kind, a in self.alpha.items()})

    def train_step(self, batch_w, batch_a, w_optimizer, lr):
        stage_epoch = self.epoch - self.stage_start(self.options, self.stage_of(self.options, self.epoch))
        if stage_epoch >= self.options["warmup_epochs"]:
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
            if self.options.get("progressive"):
                snap[f"kept_{kind}"] = self.mask[kind].cpu().numpy().astype(np.uint8)
        return snap

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch": self.epoch, "mask": {kind: m.cpu() for kind, m in self.mask.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.epoch = int(state["epoch"])
        if "mask" in state:
            self.mask = {kind: m.to(self.device) for kind, m in state["mask"].items()}
