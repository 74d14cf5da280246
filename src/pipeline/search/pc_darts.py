"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalisation.

Partial channels are a property of the supernet, ``search.settings.partial_channels`` K
(see ``pipeline.nets.supernet``): only 1/K of each mixed op's input channels go through the
candidate ops, the rest bypass them, and the edge's output channels are shuffled in K
groups. Being a setting, it composes with any method on a DARTS-family cell space
(``darts``, ``sdarts``, ``drnas``, ...), and every stage that rebuilds the supernet from
the search's settings (PT selection) gets the same network. This method's config block
sets K = 4, the reference's CIFAR value.

Edge normalisation: per cell type, one weight beta_e per edge; node j sums its incoming
edges as sum_e softmax_j(beta)_e * MixedOp_e(x_e), the softmax taken over node j's own
incoming edges (the reference's per-node slices of ``betas_normal``/``betas_reduce``).
The mixed op is linear in its op weights, so the supernet receives
w_e = softmax_j(beta)_e * softmax(alpha_e) (and scales an edge's bypass channels by
sum_k w_e,k = softmax_j(beta)_e). These products are also the op weights that
validation and selection see: the magnitude parse then ranks a node's inputs by
max_k softmax(alpha_e)_k * softmax_j(beta)_e and picks each edge's op by alpha, as the
reference's genotype does. PT selection fixes a decided edge's weights to one-hot (so
that edge then enters its node with weight 1, not its beta). alpha and beta are both initialised 1e-3 * N(0, 1) and trained
by DARTS' architecture step (1st or 2nd order) with one Adam.

Defaults from the paper and the authors' code (yuhuixu1993/PC-DARTS, train_search.py,
CIFAR-10): architecture Adam lr 6e-4, betas (0.5, 0.999), weight decay 1e-3; the
architecture is frozen for the first 15 of 50 epochs (``warmup_epochs``); weights SGD lr
0.1 cosine to 0, batch 256 (the config block's ``settings``). Differences: the stride-2
bypass is max-pooled with ceil mode, equal to the reference's floor mode on even sizes and
also defined on odd ones.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError
from pipeline.lazy import F, nn, torch
from pipeline.search import METHODS
from pipeline.search.darts import Darts
from pipeline.spaces import get_space


def edge_normalisation(beta: torch.Tensor, nodes: list[int]) -> torch.Tensor:
    """softmax of ``beta`` (edges,) over the incoming edges of each node (``nodes[e]``: edge e's node)."""
    out = torch.empty_like(beta)
    for node in sorted(set(nodes)):
        index = torch.tensor([e for e, n in enumerate(nodes) if n == node], device=beta.device)
        out = out.index_put((index,), F.softmax(beta[index], dim=0))
    return out


def beta_key(kind: str) -> str:
    return f"beta_{kind}"


@METHODS.register("pc_darts")
class PcDarts(Darts):
    OPTIONS = {
        **Darts.OPTIONS,
        "arch_lr": {"type": "number", "exclusiveMinimum": 0, "default": 6e-4},
        "edge_normalization": {"type": "boolean", "default": True, "description": "learn per-edge weights beta, softmax over each node's inputs"},
        "warmup_epochs": {"type": "integer", "minimum": 0, "default": 15, "description": "epochs with the architecture frozen (reference: 15 of 50)"},
    }

    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        space = get_space(settings["space"])
        if not space.cell_graph:
            raise ConfigError(
                f"config key '{key_of('space')}': search method pc_darts needs a cell space (DARTS family or nb201); got {settings['space']!r}"
            )

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        super().__init__(space, model, options, settings, device, amp, validate)
        self.nodes = [node for node, _ in space.edges()]
        if options["edge_normalization"]:
            for kind in space.cell_types:
                self.alpha[beta_key(kind)] = nn.Parameter(options["init_scale"] * torch.randn(len(self.nodes)).to(device))
            self.arch_optimizer = self.build_arch_optimizer()
        self.epoch = 0

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def edge_weights(self, alpha: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per cell type, each edge's normalised weight (ones without edge normalisation)."""
        alpha = self.alpha if alpha is None else alpha
        out = {}
        for kind in self.space.cell_types:
            key = beta_key(kind)
            out[kind] = edge_normalisation(alpha[key], self.nodes) if key in alpha else torch.ones(len(self.nodes), device=self.device)
        return out

    def weights(self, alpha: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        alpha = self.alpha if alpha is None else alpha
        edges = self.edge_weights(alpha)
        return {kind: edges[kind][:, None] * F.softmax(alpha[kind], dim=-1) for kind in self.space.cell_types}

    def train_step(self, batch_w, batch_a, w_optimizer, lr):
        if self.epoch >= self.options["warmup_epochs"]:
            self.arch_step(batch_w, batch_a, w_optimizer, lr)
        return self.weight_update(batch_w, w_optimizer)

    def snapshot(self) -> dict[str, Any]:
        snap = {}
        for key, value in self.alpha.items():
            name = key if key.startswith("beta_") else f"alpha_{key}"
            snap[name] = value.detach().cpu().numpy().copy()
        return snap

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.epoch = int(state["epoch"])
