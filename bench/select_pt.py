"""Speed of perturbation-based selection (DARTS-PT): our ``pt`` vs darts-pt's procedure.

The reference side is bench/darts_pt_reference.py: darts-pt's pt_project as its code runs
it (its docstring lists what that covers), on the same supernet and data. Both run on the
space of the paper's DARTS+PT, ``darts_nonone`` (darts-pt's s5: 7 ops, all candidates on
both sides), at three states of a selection: no edge decided, half the edges decided
(one-hot), every edge decided with the topology pruned to two inputs per node. Per state:

- candidate evaluation, per candidate and validation image. Reference: one scoring pass
  per candidate, batches of 64, train-mode BN, fp32, on ``--scoring`` data: ``darts-pt``
  (default; the half reshuffled and augmented on every pass, as its loader) or ``fixed``.
  Ours: the candidates of a decision stacked into one forward with per-sample weights,
  batch-statistics BN over ghost groups of 64 (the same statistics), large eval batches,
  AMP on CUDA if asked, cells that all candidates share run once.
- a tuning epoch, per training image: reference: darts-pt's step (architecture step on a
  fresh random validation batch, weight step; both backpropagate through the network);
  ours: our DARTS method's train_step on our search loaders.
- reference only: its per-epoch log passes (training and validation halves, eval mode).

The whole-run projection counts what each procedure does on the DARTS space at darts-pt's
schedule (both sides: 17 decisions at epochs 0, 5, ..., 80, 81 tuning epochs, 7 candidates
per op decision): the reference re-scores every round of a node's topology decision
(2 x (3 + 7 + 12) = 44 scoring passes) and logs after every epoch (82 log passes); ours
(topology_rule reference) scores each edge of a node once (2 x (3 + 4 + 5) = 24) and
evaluates the supernet once per step for its record (18). Timings are interpolated
linearly in the fraction of decided edges, printed at the benchmark's image counts and
scaled to CIFAR-10 (25,000 + 25,000 images). The reference's data loading is our
on-device BatchLoader, not its PIL transforms in loader workers: that flatters it.

Then a whole selection on both sides at the benchmark's scale, without tuning (the tuning
procedures differ by design), from the same supernet state, with our edge order on both:
with ``fixed`` scoring data their decisions must be the same; with darts-pt's data the
count of decisions that change says how noisy its scores are.

    python bench/select_pt.py                      # CPU-sized: C=4, 5 cells, 32x32, 64 + 64 images
    python bench/select_pt.py --channels 16 --layers 8 --images 512 --device cuda --amp bf16

On CPU, times are the process's CPU time with 1 thread (robust on a shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import darts_pt_reference as ref  # noqa: E402
from pipeline.search import METHODS as SEARCH_METHODS  # noqa: E402
from pipeline.select.base import DecisionLog  # noqa: E402
from pipeline.select.pt import PT_OPTIONS, PerturbationSelection  # noqa: E402
from pipeline.select.supernet_eval import ProjectedSupernet, evaluate_weight_sets  # noqa: E402
from pipeline.spaces import get_space  # noqa: E402
from pipeline.training.data import Augment, BatchLoader  # noqa: E402

SPACE = "darts_nonone"
EDGES, OPS, OP_STEPS, TOPO_STEPS = 14, 7, 14, 3
REFERENCE_TOPO_EVALS = 2 * (3 + (4 + 3) + (5 + 4 + 3))  # every round re-scored
OURS_TOPO_EVALS = 2 * (3 + 4 + 5)  # each edge of a node once
INTERVAL = 5
TUNE_EPOCHS = INTERVAL * (OP_STEPS + TOPO_STEPS - 1) + 1  # 81, both sides
CIFAR_HALF = 25_000
DARTS_OPTIONS = {"algorithm": "darts", "order": 1, "arch_lr": 3e-4, "arch_betas": [0.5, 0.999], "arch_weight_decay": 1e-3,
                 "init_scale": 1e-3, "hvp_epsilon": 0.01}
SETTINGS = {"w_lr": 0.025, "w_momentum": 0.9, "w_weight_decay": 3e-4, "grad_clip": 5.0}  # DARTS


class Clock:
    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.process_time()

    def best(self, fn, repeats: int) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = self.now()
            fn()
            times.append(self.now() - start)
        return min(times)


def make_state(space, net: ProjectedSupernet, fraction: float, prune: bool, rng: np.random.Generator) -> None:
    """Decide ``fraction`` of each cell type's edges to random ops; optionally prune to two inputs."""
    edges = space.edges()
    for kind in space.cell_types:
        for e in rng.permutation(EDGES)[: round(fraction * EDGES)]:
            net.decide_op(kind, int(e), int(rng.integers(0, OPS)))
        if prune:
            for node in sorted({n for n, _ in edges}):
                incoming = [e for e, (n, _) in enumerate(edges) if n == node]
                for e in rng.permutation(incoming)[2:]:
                    net.remove_edge(kind, int(e))


