"""Speed of perturbation-based selection (DARTS-PT): ours vs the darts-pt reference procedure.

Measured on a DARTS supernet (random weights and alpha: time does not depend on them) at
three states of the selection: no edge decided, half the edges decided (one-hot), all
edges decided with the topology pruned to two inputs per node. Per state:

- candidate evaluation: the supernet's loss and accuracy on the validation images with
  one op removed, per candidate (ours: the mean over an edge of each cell type);
- a fine-tuning epoch: DARTS 1st-order train steps (architecture step + weight step) over
  the training images (the reference backpropagates to weights and alpha in both steps,
  as darts-pt's architect.step and model.step do; ours is our DARTS method's step, whose
  architecture step differentiates alpha only).

The reference (ruocwang/darts-pt, sota/cnn: projection.py, train_search.py), re-implemented
on our supernet: every op of every edge is computed, `none` included, whatever its weight
(as DARTS' MixedOp does); candidates one at a time in batches of 64 with train-mode BN;
fp32; after every tuning epoch it evaluates the supernet on the training and validation
sets (its per-epoch log). Its data loading (PIL transforms on the CPU) is not counted,
which flatters the reference. Ours: ops of weight 0 skipped, the candidates of a decision
stacked into one forward with per-sample weights, batch-statistics BN over "ghost" groups
of 64 (the same statistics as the reference's batches), large eval batches, AMP on CUDA;
the supernet is evaluated once per decision step, not per epoch.

The whole-run projection uses the darts-pt schedule on the DARTS space: 14 operation steps
(one edge per cell type; the reference tries all 8 ops, we skip `none`), 3 topology steps
(44 evaluations), 5 tuning epochs between steps (reference: 81 epochs in all, ours: 80),
timings interpolated linearly in the fraction of decided edges; it is printed for the
benchmark's image counts and scaled to CIFAR-10 (25,000 + 25,000 images).

Also checked: at the first state, both procedures' scores and choices on a few edges.

    python bench/select_pt.py                      # CPU-sized: C=4, 5 cells, 32x32, 64 + 64 images
    python bench/select_pt.py --channels 16 --layers 8 --images 512 --device cuda --amp bf16

On CPU, times are the process's CPU time with 1 thread (robust on a shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import supernet as supernet_module
from pipeline.data import BatchLoader
from pipeline.search import METHODS as SEARCH_METHODS
from pipeline.select.supernet_eval import ProjectedSupernet, evaluate_weight_sets
from pipeline.spaces import get_space

REFERENCE_BATCH = 64
EDGES, OPS, OP_STEPS, TOPO_STEPS, TOPO_EVALS = 14, 8, 14, 3, 2 * (3 + (4 + 3) + (5 + 4 + 3))
FINETUNE_EPOCHS = 5
CIFAR_HALF = 25_000


@contextlib.contextmanager
def every_op_computed():
    """DARTS' MixedOp: sum over all ops, weight 0 or not, `none` included."""
    original = supernet_module.active_ops
    supernet_module.active_ops = lambda weights, candidates: [list(range(len(names))) for names in candidates]
    try:
        yield
    finally:
        supernet_module.active_ops = original


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


def settings(args) -> dict:
    return {"w_lr": 0.025, "w_momentum": 0.9, "w_weight_decay": 3e-4, "grad_clip": 5.0}  # DARTS


def make_state(space, net: ProjectedSupernet, fraction: float, prune: bool, rng: np.random.Generator) -> None:
    """Decide ``fraction`` of each cell type's edges to random non-none ops; optionally prune to two inputs."""
    edges = space.edges()
    for kind in space.cell_types:
        for e in rng.permutation(EDGES)[: round(fraction * EDGES)]:
            net.decide_op(kind, int(e), int(rng.integers(1, OPS)))
        if prune:
            for node in sorted({n for n, _ in edges}):
                incoming = [e for e, (n, _) in enumerate(edges) if n == node]
                for e in rng.permutation(incoming)[2:]:
                    net.remove_edge(kind, int(e))


