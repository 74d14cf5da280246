"""SGAS criterion 1 (Li et al., 2020): DARTS with greedy, progressive edge decisions.

Decision rounds start after a warm-up and come at a fixed interval; each round decides one
edge per cell type: among the undecided edges the one with the highest

    score = norm(1 - p_none) * norm(1 - H(p_ops) / log(#ops))

(p = softmax(alpha) of the edge, p_ops its non-none part renormalised, norm = min-max over
the edges) is fixed to its strongest non-none op; once a node has ``inputs_per_node``
decided inputs its other incoming edges are pruned. A decided edge computes its op with
weight 1, a pruned edge nothing, and their alpha is frozen. After each round the batch size
grows by ``batch_increase``. There are as many rounds as a derived cell has edges (8 in the
DARTS space), so the final op weights are the genotype and magnitude selection returns
exactly the decided edges.

The reference runs 50 epochs with decisions after epochs 9, 14, ..., 44 (0-based); here
round k comes after epoch round(epochs * (warmup_fraction + k * decision_interval_fraction)),
capped at the last epoch, so the schedule scales with the configured epochs (with fewer
epochs than rounds several rounds share an epoch). Min-max normalisation runs over all
edges as in the reference code (frozen alphas included); ``score_normalization:
undecided`` restricts it to the undecided ones.

``op_selection: pt`` is SGAS+PT (darts-pt.txt, section 5): the edge order and shrinking stay
SGAS's, but the decided edge keeps the op whose removal lowers the supernet's validation
accuracy most (measured as the epoch's validation is, with the current op weights).
"""

from __future__ import annotations

import math
from typing import Any

from pipeline import runtime
from pipeline.errors import ConfigError
from pipeline.lazy import F, torch
from pipeline.search import METHODS
from pipeline.search.darts import Darts
from pipeline.spaces import get_space

UNDECIDED, PRUNED = -1, -2


def _min_max(values: torch.Tensor, scope: torch.Tensor) -> torch.Tensor:
    """(v - min) / (max - min) with min and max over ``scope``; zeros when they coincide."""
    low, high = values[scope].min(), values[scope].max()
    if high > low:
        return (values - low) / (high - low)
    return torch.zeros_like(values)


def edge_scores(probs: torch.Tensor, none_mask: torch.Tensor, undecided: torch.Tensor, normalize_over: str = "all") -> torch.Tensor:
    """SGAS criterion 1 per edge of ``probs`` (edges, ops); -inf for edges already decided."""
    importance = 1 - (probs * none_mask).sum(dim=-1)
    op_probs = probs.masked_fill(none_mask, 0) / importance[:, None]
    num_ops = (~none_mask).sum(dim=-1)
    entropy = torch.special.entr(op_probs).sum(dim=-1)
    normalized_entropy = torch.where(num_ops > 1, entropy / num_ops.clamp(min=2).log(), torch.zeros_like(entropy))
    scope = undecided if normalize_over == "undecided" else torch.ones_like(undecided)
    score = _min_max(importance, scope) * _min_max(1 - normalized_entropy, scope)
    return score.masked_fill(~undecided, -math.inf)


