"""Perturbation-based selection (DARTS-PT, Wang et al., 2021) and its PT-Mag ablation.

On the trained supernet, with the search method restored from its checkpoint:

1. Operations. A step decides one undecided edge of every cell type, picked uniformly at
   random (seeded by the selection seed, the step and the cell type). ``pt``: each
   candidate op is removed in turn (its weight set to 0, no renormalisation) and the
   supernet evaluated on the whole validation split (the search's architecture half);
   the op whose removal hurts most is kept (criterion ``acc``: lowest accuracy, ``loss``:
   highest loss; ties go to the earlier op). ``pt_mag``: the op with the largest current
   weight. The edge becomes one-hot. Candidates (``exclude_ops: null``, the default):
   every op of the space that its genotype can hold. On NAS-Bench-201 that is all five,
   ``none`` included (a ``none`` edge is cut), as darts-pt's code; a DARTS-family cell
   never holds ``none``, so there it is not a candidate (the paper omits it on DARTS;
   darts-pt's code does so by searching a space without it, our ``darts_nonone``, which
   ``config/config.yaml`` uses for DARTS+PT). A list names the excluded ops instead.
2. Topology (spaces with ``inputs_per_node``; NAS-Bench-201-like spaces have None and
   skip it): a step picks, per cell type, a random node with more incoming edges than
   allowed. ``topology_rule: reference`` (default; darts-pt's ``project_edge``): every
   incoming edge is scored by the supernet with that edge alone removed (edges dropped in
   earlier rounds stay active while scoring), so the ``inputs_per_node`` edges whose
   single removal hurts most are kept; darts-pt re-scores every round, which on a fixed
   evaluation gives the same scores, so this scores once. ``greedy``: drop the edge whose
   removal leaves the best supernet, re-score with it removed, repeat. Either way the
   removals of one node are not separated by fine-tuning, and ties drop the later edge.
3. Between steps the supernet is fine-tuned with the search method's own ``train_step``:
   SGD restarted at ``finetune_lr_scale`` x the search's ``w_lr`` (search momentum and
   weight decay); the architecture state keeps training where the method trains it
   (DARTS: alpha of undecided edges; fix-alpha: nothing). ``finetune_lr: constant``
   (default): that rate throughout, as darts-pt's code (it builds a cosine scheduler but
   never steps it; its NB201 script has none); ``cosine``: cosine to the search's
   ``w_lr_min`` over all tuning epochs. ``schedule: reference`` (default) decides at
   darts-pt's epochs: on cell spaces (its sota/cnn script) every ``finetune_epochs``
   epochs with one more epoch after the last decision (DARTS at 5: 17 decisions at
   epochs 0, 5, ..., 80, 81 epochs); on ops-only spaces (its nasbench201 script, 5 x
   (edges - 1) epochs) the last decision one epoch early and one epoch after it (NB201:
   0, 5, 10, 15, 20, 24; 25 epochs). ``even``: ``finetune_epochs`` between decisions,
   none after the last. ``finetune_epochs: 0`` tunes never.

Where the paper's text, darts-pt's code and this module differ (the default follows the code):

- Topology: the paper says only that it is decided "in a similar fashion" to the ops;
  the code's rule is ``reference`` above; ``greedy`` is offered as an option.
- Tuning: the paper says 5 epochs between decisions; the code's constant rate, its epoch
  after the last decision and NB201's 4-epoch last gap are the defaults.
- Edge order: the code draws from numpy's global generator, seeded once; ours from
  (seed, step, cell type), so a resumed run draws the same: the same distribution, not
  the same draws.
- Scoring data: the code scores on its validation half reshuffled on every pass with the
  training augmentation (crop, flip) in batches of 64 (train-mode BN), so repeated scores
  of one candidate differ; ours scores on a fixed order without augmentation (``eval_bn:
  batch`` gives the same BN statistics over groups of 64): a deterministic measurement.
  ``bench/select_pt.py``'s reference harness runs darts-pt's procedure with either.
- Tuning step: the code's architecture batch is the first batch of a freshly shuffled
  pass over the validation half at every step; ours is the search method's own loaders.
- S3: the code would try ``none`` on RobustDARTS' S3 too; our DARTS-family genotype
  cannot hold it, so by default it is not a candidate there.

Choices of this implementation (config values, defaults as the reference):
``eval_bn: batch`` evaluates with batch-statistics BN as the reference does, over groups
of ``bn_batch_size`` = 64 samples (the reference's batch) inside large batches;
``running`` uses the running statistics. ``eval_images`` (default: all) evaluates on a
class-stratified subset of the validation split, for small-scale runs. The decision
record holds every candidate's score and the supernet's validation accuracy after each
step's tuning; its summary the decision epochs.

The selection resumes after a kill from the last finished step (``<out dir>/checkpoint/last.pt``)
with the same decisions: edge picks are a function of (seed, step, cell type), and each
fine-tuning epoch's batches of (seed, epoch).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.lazy import np, torch
from pipeline.search import METHODS as SEARCH_METHODS
from pipeline.select import METHODS
from pipeline.select.base import RESUME_FILE, DecisionLog, SelectionContext, SelectionError, SelectionMethod
from pipeline.select.magnitude import ALL_OPS, parse_magnitude

if TYPE_CHECKING:
    from pipeline.select.supernet_eval import ProjectedSupernet
    from pipeline.training.loop import ResumableLoop

# The supernet, its data and the training loop are imported where a selection runs, so that
# the method's declaration (options, flags) is read without torch.


def train_supernet_epoch(*args: Any, **kwargs: Any):
    """The search's training epoch, run between PT's decision steps (imported when called)."""
    from pipeline.search.supernet_training import train_supernet_epoch as search_epoch

    return search_epoch(*args, **kwargs)


FINETUNE_EPOCH_BASE = 100_000  # fine-tuning data streams differ from the search's epochs

PT_OPTIONS: dict[str, dict[str, Any]] = {
    "criterion": {"enum": ["acc", "loss"], "default": "acc", "description": "what a removal is judged by"},
    "finetune_epochs": {"type": "integer", "minimum": 0, "default": 5, "description": "tuning epochs between decision steps"},
    "finetune_lr_scale": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 0.1,
        "description": "tuning lr = search w_lr x this",
    },
    "finetune_lr": {
        "enum": ["constant", "cosine"],
        "default": "constant",
        "description": "constant: the tuning lr throughout (darts-pt's code); cosine: to the search's w_lr_min over all tuning",
    },
    "schedule": {
        "enum": ["reference", "even"],
        "default": "reference",
        "description": "reference: darts-pt's decision epochs and one tuning epoch after the last; even: finetune_epochs "
        "between decisions, none after the last",
    },
    "topology_rule": {
        "enum": ["reference", "greedy"],
        "default": "reference",
        "description": "reference: keep the edges whose single removal hurts most (darts-pt's code); greedy: drop the "
        "least harmful edge, re-score without it, repeat",
    },
    "eval_bn": {"enum": ["batch", "running"], "default": "batch", "description": "BN statistics of the evaluation passes"},
    "bn_batch_size": {
        "type": ["integer", "null"],
        "minimum": 2,
        "default": 64,
        "description": "eval_bn batch: samples per BN statistics group (null: the whole eval batch)",
    },
    "eval_batch_size": {"type": "integer", "minimum": 1, "default": 512, "description": "images per evaluation forward"},
    "eval_images": {
        "type": ["integer", "null"],
        "minimum": 1,
        "default": None,
        "description": "evaluate on a class-stratified subset of this many validation images (null: the whole split, as the paper)",
    },
    "topology": {"type": "boolean", "default": True, "description": "decide the inputs of each node by perturbation"},
    "exclude_ops": {
        "type": ["array", "null"],
        "items": {"enum": ALL_OPS},
        "uniqueItems": True,
        "default": None,
        "description": "ops never selected (null: every op the space's genotype can hold; NB201 keeps 'none', DARTS cells do not)",
    },
}


def default_excluded(space) -> list[str]:
    """``exclude_ops: null``: a cell space with an input limit (DARTS family) never holds
    ``none`` in its genotype; an ops-only space (NAS-Bench-201) cuts an edge with it."""
    return ["none"] if getattr(space, "inputs_per_node", None) is not None else []


def tuning_plan(decisions: int, interval: int, schedule: str, ops_only: bool) -> list[int]:
    """Tuning epochs after each of ``decisions`` decision steps, ``interval`` =
    ``finetune_epochs``. ``reference``: darts-pt's pt_project, where a decision comes at
    every epoch divisible by the interval and at the last epoch, and each epoch tunes once;
    its DARTS-space script runs interval x (decisions - 1) + 1 epochs, its NB201 script
    interval x (decisions - 1), so there the last decision comes one epoch early (at an
    interval of 1, right after the one before: darts-pt's loop would leave that edge
    undecided)."""
    if decisions == 0:
        return []
    if interval == 0:
        return [0] * decisions
    if schedule == "even":
        return [interval] * (decisions - 1) + [0]
    gaps = [interval] * (decisions - 1)
    if ops_only and gaps:
        gaps[-1] = interval - 1
    return gaps + [1]


def selection_steps(space, options: dict[str, Any]) -> tuple[int, int]:
    """(operation steps, topology steps) of a whole selection: one per edge, and one per
    node with more incoming edges than allowed where topology is selected."""
    edges = space.edges()
    inputs_per_node = getattr(space, "inputs_per_node", None) if options["topology"] else None
    topo_steps = 0
    if inputs_per_node is not None:
        incoming = [sum(1 for node, _ in edges if node == n) for n in sorted({n for n, _ in edges})]
        topo_steps = sum(1 for count in incoming if count > inputs_per_node)
    return len(edges), topo_steps


def selection_tuning_plan(space, options: dict[str, Any]) -> list[int]:
    """Tuning epochs after each step (see ``tuning_plan``); the ops-only schedule where the
    space has no input limit (darts-pt's NB201 script)."""
    ops_only = getattr(space, "inputs_per_node", None) is None
    return tuning_plan(sum(selection_steps(space, options)), options["finetune_epochs"], options["schedule"], ops_only)


class PerturbationSelection:
    """The PT steps on a projected supernet; independent of checkpoints and files (``run``
    takes the resumable loop that saves them).

    ``current_weights()`` gives the (unprojected) op weights now, e.g. the search method's
    ``eval_weights()`` while alpha keeps training; ``finetune(step)`` tunes after ``step``.
    """

    def __init__(
        self,
        space,
        net: ProjectedSupernet,
        valid_loader,
        options: dict[str, Any],
        seed: int,
        device: torch.device,
        amp: str,
        record: DecisionLog,
        op_rule: str,
        current_weights: Callable[[], dict[str, torch.Tensor]],
        finetune: Callable[[int], None] | None = None,
        kept: dict[str, torch.Tensor] | None = None,
    ):
        self.space, self.net, self.loader = space, net, valid_loader
        self.options, self.seed, self.device, self.amp = options, seed, device, amp
        self.record, self.op_rule = record, op_rule
        self.current_weights = current_weights
        self.finetune = finetune
        self.edges = space.edges()
        self.inputs_per_node = getattr(space, "inputs_per_node", None) if options["topology"] else None
        exclude = options["exclude_ops"]
        self.excluded = set(default_excluded(space) if exclude is None else exclude)
        self.kept = kept  # per cell type (edges, ops): ops still in the search; None: all

    # -- schedule
    def nodes_to_prune(self, kind: str) -> list[int]:
        if self.inputs_per_node is None:
            return []
        counts: dict[int, int] = {}
        for e, (node, _) in enumerate(self.edges):
            if not self.net.removed[kind][e]:
                counts[node] = counts.get(node, 0) + 1
        return sorted(node for node, count in counts.items() if count > self.inputs_per_node)

    def num_steps(self) -> tuple[int, int]:
        """(operation steps, topology steps) of a whole selection."""
        return selection_steps(self.space, self.options)

    def tuning_plan(self) -> list[int]:
        return selection_tuning_plan(self.space, self.options)

    def decision_epochs(self) -> list[int]:
        """The tuning epoch at which each step decides (0 for the first)."""
        return [int(e) for e in np.cumsum([0] + self.tuning_plan()[:-1])]

    def _rng(self, step: int, kind: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, self.space.cell_types.index(kind)])

    # -- evaluation
    def projected(self) -> dict[str, torch.Tensor]:
        return {k: w.detach().to(self.device) for k, w in self.net.project(self.current_weights()).items()}

    def evaluate(self, weight_sets: list[dict[str, torch.Tensor]]) -> list[tuple[float, float]]:
        from pipeline.select.supernet_eval import evaluate_weight_sets

        o = self.options
        return evaluate_weight_sets(
            self.net.supernet, self.loader, weight_sets, self.device, self.amp, o["eval_bn"], o["bn_batch_size"]
        )

    def _pick(self, results: list[tuple[float, float]], hurt_most: bool) -> tuple[int, list[float]]:
        """The candidate whose removal hurts most (an op to keep) or least (an edge to drop),
        and every candidate's score. Ties as in the reference: the earlier op is kept, the
        later edge dropped."""
        loss_crit = self.options["criterion"] == "loss"
        scores = [loss if loss_crit else acc for loss, acc in results]
        harm = [s if loss_crit else -s for s in scores]  # lower accuracy / higher loss hurts more
        order = range(len(harm))
        pick = max(order, key=lambda i: (harm[i], -i)) if hurt_most else min(order, key=lambda i: (harm[i], -i))
        return pick, scores

    # -- decisions
    def decide_op(self, step: int, kind: str) -> None:
        """Decide a random undecided edge of ``kind``."""
        self.decide_edge(step, kind, int(self._rng(step, kind).choice(self.net.undecided(kind))))

    def decide_edge(self, step: int, kind: str, edge: int) -> str:
        """Give ``edge`` its op by the op rule, record why, make it one-hot; returns the op.
        (Usable on its own, e.g. by a search method that decides edges in its own order.)"""
        from pipeline.nets.supernet import without_each_op

        node, source = self.edges[edge]
        names = self.space.candidates(kind)[edge]
        allowed = [k for k, name in enumerate(names) if name not in self.excluded]
        if not allowed:
            raise SelectionError(f"exclude_ops {sorted(self.excluded)} leaves no op on edge {self.edges[edge]} of the {kind} cell")
        current = self.current_weights()[kind][edge].detach().float().cpu()
        if self.kept is not None:  # ops the search pruned (progressive DrNAS) are no candidates
            allowed = [k for k in allowed if self.kept[kind][edge, k]] or allowed
        if self.op_rule == "pt" and len(allowed) > 1:
            sets = without_each_op(self.projected(), kind, edge, allowed)
            pick, scores = self._pick(self.evaluate(sets), hurt_most=True)
            criterion = self.options["criterion"]
        else:  # PT-Mag (or a single candidate): the largest current weight
            scores = [current[k].item() for k in allowed]
            pick = max(range(len(allowed)), key=lambda i: (scores[i], -i))
            criterion = "weight"
        op = allowed[pick]
        self.record.add(
            step=step, cell_type=kind, kind="op", node=node, input=source, edge=edge, criterion=criterion,
            action="keep", choice=names[op],
            candidates=[(names[k], source, s, current[k].item()) for k, s in zip(allowed, scores)],
        )
        self.net.decide_op(kind, edge, op)
        return names[op]

    def prune_node(self, step: int, kind: str) -> None:
        node = int(self._rng(step, kind).choice(self.nodes_to_prune(kind)))
        names = self.space.candidates(kind)
        current = self.current_weights()[kind].detach().float().cpu()
        rescore = self.options["topology_rule"] == "greedy"
        scored: dict[int, tuple[float, float]] = {}
        while True:
            remaining = [e for e, (n, _) in enumerate(self.edges) if n == node and not self.net.removed[kind][e]]
            if len(remaining) <= self.inputs_per_node:
                return
            if rescore or not scored:  # reference: each edge scored once, with only itself removed
                base = self.projected()
                sets = []
                for e in remaining:
                    weights = dict(base)
                    weights[kind] = base[kind].clone()
                    weights[kind][e] = 0.0
                    sets.append(weights)
                scored = dict(zip(remaining, self.evaluate(sets)))
            pick, scores = self._pick([scored[e] for e in remaining], hurt_most=False)
            ops = [int(self.net.op_choice[kind][e]) for e in remaining]
            edge = remaining[pick]
            self.record.add(
                step=step, cell_type=kind, kind="edge", node=node, input=self.edges[edge][1], edge=edge,
                criterion=self.options["criterion"], action="remove", choice=names[edge][ops[pick]],
                candidates=[(names[e][k], self.edges[e][1], s, current[e, k].item()) for e, k, s in zip(remaining, ops, scores)],
            )
            self.net.remove_edge(kind, edge)

    # -- the loop
    def step(self, step: int) -> dict[str, float]:
        """Decide ``step`` in every cell type, tune, and measure the supernet."""
        op_steps, _ = self.num_steps()
        for kind in self.space.cell_types:
            if step < op_steps:
                if self.net.undecided(kind):
                    self.decide_op(step, kind)
            elif self.nodes_to_prune(kind):
                self.prune_node(step, kind)
        if self.finetune is not None and self.tuning_plan()[step] > 0:
            self.finetune(step)
        loss, acc = self.evaluate([self.projected()])[0]
        self.record.after_step(step, acc, loss)
        return {"valid_acc": acc, "valid_loss": loss}

    def loop(self, **resumable) -> ResumableLoop:
        """The loop over the steps; ``resumable``: ResumableLoop's checkpoint arguments (kind,
        state, restore, resume_path, resume_key), none for a run without resume points."""
        from pipeline.training.loop import ResumableLoop

        arguments = dict(kind="select", state=None, restore=None, resume_path=None, resume_key=None) | resumable
        return ResumableLoop(
            "PT", total=sum(self.num_steps()), run_unit=self.step, unit="step",
            describe=lambda row: f"valid acc {row['valid_acc']:.2f} loss {row['valid_loss']:.3f}", **arguments,
        )

    def run(self, loop: ResumableLoop | None = None) -> dict[str, Any]:
        """All steps (those after a resumed checkpoint's with ``loop`` from ``loop()``); the genotype."""
        loop = loop or self.loop()
        if loop.resume() == 0:
            loss, acc = self.evaluate([self.projected()])[0]
            self.record.summary.update(initial_valid_acc=acc, initial_valid_loss=loss)
        loop.run()
        return self.cells()

    def cells(self) -> dict[str, Any]:
        """The genotype: each edge's decided op, the kept edges per node (by the current
        weight of their op when topology selection is off)."""
        final = {}
        current = self.current_weights()
        for kind in self.space.cell_types:
            choice = self.net.op_choice[kind]
            if (choice < 0).any():
                raise SelectionError(f"PT ended with undecided edges in the {kind} cell")
            strength = current[kind].detach().float().cpu().gather(1, choice.view(-1, 1))
            if self.inputs_per_node is not None:
                strength = torch.ones_like(strength)  # the kept edges are the ones not removed
            weights = torch.zeros(len(self.edges), self.net.num_ops)
            weights.scatter_(1, choice.view(-1, 1), strength.clamp(min=1e-12))
            weights[self.net.removed[kind]] = 0.0
            final[kind] = weights
        return parse_magnitude(self.space, final, sorted(self.excluded))