def candidate_sets(net, weights, kind, edge, ops):
    base = net.project(weights)
    sets = []
    for k in ops:
        w = dict(base)
        w[kind] = base[kind].clone()
        w[kind][edge, k] = 0.0
        sets.append(w)
    return sets


def reference_evaluate(model, loader, sets, device):
    """The reference's infer(): per candidate, batches of 64, train-mode BN, fp32, every op."""
    results = []
    model.train()
    with torch.no_grad(), every_op_computed():
        for weights in sets:
            loss_sum, correct = 0.0, 0
            for x, y in loader.epoch(seed=0, batch_size=REFERENCE_BATCH):
                logits = model(x, weights)
                loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
            results.append((loss_sum / loader.num_samples, 100.0 * correct / loader.num_samples))
    return results


def reference_log_passes(model, loaders, weights):
    """After each tuning epoch the reference evaluates train and validation sets (eval-mode BN)."""
    model.eval()
    with torch.no_grad(), every_op_computed():
        for loader in loaders:
            for x, _ in loader.epoch(seed=0, batch_size=REFERENCE_BATCH):
                model(x, weights)
    model.train()


def reference_train_step(method, batch_w, batch_a, w_optimizer) -> None:
    """darts-pt's tuning step: architect.step (1st order) then model.step, each a full
    backward pass (weights and alpha both get gradients), every op computed."""
    model, arch_optimizer = method.model, method.arch_optimizer
    for optimizer, (x, y) in ((arch_optimizer, batch_a), (w_optimizer, batch_w)):
        w_optimizer.zero_grad()
        arch_optimizer.zero_grad()
        F.cross_entropy(model(x, method.weights()), y).backward()
        if optimizer is w_optimizer:
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()


