"""UNAS (Vahdat et al., 2020): a factorized cell searched with REBAR or REINFORCE.

Node n of a cell has two branches; each has input logits over the n+2 earlier nodes and
op logits over the ops (all initialised to 0). A sample picks one (input, op) per branch.
It is mapped onto the DARTS supernet's per-edge op weights,
W[edge(node, i), o] = sum_branch i_branch[i] * o_branch[o], so the supernet computes the
sampled cell (its mixed op skips exact zeros, which makes hard samples cheap); a
(input, op) pair picked by both branches weighs 2 on one shared op.

Objective of a sample z, per (train, valid) pair of the two batches (one architecture
per pair when ``per_sample``, as the reference samples per image):
f(z) = CE_train + gap_lambda * |CE_valid - CE_train| + arch_penalty * sum_n <i_n o_n, i'_n o'_n>
(``objective: validation`` uses CE_valid instead of the generalisation-gap loss; the last
term, L_arch, is 1 per node whose branches pick the same pair). The alpha gradient is
estimated with REBAR (``sampling.rebar_categorical``: Gumbel-softmax relaxation at
``temperature`` with the conditional control variate; unbiased) or REINFORCE with an
exponential-moving-average baseline, b <- decay * b + (1 - decay) * mean f, started at the
first mean (choice; the reference's decay is 0.1).

Weights: Adam (``w_lr`` cosine to ``w_lr_min``; these options replace the shared SGD
settings), trained on the training CE of the relaxed sample (the mixed-op network), after
the alpha step of the same sample. Alpha: Adam, LR cosine from ``arch_lr`` to
``arch_lr_min`` over the search, frozen for the first ``warmup_epochs`` (appendix A.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline import runtime
from pipeline.errors import ConfigError
from pipeline.lazy import F, nn, np, torch
from pipeline.search import METHODS
from pipeline.search.base import SearchMethod
from pipeline.search.sampling import rebar_categorical, rebar_surrogate, reinforce_surrogate
from pipeline.spaces import get_space

BETAS = {
    "type": "array",
    "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    "minItems": 2,
    "maxItems": 2,
    "default": [0.9, 0.999],
}


def ops_key(kind: str) -> str:
    """Checkpoint key of a cell type's op logits, (nodes, 2 branches, ops)."""
    return f"{kind}_ops"


def inputs_key(kind: str, node: int) -> str:
    """Checkpoint key of a node's input logits, (2 branches, node) for node = 2, 3, ..."""
    return f"{kind}_inputs{node}"


@dataclass
class ArchSample:
    hard: dict[str, torch.Tensor]  # per cell type (samples, edges, ops), exact 0/1/2 entries
    relaxed: dict[str, torch.Tensor]  # the same with REBAR's relaxation
    log_prob: torch.Tensor  # (samples,) log q(hard sample)
    overlap_hard: torch.Tensor  # (samples,) nodes whose branches pick the same (input, op)
    overlap_relaxed: torch.Tensor