class _PerturbationMethod(SelectionMethod):
    OPTIONS = PT_OPTIONS
    op_rule = "pt"
    resumable = True
    runs_network = True  # fine-tunes and evaluates the supernet: a GPU job on a cluster

    def select(self, ctx: SelectionContext) -> dict:
        from pipeline import artifacts

        setup = restore_supernet(ctx, self.options["eval_batch_size"], self.options["eval_images"])
        o, settings = self.options, setup.settings
        net, method = setup.net, setup.method
        w_optimizer = torch.optim.SGD(
            net.supernet.parameters(),
            lr=settings["w_lr"] * o["finetune_lr_scale"],
            momentum=settings["w_momentum"],
            weight_decay=settings["w_weight_decay"],
        )
        plan = selection_tuning_plan(ctx.space, o)
        first_epoch = [int(e) for e in np.cumsum([0] + plan)]  # of each step's tuning
        tune_epochs = first_epoch[-1]
        # constant: darts-pt builds this schedule and never steps it; cosine steps it per epoch.
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, max(tune_epochs, 1), eta_min=settings["w_lr_min"])

        # The batch size the search ended with (SGAS grows it).
        batch_size = method.batch_size(settings["batch_size"]) if hasattr(method, "batch_size") else settings["batch_size"]

        def finetune(step: int) -> None:
            for epoch in range(first_epoch[step], first_epoch[step + 1]):
                lr = scheduler.get_last_lr()[0]
                desc = f"tune {epoch + 1}/{tune_epochs}"
                train_supernet_epoch(method, setup.loaders, w_optimizer, lr, ctx.seed, FINETUNE_EPOCH_BASE + epoch, desc, batch_size)
                if o["finetune_lr"] == "cosine":
                    scheduler.step()

        selection = PerturbationSelection(
            ctx.space, net, setup.loaders.eval, o, ctx.seed, ctx.device, ctx.amp, ctx.record, self.op_rule,
            current_weights=method.eval_weights, finetune=finetune if o["finetune_epochs"] > 0 else None, kept=method.kept_ops(),
        )

        def payload(done: int) -> dict[str, Any]:
            return {
                "step": done,
                "model": net.supernet.state_dict(),
                "method": method.state_dict(),
                "optimizer": w_optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": method.scaler.state_dict(),
                "rng": artifacts.rng_state(),
                "projection": net.state(),
                "record": ctx.record.state(),
                "provenance": artifacts.provenance({}, seed=ctx.seed, resume_key=ctx.resume_key),
            }

        def restore(state: dict[str, Any]) -> int:
            net.supernet.load_state_dict(state["model"])
            method.load_state_dict(state["method"])
            w_optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            method.scaler.load_state_dict(state["scaler"])
            artifacts.set_rng_state(state["rng"])
            net.load_state(state["projection"])
            ctx.record.load_state(state["record"])
            return int(state["step"])

        # Resume points after each step (where the selection has a work folder); a stop
        # signal (SLURM, Ctrl-C) stops at the next one.
        resume_path = ctx.work_dir / RESUME_FILE if ctx.work_dir is not None else None
        loop = selection.loop(state=payload, restore=restore, resume_path=resume_path, resume_key=ctx.resume_key)
        loop.resume()  # the restored record's summary, then this run's settings over it
        ctx.record.summary.update(
            criterion=o["criterion"], op_rule=self.op_rule, eval_bn=o["eval_bn"], bn_batch_size=o["bn_batch_size"],
            eval_batch_size=setup.loaders.eval.batch_size, eval_images=setup.loaders.eval.num_samples, finetune_epochs=o["finetune_epochs"],
            finetune_lr=settings["w_lr"] * o["finetune_lr_scale"], finetune_lr_schedule=o["finetune_lr"], schedule=o["schedule"],
            decision_epochs=selection.decision_epochs(), tune_epochs=tune_epochs, topology=bool(selection.inputs_per_node),
            topology_rule=o["topology_rule"], exclude_ops=sorted(selection.excluded),
            search_method=ctx.search_params["options"]["algorithm"],
        )
        return selection.run(loop)  # run_select drops the resume point once the outputs exist