def tune_epoch(method, loader_w, loader_a, w_optimizer, reference: bool):
    """One tuning epoch: ours is the search method's own train_step on the projected supernet."""
    context = every_op_computed() if reference else contextlib.nullcontext()
    with context:
        method.model.train()
        batches = zip(loader_w.epoch(seed=1, batch_size=REFERENCE_BATCH), loader_a.epoch(seed=2, batch_size=REFERENCE_BATCH))
        for batch_w, batch_a in batches:
            if reference:
                reference_train_step(method, batch_w, batch_a, w_optimizer)
            else:
                method.train_step(batch_w, batch_a, w_optimizer, 0.0025)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=64, help="validation images (and as many training images)")
    parser.add_argument("--eval-batch", type=int, default=512, help="ours: images per evaluation forward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="ours, on CUDA")
    parser.add_argument("--channels-last", action="store_true", help="ours: channels_last memory format")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    clock = Clock(device)
    space = get_space("darts")
    rng = np.random.default_rng(args.seed)
    n = args.images
    images = torch.randint(0, 256, (2 * n, 3, args.image_size, args.image_size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (2 * n,), device=device)
    stats = dict(mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
    valid_idx, train_idx = torch.arange(n), torch.arange(n, 2 * n)

    def loaders(channels_last: bool, eval_batch: int):
        common = dict(channels_last=channels_last, **stats)
        return (
            BatchLoader(images, labels, valid_idx, eval_batch, **common),
            BatchLoader(images, labels, train_idx, REFERENCE_BATCH, shuffle=True, **common),
            BatchLoader(images, labels, valid_idx, REFERENCE_BATCH, shuffle=True, **common),
        )

    print(f"DARTS supernet C={args.channels}, {args.layers} cells, {args.image_size}x{args.image_size}, "
          f"{n} validation + {n} training images, device {device}, threads {args.threads}, "
          f"ours: eval batch {args.eval_batch}, amp {args.amp}, channels_last {args.channels_last}")
    print("times: " + ("CPU seconds of this process" if device.type == "cpu" else "wall seconds (synchronised)"))

    base_model = space.build_supernet(args.channels, args.layers, 10).to(device)
    options = {"algorithm": "darts", "order": 1, "arch_lr": 3e-4, "arch_betas": [0.5, 0.999], "arch_weight_decay": 1e-3,
               "init_scale": 1.0, "hvp_epsilon": 0.01}
    states = {"0% decided": (0.0, False), "50% decided": (0.5, False), "all decided, pruned": (1.0, True)}
    rows = {}
    agreement = None
    for label, (fraction, prune) in states.items():
        for impl in ("reference", "ours"):
            ours = impl == "ours"
            measured = {}
            fmt = torch.channels_last if ours and args.channels_last else torch.contiguous_format
            model = base_model.to(memory_format=fmt)
            net = ProjectedSupernet(model, space)
            make_state(space, net, fraction, prune, np.random.default_rng(args.seed + 1))
            method = SEARCH_METHODS.get("darts")(space, net, options, settings(args), device, args.amp if ours else "none")
            torch.manual_seed(args.seed)
            for alpha in method.alpha.values():
                alpha.data.normal_(0, 1)
            weights = method.eval_weights()
            valid, loader_w, loader_a = loaders(ours and args.channels_last, args.eval_batch)
            ops = list(range(1, OPS)) if ours else list(range(OPS))  # the reference tries `none` too
            # Half the decisions are on each cell type. Ours is cheaper on reduction-cell edges
            # (the cells before the first reduction cell run once for all candidates); the
            # reference computes everything either way, so one cell type measures it.
            per_kind = []
            for kind in space.cell_types if ours else ("normal",):
                edge = (net.undecided(kind) or list(range(EDGES)))[0]
                sets = candidate_sets(net, weights, kind, edge, ops)
                if ours:
                    run = lambda: evaluate_weight_sets(model, valid, sets, device, args.amp, "batch", REFERENCE_BATCH)
                else:
                    run = lambda: reference_evaluate(model, valid, sets, device)
                per_kind.append(clock.best(run, args.repeats) / len(sets) / n)
            measured["eval"] = sum(per_kind) / len(per_kind)
            w_opt = torch.optim.SGD(model.parameters(), lr=0.0025, momentum=0.9, weight_decay=3e-4)
            state = {k: v.clone() for k, v in model.state_dict().items()}
            measured["tune"] = clock.best(lambda: tune_epoch(method, loader_w, loader_a, w_opt, not ours), 1) / n
            model.load_state_dict(state)
            if not ours:
                measured["log"] = clock.best(lambda: reference_log_passes(model, [loader_w, valid], net.project(weights)), 1) / n
            rows.setdefault(label, {})[impl] = measured
            if fraction == 0.0 and agreement is None and not ours:
                agreement = (model, net, weights, valid)
        print_state(label, rows[label])

    check_agreement(space, *agreement, device, args, rng)
    project(rows, n, "at this benchmark's image counts")
    project(rows, CIFAR_HALF, "scaled to CIFAR-10 (25,000 validation + 25,000 training images)")


def print_state(label, row):
    ref, ours = row["reference"], row["ours"]
    print(f"{label:>20}: candidate evaluation {ref['eval'] * 1e3:8.3f} ms/image (reference) {ours['eval'] * 1e3:8.3f} (ours) "
          f"x{ref['eval'] / ours['eval']:.2f} | tuning epoch {ref['tune'] * 1e3:8.3f} ms/image {ours['tune'] * 1e3:8.3f} "
          f"x{ref['tune'] / ours['tune']:.2f} | reference log passes {ref['log'] * 1e3:8.3f} ms/image")


def interpolate(rows, impl, key, fraction):
    points = [(0.0, rows["0% decided"][impl][key]), (0.5, rows["50% decided"][impl][key]), (1.0, rows["all decided, pruned"][impl][key])]
    xs, ys = zip(*points)
    return float(np.interp(fraction, xs, ys))


def project(rows, images, where):
    """Seconds of a whole PT run (DARTS space) on ``images`` validation and training images."""
    totals = {}
    for impl in ("reference", "ours"):
        ops = OPS if impl == "reference" else OPS - 1
        evals = sum(2 * ops * interpolate(rows, impl, "eval", s / OP_STEPS) for s in range(OP_STEPS))
        evals += TOPO_EVALS * interpolate(rows, impl, "eval", 1.0)
        if impl == "reference":
            epochs = [(s + 1) / OP_STEPS for s in range(OP_STEPS) for _ in range(FINETUNE_EPOCHS)]
            epochs += [1.0] * (FINETUNE_EPOCHS * (TOPO_STEPS - 1) + 1)  # 81 epochs; the last projection gets 1
            tune = sum(interpolate(rows, impl, "tune", f) for f in epochs)
            other = sum(interpolate(rows, impl, "log", f) for f in epochs)
            other_label = "per-epoch log passes"
        else:
            gaps = [(s + 1) / OP_STEPS for s in range(OP_STEPS)] + [1.0] * (TOPO_STEPS - 1)  # no tuning after the last step
            tune = sum(FINETUNE_EPOCHS * interpolate(rows, impl, "tune", f) for f in gaps)
            steps = [0.0] + [(s + 1) / OP_STEPS for s in range(OP_STEPS)] + [1.0] * TOPO_STEPS
            other = sum(interpolate(rows, impl, "eval", f) for f in steps)  # one evaluation per step for the record
            other_label = "per-step record evaluations"
        totals[impl] = (evals * images, tune * images, other * images, other_label)
    print(f"\nWhole PT run (darts-pt schedule), {where}:")
    for impl, (evals, tune, other, other_label) in totals.items():
        print(f"  {impl:>9}: {(evals + tune + other) / 3600:9.3f} h = evaluations {evals / 3600:.3f} h + tuning {tune / 3600:.3f} h"
              f" + {other_label} {other / 3600:.3f} h")
    ref, ours = (sum(totals[i][:3]) for i in ("reference", "ours"))
    ref_eval, ours_eval = totals["reference"][0], totals["ours"][0]
    print(f"  speed-up: x{ref / ours:.2f} for the whole run, x{ref_eval / ours_eval:.2f} for the candidate evaluations")


def pick_by_accuracy(results):
    """The op whose removal leaves the lowest accuracy (ties: the earlier op)."""
    return min(range(len(results)), key=lambda i: (results[i][1], i))


def pick_by_loss(results):
    """The op whose removal leaves the highest loss (ties: the earlier op)."""
    return max(range(len(results)), key=lambda i: (results[i][0], -i))


def check_agreement(space, model, net, weights, valid, device, args, rng):
    """Same scores and choices from both procedures on a few edges (BN statistics of 64 images)."""
    agree, total, d_acc, d_loss = 0, 0, 0.0, 0.0
    for kind in space.cell_types:
        for edge in rng.permutation(EDGES)[:2]:
            sets = candidate_sets(net, weights, kind, int(edge), list(range(1, OPS)))
            ref = reference_evaluate(model, valid, sets, device)
            ours = evaluate_weight_sets(model, valid, sets, device, "none", "batch", REFERENCE_BATCH, batch_size=args.eval_batch)
            for pick in (pick_by_accuracy, pick_by_loss):
                agree += pick(ref) == pick(ours)
                total += 1
            d_acc = max(d_acc, max(abs(a[1] - b[1]) for a, b in zip(ref, ours)))
            d_loss = max(d_loss, max(abs(a[0] - b[0]) for a, b in zip(ref, ours)))
    print(f"\nSame decisions: {agree}/{total} edge choices agree (acc and loss criteria, fp32); "
          f"max |difference| accuracy {d_acc:.4f} points, loss {d_loss:.2e}")


if __name__ == "__main__":
    main()
