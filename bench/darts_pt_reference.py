"""darts-pt's perturbation-based selection as its code runs it (Wang et al., 2021;
ruocwang/darts-pt: sota/cnn/projection.py, model_search_darts_proj.py and train_search.py
for the DARTS spaces, nasbench201/projection.py for NAS-Bench-201), re-implemented on the
pipeline's supernets to check our ``pt`` against it and to time both (bench/select_pt.py).

What it keeps of that code (read, not copied):

- State per cell type: the undecided edges, ``proj_weights`` (the one-hot row of a decided
  edge, a zero row for a dropped one) and the kept edges of each decided node. The weights
  the network sees are softmax(alpha) with those rows written over it outside autograd, so
  alpha of decided edges still gets gradients (that change nothing).
- Schedule (``pt_project``): the DARTS script tunes interval x (edges + nodes to prune - 1)
  + 1 epochs, the NB201 script interval x (edges - 1); a decision comes at the start of
  every epoch divisible by the interval and of the last epoch (ops while the epoch is below
  interval x edges, nodes after), normal cell before reduction cell; every epoch tunes.
- Edge and node picks: numpy's global generator, ``np.random.choice`` over the remaining
  ones (seed it once, as the code's ``np.random.seed(args.seed)``), unless ``pick`` is given.
- Op decision (``project_op``): each op of the edge removed in turn (its weight times 0),
  the supernet scored, the op whose removal leaves the lowest accuracy (``acc``) or highest
  loss (``loss``) kept; a strict comparison, so ties keep the earlier op.
- Topology (``project_edge``): while more than ``inputs_per_node`` edges remain, every
  remaining edge is scored with only itself zeroed on the projected weights (the rounds'
  earlier removals are not applied) and the one leaving the highest accuracy / lowest loss
  dropped (ties: the later edge); every round scores again.
- Scoring (``infer(..., _eval=False)``): train-mode BN, so the running statistics move; no
  gradient; batches of 64 over the validation half. ``scoring="darts-pt"``: that half
  reshuffled on every pass with the training augmentation (pad-4 crop, flip), as the code's
  validation loader draws from the augmented training set; ``"fixed"``: one order, no
  augmentation (what our ``pt`` scores on).
- Tuning: a fresh SGD at learning_rate / 10 with the search's momentum and weight decay,
  never decayed (the code's cosine scheduler is built and never stepped). Per training
  batch (shuffled, augmented): the 1st-order architecture step on the first batch of a
  freshly shuffled, augmented pass over the validation half (backward, Adam on alpha;
  skipped for fix-alpha, the code's "blank"), then the weight step (backward, clip, SGD).
- Logging: before the loop and after every tuning epoch the training and validation halves
  are evaluated in eval mode (its log lines); ``log_passes=False`` leaves them out.

Not modelled: darts-pt's MixedOp computes ``none`` (x * 0) while its weight is not 0 and
tests each weight on the host (``if w != 0``, a device sync per op); here ``none`` and
zero-weight ops are skipped as in our supernet, which flatters the reference slightly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.training.data import Augment, BatchLoader

REFERENCE_BATCH = 64


@dataclass
class ReferenceData:
    """darts-pt's loaders over one split of uint8 images: the weight half and the
    validation half, batches of 64."""

    images: torch.Tensor
    labels: torch.Tensor
    train_indices: torch.Tensor
    valid_indices: torch.Tensor
    mean: Any
    std: Any
    scoring: str = "darts-pt"  # or "fixed"
    batch_size: int = REFERENCE_BATCH

    def __post_init__(self):
        if self.scoring not in ("darts-pt", "fixed"):
            raise ValueError(f"scoring must be 'darts-pt' or 'fixed', not {self.scoring!r}")
        self._passes = 0
        augment = Augment(crop_padding=4, flip=True, cutout=0)
        common = dict(mean=self.mean, std=self.std)
        self.train = BatchLoader(self.images, self.labels, self.train_indices, self.batch_size, augment=augment, shuffle=True, **common)
        self.valid_augmented = BatchLoader(self.images, self.labels, self.valid_indices, self.batch_size, augment=augment, shuffle=True, **common)
        self.valid_plain = BatchLoader(self.images, self.labels, self.valid_indices, self.batch_size, **common)
        self.valid = self.valid_augmented if self.scoring == "darts-pt" else self.valid_plain

    def _seed(self) -> int:
        self._passes += 1  # each pass of a shuffled loader draws a new order
        return self._passes

    def scoring_pass(self):
        return self.valid.epoch(self._seed())

    def train_pass(self):
        return self.train.epoch(self._seed())

    def first_valid_batch(self):
        """``next(iter(valid_queue))``: a fresh random batch of the augmented validation half."""
        g = torch.Generator().manual_seed(self._seed())
        chosen = self.valid_indices[torch.randperm(len(self.valid_indices), generator=g)[: self.batch_size]]
        batch = BatchLoader(self.images, self.labels, chosen, self.batch_size, mean=self.mean, std=self.std,
                            augment=self.valid_augmented.augment)
        return next(iter(batch.epoch(self._passes)))

    def log_loaders(self):
        """The loaders of the per-epoch log: training and validation halves as the code's."""
        return (self.train, self.valid_augmented)