def branch_overlap(inputs: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
    """<i (x) o, i' (x) o'> = (i . i')(o . o') of a node's two branches (..., 2, n)."""
    return (inputs[..., 0, :] * inputs[..., 1, :]).sum(-1) * (ops[..., 0, :] * ops[..., 1, :]).sum(-1)


def edge_weights(inputs: list[torch.Tensor], ops: torch.Tensor) -> torch.Tensor:
    """(..., edges, ops) supernet weights from per-node inputs (..., 2, node) and ops (..., nodes, 2, ops)."""
    columns = [torch.einsum("...bi,...bo->...io", node_inputs, ops[..., n, :, :]) for n, node_inputs in enumerate(inputs)]
    return torch.cat(columns, dim=-2)


@METHODS.register("unas")
class Unas(SearchMethod):
    OPTIONS = {
        "arch_lr": {"type": "number", "exclusiveMinimum": 0, "default": 2e-3},
        "arch_lr_min": {"type": "number", "minimum": 0, "default": 3e-4},
        "arch_betas": BETAS,
        "arch_weight_decay": {"type": "number", "minimum": 0, "default": 1e-6, "description": "appendix A.3's value (choice)"},
        "w_lr": {"type": "number", "exclusiveMinimum": 0, "default": 6e-4},
        "w_lr_min": {"type": "number", "minimum": 0, "default": 1e-4},
        "w_betas": BETAS,
        "w_weight_decay": {"type": "number", "minimum": 0, "default": 3e-4, "description": "appendix A.3's value (choice)"},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.4},
        "arch_penalty": {"type": "number", "minimum": 0, "default": 0.2, "description": "lambda_arch of L_arch"},
        "objective": {"enum": ["generalization_gap", "validation"], "default": "generalization_gap"},
        "gap_lambda": {"type": "number", "minimum": 0, "default": 0.5},
        "estimator": {"enum": ["rebar", "reinforce"], "default": "rebar"},
        "baseline_decay": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1, "description": "REINFORCE EMA"},
        "per_sample": {"type": "boolean", "default": True, "description": "one architecture per (train, valid) pair"},
        "warmup_epochs": {"type": "integer", "minimum": 0, "default": 15, "description": "epochs with alpha frozen"},
    }

    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        space = get_space(settings["space"])
        if not space.darts_cells or not space.uniform_edges:
            raise ConfigError(
                f"config key '{key_of('space')}': search method unas needs a DARTS-family cell space with the same ops on"
                f" every edge (e.g. unas, darts); got {settings['space']!r}"
            )

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        super().__init__(space, model, options, settings, device, amp, validate)
        ops = len(space.primitives)
        params = {}
        for kind in space.cell_types:
            params[ops_key(kind)] = nn.Parameter(torch.zeros(space.steps, 2, ops, device=device))
            for node in range(2, space.steps + 2):
                params[inputs_key(kind, node)] = nn.Parameter(torch.zeros(2, node, device=device))
        self.alpha = nn.ParameterDict(params)
        self.arch_optimizer = torch.optim.Adam(
            self.alpha.parameters(),
            lr=options["arch_lr"],
            betas=tuple(options["arch_betas"]),
            weight_decay=options["arch_weight_decay"],
        )
        self.arch_frozen = options["warmup_epochs"] > 0
        self.baseline: float | None = None

    def make_weight_optimizer(self, parameters):
        o = self.options
        optimizer = torch.optim.Adam(parameters, lr=o["w_lr"], betas=tuple(o["w_betas"]), weight_decay=o["w_weight_decay"])
        return optimizer, o["w_lr_min"]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        o = self.options
        self.arch_frozen = epoch < o["warmup_epochs"]
        lr = o["arch_lr_min"] + 0.5 * (o["arch_lr"] - o["arch_lr_min"]) * (1 + math.cos(math.pi * epoch / epochs))
        for group in self.arch_optimizer.param_groups:
            group["lr"] = lr

    # -- the distribution
    def node_inputs(self, kind: str) -> list[torch.Tensor]:
        return [self.alpha[inputs_key(kind, node)] for node in range(2, self.space.steps + 2)]

    def eval_weights(self) -> dict[str, torch.Tensor]:
        """The expected supernet weights E[W] = sum_branch p(input) p(op)."""
        with torch.no_grad():
            return {
                kind: edge_weights([F.softmax(a, -1) for a in self.node_inputs(kind)], F.softmax(self.alpha[ops_key(kind)], -1))
                for kind in self.space.cell_types
            }

    def sample(self, count: int) -> ArchSample:
        """``count`` independent architectures, each as hard and relaxed supernet weights."""
        t = self.options["temperature"]
        hard, relaxed = {}, {}
        log_prob = overlap_hard = overlap_relaxed = 0.0
        for kind in self.space.cell_types:
            ops = rebar_categorical(self.alpha[ops_key(kind)], t, (count,))
            inputs = [rebar_categorical(logits, t, (count,)) for logits in self.node_inputs(kind)]
            hard[kind] = edge_weights([i.hard for i in inputs], ops.hard)
            relaxed[kind] = edge_weights([i.relaxed for i in inputs], ops.relaxed)
            log_prob = log_prob + ops.log_prob.sum((-2, -1)) + sum(i.log_prob.sum(-1) for i in inputs)
            for n, node in enumerate(inputs):
                overlap_hard = overlap_hard + branch_overlap(node.hard, ops.hard[:, n])
                overlap_relaxed = overlap_relaxed + branch_overlap(node.relaxed, ops.relaxed[:, n])
        return ArchSample(hard, relaxed, log_prob, overlap_hard, overlap_relaxed)

    def objective(self, batch_w, batch_a, weights, overlap) -> torch.Tensor:
        """f per (train, valid) pair: the search objective plus L_arch."""
        (x, y), (xv, yv) = batch_w, batch_a
        with runtime.autocast(self.device, self.amp):
            ce_valid = F.cross_entropy(self.model(xv, weights).float(), yv, reduction="none")
            if self.options["objective"] == "validation":
                f = ce_valid
            else:
                ce_train = F.cross_entropy(self.model(x, weights).float(), y, reduction="none")
                f = ce_train + self.options["gap_lambda"] * (ce_valid - ce_train).abs()
        return f + self.options["arch_penalty"] * overlap

    # -- checkpoint
    def snapshot(self) -> dict[str, Any]:
        snap = {}
        steps = self.space.steps
        for kind in self.space.cell_types:
            snap[f"alpha_{kind}_ops"] = self.alpha[ops_key(kind)].detach().cpu().numpy().copy()
            padded = np.full((steps, 2, steps + 1), np.nan, dtype=np.float32)  # node n has n+2 inputs
            for n, logits in enumerate(self.node_inputs(kind)):
                padded[n, :, : n + 2] = logits.detach().cpu().numpy()
            snap[f"alpha_{kind}_inputs"] = padded
        return snap

    def state_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "baseline": self.baseline,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha.load_state_dict(state["alpha"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.baseline = state["baseline"]

    # -- the step
    def train_step(self, batch_w, batch_a, w_optimizer, lr):
        x, y = batch_w
        sample = self.sample(len(y) if self.options["per_sample"] else 1)
        if not self.arch_frozen:
            self._arch_update(batch_w, batch_a, sample)
        return self.weight_step(x, y, sample.relaxed, w_optimizer)

    def _arch_update(self, batch_w, batch_a, sample: ArchSample) -> None:
        """The alpha update from one sample (private: the step shares the sample with the weights)."""
        # Pair the two batches sample by sample (the last batches may differ in size).
        n = min(len(batch_w[1]), len(batch_a[1]))
        batch_w, batch_a = (batch_w[0][:n], batch_w[1][:n]), (batch_a[0][:n], batch_a[1][:n])
        pairs = slice(None) if not self.options["per_sample"] else slice(0, n)
        hard = {kind: w[pairs] for kind, w in sample.hard.items()}
        with torch.no_grad():
            f_hard = self.objective(batch_w, batch_a, hard, sample.overlap_hard[pairs])
        log_prob = sample.log_prob[pairs]
        if self.options["estimator"] == "rebar":
            relaxed = {kind: w[pairs] for kind, w in sample.relaxed.items()}
            f_relaxed = self.objective(batch_w, batch_a, relaxed, sample.overlap_relaxed[pairs])
            surrogate = rebar_surrogate(log_prob, f_hard, f_relaxed)
        else:
            mean = f_hard.mean().item()
            baseline = mean if self.baseline is None else self.baseline
            surrogate = reinforce_surrogate(log_prob, f_hard, baseline)
            decay = self.options["baseline_decay"]
            self.baseline = decay * baseline + (1 - decay) * mean
        params = list(self.alpha.values())
        grads = torch.autograd.grad(surrogate, params, allow_unused=True)
        self.arch_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        self.arch_optimizer.step()