@METHODS.register("sgas")
class SGAS(Darts):
    OPTIONS = {
        **Darts.OPTIONS,
        "warmup_fraction": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "default": 0.18,
            "description": "first decision after epoch round(fraction * epochs) (reference: 9 of 50)",
        },
        "decision_interval_fraction": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "default": 0.1,
            "description": "epochs between decisions as a fraction of the epochs (reference: 5 of 50)",
        },
        "batch_increase": {"type": "integer", "minimum": 0, "default": 8, "description": "batch size growth per decision round"},
        "op_selection": {
            "enum": ["magnitude", "pt"],
            "default": "magnitude",
            "description": "a decided edge's op: largest alpha (SGAS) or, as SGAS+PT in darts-pt, the op whose "
            "removal lowers the supernet's validation accuracy most",
        },
        "score_normalization": {
            "enum": ["all", "undecided"],
            "default": "all",
            "description": "min-max over all edges (reference code) or over the undecided ones",
        },
    }

    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        if not get_space(settings["space"]).inputs_per_node:
            raise ConfigError(
                f"config key '{key_of('space')}': search method sgas needs a cell space whose nodes keep a fixed "
                f"number of inputs (DARTS family); got {settings['space']!r}"
            )

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        from pipeline.nets.ops import ZERO_OPS

        super().__init__(space, model, options, settings, device, amp, validate)
        self.edge_list = space.edges()
        self.none_mask = {
            kind: torch.tensor([[name in ZERO_OPS for name in names] for names in space.candidates(kind)], device=device)
            for kind in space.cell_types
        }
        self.selected = {kind: torch.full((len(self.edge_list),), UNDECIDED, dtype=torch.long) for kind in space.cell_types}
        self.rounds = 0
        nodes: dict[int, int] = {}
        for node, _ in self.edge_list:
            nodes[node] = nodes.get(node, 0) + 1
        self.total_rounds = sum(min(space.inputs_per_node, count) for count in nodes.values())
        self._refresh_fixed()

    # -- op weights: decided edges one-hot, pruned edges zero, the rest softmax(alpha)
    def _refresh_fixed(self) -> None:
        self.fixed, self.frozen = {}, {}
        for kind, selected in self.selected.items():
            edges, ops = self.alpha[kind].shape
            fixed = torch.zeros(edges, ops)
            decided = selected >= 0
            fixed[decided, selected[decided]] = 1.0
            self.fixed[kind] = fixed.to(self.device)
            self.frozen[kind] = (selected != UNDECIDED).to(self.device)

    def weights(self, alpha=None) -> dict[str, torch.Tensor]:
        soft = super().weights(alpha)
        return {kind: torch.where(self.frozen[kind][:, None], self.fixed[kind].to(w.dtype), w) for kind, w in soft.items()}

    def arch_step(self, batch_w, batch_a, w_optimizer, lr) -> None:
        before = {kind: a.detach().clone() for kind, a in self.alpha.items()}
        super().arch_step(batch_w, batch_a, w_optimizer, lr)
        with torch.no_grad():  # Adam's momentum and weight decay would still move frozen rows
            for kind, a in self.alpha.items():
                a.copy_(torch.where(self.frozen[kind][:, None], before[kind], a))

    # -- decisions
    def decision_epochs(self, epochs: int) -> list[int]:
        start, every = self.options["warmup_fraction"], self.options["decision_interval_fraction"]
        return [min(epochs - 1, math.floor(epochs * (start + k * every) + 0.5)) for k in range(self.total_rounds)]

    def scores(self, kind: str) -> torch.Tensor:
        probs = F.softmax(self.alpha[kind].detach(), dim=-1)
        undecided = (self.selected[kind] == UNDECIDED).to(probs.device)
        return edge_scores(probs, self.none_mask[kind], undecided, self.options["score_normalization"])

    def strongest_op(self, kind: str, edge: int) -> int:
        """The edge's non-none op by magnitude, or (``op_selection: pt``) the one whose
        removal (weight set to 0, the others kept) leaves the lowest validation accuracy."""
        none = self.none_mask[kind][edge]
        if self.options["op_selection"] == "magnitude":
            probs = F.softmax(self.alpha[kind].detach()[edge], dim=-1)
            return int(torch.argmax(probs.masked_fill(none, -1.0)))
        if self.validate is None:
            raise RuntimeError("sgas op_selection pt needs the search loop's validation (the validate argument)")
        ops = [k for k in range(len(none)) if not none[k]]
        from pipeline.nets.supernet import without_each_op

        removed = without_each_op(self.eval_weights(), kind, edge, ops)
        accuracy = {op: self.validate(weights)[1] for op, weights in zip(ops, removed)}
        runtime.log(f"sgas+pt: {kind} edge {edge}: valid acc without each op {accuracy}")
        return min(accuracy, key=lambda op: (accuracy[op], op))

    def decide(self, kind: str) -> tuple[int, int]:
        """Fix the best-scoring undecided edge of ``kind`` to its strongest non-none op."""
        edge = int(torch.argmax(self.scores(kind)))
        op = self.strongest_op(kind, edge)
        selected = self.selected[kind]
        selected[edge] = op
        node = self.edge_list[edge][0]
        incoming = [e for e, (n, _) in enumerate(self.edge_list) if n == node]
        if sum(int(selected[e] >= 0) for e in incoming) >= self.space.inputs_per_node:
            for e in incoming:
                if selected[e] == UNDECIDED:
                    selected[e] = PRUNED
        self._refresh_fixed()
        name = self.space.candidates(kind)[edge][op]
        runtime.log(f"sgas: {kind} edge {self.edge_list[edge][1]}->{node} fixed to {name}")
        return edge, op

    def on_epoch_end(self, epoch: int, epochs: int) -> None:
        for _ in range(self.decision_epochs(epochs).count(epoch)):
            pending = [kind for kind, s in self.selected.items() if (s == UNDECIDED).any()]
            for kind in pending:
                self.decide(kind)
            self.rounds += bool(pending)

    def batch_size(self, configured: int) -> int:
        return configured + self.options["batch_increase"] * self.rounds

    # -- state
    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out.update({f"selected_{kind}": s.numpy().copy() for kind, s in self.selected.items()})
        out["decision_rounds"] = self.rounds
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "selected": {k: s.clone() for k, s in self.selected.items()}, "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.selected = {k: s.clone().long().cpu() for k, s in state["selected"].items()}
        self.rounds = int(state["rounds"])
        self._refresh_fixed()