def mirror_state(reference: ref.ReferencePT, net: ProjectedSupernet) -> None:
    """Give the reference the decisions ``net`` holds."""
    for kind in reference.kinds:
        for e, op in enumerate(net.op_choice[kind].tolist()):
            if op >= 0:
                reference.undecided[kind][e] = False
                reference.proj_weights[kind][e] = torch.nn.functional.one_hot(torch.tensor(op), OPS).float()
        for node, edges in reference.node_edges.items():
            removed = [e for e in edges if net.removed[kind][e]]
            if removed:
                for e in removed:
                    reference.proj_weights[kind][e] = 0.0
                reference.kept[kind][node] = [e for e in edges if e not in removed]
                reference.node_open[kind][node] = False


def without_each_op(weights, kind, edge):
    sets = []
    for k in range(OPS):
        w = dict(weights)
        w[kind] = weights[kind].detach().clone()
        w[kind][edge, k] = 0.0
        sets.append(w)
    return sets


def tune_epoch_ours(method, loader_w, loader_a):
    method.model.train()
    for batch_w, batch_a in zip(loader_w.epoch(seed=1), loader_a.epoch(seed=2)):
        method.train_step(batch_w, batch_a, method.w_optimizer, 0.0025)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=64, help="validation images (and as many training images)")
    parser.add_argument("--eval-batch", type=int, default=512, help="ours: images per evaluation forward")
    parser.add_argument("--scoring", default="darts-pt", choices=["darts-pt", "fixed"], help="the reference's scoring data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="ours, on CUDA")
    parser.add_argument("--channels-last", action="store_true", help="ours: channels_last memory format")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-decisions", action="store_true", help="timings only, no whole-selection comparison")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    clock = Clock(device)
    space = get_space(SPACE)
    n = args.images
    images = torch.randint(0, 256, (2 * n, 3, args.image_size, args.image_size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (2 * n,), device=device)
    stats = dict(mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
    train_idx, valid_idx = torch.arange(n), torch.arange(n, 2 * n)

    def reference_data(scoring: str) -> ref.ReferenceData:
        return ref.ReferenceData(images, labels, train_idx, valid_idx, stats["mean"], stats["std"], scoring=scoring)

    def our_loaders(channels_last: bool):
        common = dict(channels_last=channels_last, **stats)
        augment = Augment(crop_padding=4, flip=True, cutout=0)
        return (
            BatchLoader(images, labels, valid_idx, args.eval_batch, **common),
            BatchLoader(images, labels, train_idx, ref.REFERENCE_BATCH, augment=augment, shuffle=True, **common),
            BatchLoader(images, labels, valid_idx, ref.REFERENCE_BATCH, augment=augment, shuffle=True, **common),
        )

    print(f"{SPACE} supernet C={args.channels}, {args.layers} cells, {args.image_size}x{args.image_size}, "
          f"{n} validation + {n} training images, device {device}, threads {args.threads}; reference scoring data: {args.scoring}; "
          f"ours: eval batch {args.eval_batch}, amp {args.amp}, channels_last {args.channels_last}")
    print("times: " + ("CPU seconds of this process" if device.type == "cpu" else "wall seconds (synchronised)"))

    base_model = space.build_supernet(args.channels, args.layers, 10).to(device)
    torch.manual_seed(args.seed)
    base_alpha = {kind: torch.randn(EDGES, OPS, device=device) for kind in space.cell_types}
    states = {"0% decided": (0.0, False), "50% decided": (0.5, False), "all decided, pruned": (1.0, True)}
    rows = {}
    for label, (fraction, prune) in states.items():
        # -- the reference
        model = copy.deepcopy(base_model)
        alpha = {k: a.clone().requires_grad_(True) for k, a in base_alpha.items()}
        reference = ref.ReferencePT(space, model, alpha, reference_data(args.scoring))
        net = ProjectedSupernet(model, space)
        make_state(space, net, fraction, prune, np.random.default_rng(args.seed + 1))
        mirror_state(reference, net)
        per_kind = []
        for kind in space.cell_types:
            edge = ([e for e in range(EDGES) if reference.undecided[kind][e]] or list(range(EDGES)))[0]
            sets = without_each_op(reference.weights(), kind, edge)
            per_kind.append(clock.best(lambda reference=reference, sets=sets: [reference.score(ws) for ws in sets], args.repeats) / len(sets) / n)
        ref_row = {"eval": sum(per_kind) / len(per_kind)}
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        ref_row["tune"] = clock.best(reference.tune_epoch, 1) / n
        model.load_state_dict(saved)
        ref_row["log"] = clock.best(reference.log_pass, 1) / n

        # -- ours
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        model = copy.deepcopy(base_model).to(memory_format=fmt)
        net = ProjectedSupernet(model, space)
        make_state(space, net, fraction, prune, np.random.default_rng(args.seed + 1))
        method = SEARCH_METHODS.get("darts")(space, net, DARTS_OPTIONS, SETTINGS, device, args.amp)
        with torch.no_grad():
            for kind, a in method.alpha.items():
                a.copy_(base_alpha[kind])
        valid, loader_w, loader_a = our_loaders(args.channels_last)
        weights = net.project(method.eval_weights())
        per_kind = []
        for kind in space.cell_types:
            edge = (net.undecided(kind) or list(range(EDGES)))[0]
            sets = without_each_op(weights, kind, edge)

            def run(model=model, valid=valid, sets=sets):
                return evaluate_weight_sets(model, valid, sets, device, args.amp, "batch", ref.REFERENCE_BATCH)

            per_kind.append(clock.best(run, args.repeats) / len(sets) / n)
        ours_row = {"eval": sum(per_kind) / len(per_kind)}
        method.w_optimizer = torch.optim.SGD(model.parameters(), lr=0.0025, momentum=0.9, weight_decay=3e-4)
        ours_row["tune"] = clock.best(lambda method=method, loader_w=loader_w, loader_a=loader_a: tune_epoch_ours(method, loader_w, loader_a), 1) / n
        rows[label] = {"reference": ref_row, "ours": ours_row}
        print_state(label, rows[label])

    project(rows, n, "at this benchmark's image counts")
    project(rows, CIFAR_HALF, "scaled to CIFAR-10 (25,000 validation + 25,000 training images)")
    if not args.skip_decisions:
        compare_decisions(space, base_model, base_alpha, reference_data, our_loaders(False)[0], device, args)


def print_state(label, row):
    ref_row, ours = row["reference"], row["ours"]
    print(f"{label:>20}: candidate evaluation {ref_row['eval'] * 1e3:8.3f} ms/image (reference) {ours['eval'] * 1e3:8.3f} (ours) "
          f"x{ref_row['eval'] / ours['eval']:.2f} | tuning epoch {ref_row['tune'] * 1e3:8.3f} ms/image {ours['tune'] * 1e3:8.3f} "
          f"x{ref_row['tune'] / ours['tune']:.2f} | reference log passes {ref_row['log'] * 1e3:8.3f} ms/image")


def interpolate(rows, impl, key, fraction):
    points = [(0.0, rows["0% decided"][impl][key]), (0.5, rows["50% decided"][impl][key]), (1.0, rows["all decided, pruned"][impl][key])]
    xs, ys = zip(*points)
    return float(np.interp(fraction, xs, ys))


def project(rows, images, where):
    """Seconds of a whole PT run on the DARTS space at darts-pt's schedule, ``images``
    validation and training images."""
    # Decided fraction while each tuning epoch runs: decisions at epochs 0, 5, ..., 80.
    decided = [min((epoch // INTERVAL + 1) / OP_STEPS, 1.0) for epoch in range(TUNE_EPOCHS)]
    totals = {}
    for impl in ("reference", "ours"):
        evals = sum(2 * OPS * interpolate(rows, impl, "eval", s / OP_STEPS) for s in range(OP_STEPS))
        evals += (REFERENCE_TOPO_EVALS if impl == "reference" else OURS_TOPO_EVALS) * interpolate(rows, impl, "eval", 1.0)
        tune = sum(interpolate(rows, impl, "tune", f) for f in decided)
        if impl == "reference":
            other = interpolate(rows, impl, "log", 0.0) + sum(interpolate(rows, impl, "log", f) for f in decided)
            other_label = "per-epoch log passes"
        else:
            steps = [0.0] + [(s + 1) / OP_STEPS for s in range(OP_STEPS)] + [1.0] * TOPO_STEPS
            other = sum(interpolate(rows, impl, "eval", f) for f in steps)  # one evaluation per step for the record
            other_label = "per-step record evaluations"
        totals[impl] = (evals * images, tune * images, other * images, other_label)
    print(f"\nWhole PT run (darts-pt's schedule, {TUNE_EPOCHS} tuning epochs), {where}:")
    for impl, (evals, tune, other, other_label) in totals.items():
        print(f"  {impl:>9}: {(evals + tune + other) / 3600:9.3f} h = evaluations {evals / 3600:.3f} h + tuning {tune / 3600:.3f} h"
              f" + {other_label} {other / 3600:.3f} h")
    ref_total, ours_total = (sum(totals[i][:3]) for i in ("reference", "ours"))
    print(f"  speed-up: x{ref_total / ours_total:.2f} for the whole run, x{totals['reference'][0] / totals['ours'][0]:.2f} "
          f"for the candidate evaluations")


def compare_decisions(space, base_model, base_alpha, reference_data, valid, device, args):
    """Whole selections without tuning from the same state, our edge order on both sides."""
    kinds = list(space.cell_types)
    def pick(step, kind, choices):
        return int(np.random.default_rng([args.seed, step, kinds.index(kind)]).choice(choices))
    outcomes = {}
    for scoring in ("fixed", "darts-pt"):
        alpha = {k: a.clone().requires_grad_(True) for k, a in base_alpha.items()}
        reference = ref.ReferencePT(space, copy.deepcopy(base_model), alpha, reference_data(scoring), tune=False, log_passes=False, pick=pick)
        reference.run()
        outcomes[scoring] = reference.cells_ops()
    options = {name: spec["default"] for name, spec in PT_OPTIONS.items()}
    weights = {k: a.softmax(-1) for k, a in base_alpha.items()}
    selection = PerturbationSelection(space, ProjectedSupernet(copy.deepcopy(base_model), space), valid, options, args.seed, device,
                                      "none", DecisionLog(), "pt", current_weights=lambda: weights)
    with contextlib.redirect_stderr(io.StringIO()):  # its per-step log
        cells = selection.run()
    ours = {kind: {(e["node"], e["input"]): space.primitives.index(e["op"]) for e in cells[kind]["edges"]} for kind in kinds}

    def differences(a, b):
        edges = sum(len(set(a[k]) ^ set(b[k])) // 2 for k in kinds)
        ops = sum(a[k][key] != b[k][key] for k in kinds for key in set(a[k]) & set(b[k]))
        return edges, ops

    print("\nWhole selection without tuning, same state and edge order (8 kept edges per cell type):")
    for label, a, b in (("ours vs reference on fixed data", ours, outcomes["fixed"]),
                        ("reference on darts-pt's data vs on fixed data", outcomes["darts-pt"], outcomes["fixed"])):
        edges, ops = differences(a, b)
        print(f"  {label}: {edges} of 16 kept edges differ, {ops} ops differ on the edges both keep")


if __name__ == "__main__":
    main()