class ReferencePT:
    """darts-pt's ``pt_project`` on ``model(x, weights_dict)`` with architecture parameters
    ``alpha`` (per cell type, leaf tensors). ``data`` serves the batches (ReferenceData or
    anything with scoring_pass / train_pass / first_valid_batch / log_loaders)."""

    def __init__(
        self,
        space,
        model: nn.Module,
        alpha: dict[str, torch.Tensor],
        data,
        *,
        crit: str = "acc",
        interval: int = 5,
        learning_rate: float = 0.025,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        arch_optimizer: torch.optim.Optimizer | None = None,
        train_alpha: bool = True,
        tune: bool = True,
        log_passes: bool = True,
        pick: Callable[[int, str, list[int]], int] | None = None,
    ):
        self.space, self.model, self.alpha, self.data = space, model, alpha, data
        self.crit, self.interval = crit, interval
        self.grad_clip, self.train_alpha, self.tune, self.log_passes = grad_clip, train_alpha, tune, log_passes
        self.pick = pick or (lambda step, kind, choices: int(np.random.choice(choices, size=1)[0]))
        self.kinds = tuple(space.cell_types)
        self.edges = space.edges()
        num_edges, num_ops = space.arch_shape()
        self.num_edges, self.num_ops = num_edges, num_ops
        self.limit = getattr(space, "inputs_per_node", None)
        by_node: dict[int, list[int]] = {}
        for e, (node, _) in enumerate(self.edges):
            by_node.setdefault(node, []).append(e)
        self.node_edges = {n: es for n, es in sorted(by_node.items()) if self.limit is not None and len(es) > self.limit}
        self.undecided = {k: [True] * num_edges for k in self.kinds}
        self.node_open = {k: {n: True for n in self.node_edges} for k in self.kinds}
        self.kept = {k: {} for k in self.kinds}
        self.proj_weights = {k: torch.zeros(num_edges, num_ops, device=alpha[k].device) for k in self.kinds}
        # model.reset_optimizer(learning_rate / 10, ...); the architect's Adam (the search's, if given)
        params = list(model.parameters())
        self.w_optimizer = torch.optim.SGD(params, learning_rate / 10, momentum=momentum, weight_decay=weight_decay) if params else None
        self.arch_optimizer = arch_optimizer or torch.optim.Adam(alpha.values(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        self.decisions: list[dict[str, Any]] = []
        self.decision_epochs: list[int] = []
        self.scoring_passes = 0
        self._step = 0

    # -- the projected weights
    def projected(self, kind: str) -> torch.Tensor:
        weights = F.softmax(self.alpha[kind], dim=-1)
        for e in range(self.num_edges):
            if not self.undecided[kind][e]:
                weights[e].data.copy_(self.proj_weights[kind][e])
        for node, edges in self.node_edges.items():
            if not self.node_open[kind][node]:
                for e in edges:
                    if e not in self.kept[kind][node]:
                        weights[e].data.copy_(self.proj_weights[kind][e])
        return weights

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: self.projected(k) for k in self.kinds}

    # -- scoring
    @torch.no_grad()
    def score(self, weights: dict[str, torch.Tensor]) -> tuple[float, float]:
        """(accuracy %, mean loss) over one scoring pass, train-mode BN."""
        self.model.train()
        self.scoring_passes += 1
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in self.data.scoring_pass():
            logits = self.model(x, weights)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        return 100.0 * correct / seen, loss_sum / seen

    def _crit(self, stats: tuple[float, float]) -> float:
        return stats[0] if self.crit == "acc" else stats[1]

    def _hurts_more(self, a: float, b: float) -> bool:
        return a < b if self.crit == "acc" else a > b

    def project_op(self, kind: str) -> tuple[int, int]:
        remaining = [e for e in range(self.num_edges) if self.undecided[kind][e]]
        edge = self.pick(self._step, kind, remaining)
        best, extreme, scores = 0, None, []
        for op in range(self.num_ops):
            weights = self.weights()
            w = weights[kind].detach().clone()
            w[edge, op] = 0.0
            weights[kind] = w
            crit = self._crit(self.score(weights))
            scores.append(crit)
            if extreme is None or self._hurts_more(crit, extreme):
                best, extreme = op, crit
        self.proj_weights[kind][edge] = F.one_hot(torch.tensor(best), self.num_ops).to(self.proj_weights[kind])
        self.undecided[kind][edge] = False
        self.decisions.append({"step": self._step, "kind": kind, "what": "op", "edge": edge, "op": best, "scores": scores})
        return edge, best

    def project_edge(self, kind: str) -> tuple[int, list[int]]:
        remaining = [n for n, open_ in self.node_open[kind].items() if open_]
        node = self.pick(self._step, kind, remaining)
        edges = list(self.node_edges[node])
        rounds = []
        while len(edges) > self.limit:
            drop, extreme, scores = None, None, {}
            for e in edges:
                weights = self.weights()
                w = weights[kind].detach().clone()
                w[e] = 0.0
                weights[kind] = w
                crit = self._crit(self.score(weights))
                scores[e] = crit
                if extreme is None or not self._hurts_more(crit, extreme):  # the least harmful; ties: later
                    drop, extreme = e, crit
            rounds.append(scores)
            edges.remove(drop)
        for e in self.node_edges[node]:
            if e not in edges:
                self.proj_weights[kind][e] = 0.0
        self.kept[kind][node] = edges
        self.node_open[kind][node] = False
        self.decisions.append({"step": self._step, "kind": kind, "what": "edge", "node": node, "kept": edges, "rounds": rounds})
        return node, edges

    # -- tuning
    def tune_epoch(self) -> None:
        for x, y in self.data.train_pass():
            self.model.train()
            if self.train_alpha:
                xa, ya = self.data.first_valid_batch()
                self.w_optimizer.zero_grad()
                self.arch_optimizer.zero_grad()
                F.cross_entropy(self.model(xa, self.weights()), ya).backward()
                self.arch_optimizer.step()
            self.w_optimizer.zero_grad()
            self.arch_optimizer.zero_grad()
            F.cross_entropy(self.model(x, self.weights()), y).backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.w_optimizer.step()

    @torch.no_grad()
    def log_pass(self) -> None:
        """The code's per-epoch log: training and validation halves, eval-mode BN."""
        self.model.eval()
        weights = self.weights()
        for loader in self.data.log_loaders():
            for x, _ in loader.epoch(0):
                self.model(x, weights)
        self.model.train()

    # -- the procedure
    def tune_epochs(self) -> int:
        if self.node_edges:  # the DARTS script
            return self.interval * (self.num_edges + len(self.node_edges) - 1) + 1
        return self.interval * (self.num_edges - 1)  # the NB201 script

    def run(self) -> None:
        total = self.tune_epochs()
        if self.log_passes:
            self.log_pass()
        for epoch in range(total):
            if epoch % self.interval == 0 or epoch == total - 1:
                self.decision_epochs.append(epoch)
                ops_phase = not self.node_edges or epoch < self.interval * self.num_edges
                for kind in self.kinds:
                    self.project_op(kind) if ops_phase else self.project_edge(kind)
                self._step += 1
            if self.tune:
                self.tune_epoch()
            if self.log_passes:
                self.log_pass()

    def cells_ops(self) -> dict[str, dict[tuple[int, int], int]]:
        """Per cell type, {(node, input): op index} of the edges that stay."""
        out = {}
        for kind in self.kinds:
            dropped = {e for node, edges in self.node_edges.items() for e in edges if e not in self.kept[kind].get(node, edges)}
            out[kind] = {
                self.edges[e]: int(self.proj_weights[kind][e].argmax())
                for e in range(self.num_edges)
                if not self.undecided[kind][e] and e not in dropped
            }
        return out