@METHODS.register("pt")
class PerturbationSelect(_PerturbationMethod):
    op_rule = "pt"


@METHODS.register("pt_mag")
class PerturbationMagnitudeSelect(_PerturbationMethod):
    """PT-Mag: PT's schedule and topology step, but each edge keeps its largest-weight op."""

    op_rule = "mag"


# ---------------------------------------------------------------- the supernet, restored


class RestoredSupernet:
    """The supernet, its search method and the search's data split, as at the end of the search."""

    def __init__(self, settings, net, method, loaders, data):
        self.settings, self.net, self.method, self.loaders, self.data = settings, net, method, loaders, data


def stratified_subset(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Positions of ``count`` samples taken round-robin over the classes (each class in a
    seeded random order), sorted: as class-balanced as ``count`` allows."""
    labels = labels.cpu().tolist()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    by_class: dict[int, list[int]] = {}
    for position in order:
        by_class.setdefault(labels[position], []).append(position)
    rounds = itertools.zip_longest(*(by_class[label] for label in sorted(by_class)))
    interleaved = [position for group in rounds for position in group if position is not None]
    return torch.tensor(sorted(interleaved[:count]), dtype=torch.long)


def restore_supernet(ctx: SelectionContext, eval_batch_size: int | None = None, eval_images: int | None = None) -> RestoredSupernet:
    """Rebuild the trained supernet and its search method from the checkpoint (projected, so
    decisions can be applied), with the search's loaders on the same split; ``eval_images``
    keeps a class-stratified subset of the validation half for evaluation."""
    from pipeline import artifacts
    from pipeline.search.supernet_training import build_supernet, search_loaders
    from pipeline.select.supernet_eval import ProjectedSupernet
    from pipeline.training.data import BatchLoader, load_prepared

    where = ctx.supernet_path or "supernet checkpoint"
    params = ctx.search_params
    settings = params["settings"]
    data = load_prepared(ctx.data_path, ctx.device)
    channels_last = ctx.runtime.get("channels_last", False)
    loaders = search_loaders(data, settings, channels_last, eval_batch_size)
    valid = loaders.eval
    if eval_images is not None and eval_images < valid.num_samples:
        keep = stratified_subset(data.train_labels[valid.indices], eval_images, settings["split_seed"])
        loaders.eval = BatchLoader(
            data.train_images, data.train_labels, valid.indices[keep], valid.batch_size,
            mean=data.meta["mean"], std=data.meta["std"], channels_last=channels_last,
        )
    supernet = build_supernet(ctx.space, settings, data.num_classes, ctx.device, channels_last)
    try:
        supernet.load_state_dict(ctx.checkpoint["model"])
    except RuntimeError as exc:
        detail = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc).splitlines()[0]
        raise artifacts.ArtifactError(
            f"{where}: its weights do not fit a {ctx.space.name!r} supernet with init_channels "
            f"{settings['init_channels']}, layers {settings['layers']} and the {data.num_classes} classes of {ctx.data_path} ({detail.strip()})"
        ) from None
    net = ProjectedSupernet(supernet, ctx.space)
    try:
        method_cls = SEARCH_METHODS.get(params["options"]["algorithm"])
    except KeyError as exc:
        raise artifacts.ArtifactError(f"{where}: {exc}") from None
    method = method_cls(ctx.space, net, params["options"], settings, ctx.device, ctx.amp)
    if hasattr(method, "on_data"):  # methods that scale with the data size (BaLeNAS)
        method.on_data(loaders.w.num_samples, loaders.a.num_samples)
    method.load_state_dict(ctx.checkpoint["method"])
    return RestoredSupernet(settings, net, method, loaders, data)
