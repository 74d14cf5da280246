"""Perturbation-based selection (pt, pt_mag), its decision record, resume, and the
supernet checks every selection makes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from conftest import search_params
from contracts import search_cases
from pipeline import artifacts
from pipeline.artifacts import ArtifactError
from pipeline.search import METHODS as SEARCH_METHODS
from pipeline.search.run import run_search
from pipeline.select.base import DecisionLog
from pipeline.select.magnitude import parse_magnitude
from pipeline.select.pt import PT_OPTIONS, PerturbationSelection, tuning_plan
from pipeline.select.run import run_select
from pipeline.select.supernet_eval import ProjectedSupernet, evaluate_weight_sets
from pipeline.spaces import get_space
from pipeline.spaces.cell import CellSpace

CPU = torch.device("cpu")
RUNTIME = {"device": "cpu", "amp": "none", "channels_last": False, "threads": 1}


# ---------------------------------------------------------------- a hand-built supernet


class OneNodeSpace(CellSpace):
    steps = 1  # node 2 reads nodes 0 and 1: two edges per cell type


class SignalInConv(nn.Module):
    """x = (signal, noise), label = signal > 0. Nodes 0 and 1 are x. 'skip_connect' passes
    x on, noise included; 'sep_conv_3x3' keeps only the signal (times 2). The logit reads
    signal + noise of node 2 of both cell types, so every conv helps and every skip hurts."""

    def forward(self, x, weights):
        logit = 0
        for kind in ("normal", "reduce"):
            w = weights[kind]
            conv = torch.stack([2.0 * x[:, 0], torch.zeros_like(x[:, 1])], 1)
            node = sum(w[..., e, 0:1] * x + w[..., e, 1:2] * conv for e in range(2))  # weights may be per sample
            logit = logit + node.sum(1)
        return torch.stack([-logit, logit], 1)


class TensorLoader:
    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    @property
    def num_samples(self):
        return len(self.y)

    def epoch(self, seed, batch_size=None):
        size = batch_size or self.batch_size
        for i in range(0, len(self.y), size):
            yield self.x[i : i + size], self.y[i : i + size]


def toy_problem():
    space = OneNodeSpace("one_node", ("skip_connect", "sep_conv_3x3"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 2, generator=g) * torch.tensor([1.0, 3.0])
    loader = TensorLoader(x, (x[:, 0] > 0).long(), 250)
    skip_heavy = torch.tensor([[0.7, 0.3], [0.7, 0.3]])  # alpha favours skip on every edge
    return space, loader, {"normal": skip_heavy, "reduce": skip_heavy.clone()}


def pt_options(**changes):
    options = {name: spec["default"] for name, spec in PT_OPTIONS.items()}
    options.update(exclude_ops=[], eval_bn="running")
    options.update(changes)
    return options


def run_toy(op_rule="pt", seed=0, **changes):
    space, loader, weights = toy_problem()
    record = DecisionLog()
    selection = PerturbationSelection(
        space, ProjectedSupernet(SignalInConv(), space), loader, pt_options(**changes), seed, CPU, "none", record, op_rule,
        current_weights=lambda: weights,
    )
    return selection.run(), record


def ops_of(cells):
    return {kind: [e["op"] for e in cells[kind]["edges"]] for kind in cells}


@pytest.mark.parametrize("criterion", ["acc", "loss"])
def test_pt_keeps_the_convolution_that_carries_the_signal_where_magnitude_keeps_skip(criterion):
    space, _, weights = toy_problem()
    assert ops_of(parse_magnitude(space, weights, [])) == {"normal": ["skip_connect"] * 2, "reduce": ["skip_connect"] * 2}
    cells, record = run_toy(criterion=criterion)
    assert ops_of(cells) == {"normal": ["sep_conv_3x3"] * 2, "reduce": ["sep_conv_3x3"] * 2}
    # The record says why: without the conv the supernet is worse than without skip.
    for index, decision in enumerate(record.decisions):
        scores = {c["name"]: c["score"] for c in record.candidates if c["decision"] == index}
        worse = scores["sep_conv_3x3"] < scores["skip_connect"] if criterion == "acc" else scores["sep_conv_3x3"] > scores["skip_connect"]
        assert worse and decision["choice"] == "sep_conv_3x3" and decision["criterion"] == criterion


def test_pt_mag_keeps_the_largest_weight_on_the_same_schedule():
    cells, record = run_toy(op_rule="mag")
    assert ops_of(cells) == {"normal": ["skip_connect"] * 2, "reduce": ["skip_connect"] * 2}
    assert [d["criterion"] for d in record.decisions] == ["weight"] * 4
    assert [c["score"] for c in record.candidates] == pytest.approx([0.7, 0.3] * 4)


def test_same_seed_same_decisions_and_other_seeds_change_only_the_order():
    runs = {seed: run_toy(seed=seed) for seed in (0, 0, 1, 2, 3)}
    first, again = run_toy(seed=0), run_toy(seed=0)
    assert first[0] == again[0] and first[1].decisions == again[1].decisions and first[1].candidates == again[1].candidates
    orders = set()
    for _seed, (cells, record) in runs.items():
        assert cells == first[0]  # on this supernet every decision is order-independent
        orders.add(tuple((d["cell_type"], d["edge"]) for d in record.decisions))
    assert len(orders) > 1  # ... but the seed sets the order


# ---------------------------------------------------------------- topology: darts-pt's rule vs greedy


class ThreeNodeSpace(CellSpace):
    steps = 3  # node 4 reads nodes 0..3: four edges (5, 6, 7, 8), two to drop


# Accuracy by the set of node 4's inputs dropped (other nodes do not matter). Single
# removals: 0 -> 50, 1 -> 60, 2 -> 80, 3 -> 85, so darts-pt's rule keeps inputs 0 and 1.
# Sequentially, 3 goes first (85); without it dropping 1 leaves the most (45), so the
# greedy rule keeps inputs 0 and 2.
NODE4_ACCURACY = {(): 90, (0,): 50, (1,): 60, (2,): 80, (3,): 85, (0, 3): 40, (1, 3): 45, (2, 3): 30}


class AccuracyTable(nn.Module):
    """Sample i (of 100, label 1) is classified right iff i < the accuracy of the node-4
    inputs that are active (an edge is active while any of its op weights is not 0)."""

    def forward(self, x, weights):
        w = weights["normal"]
        active = w.reshape(-1, *w.shape[-2:]).sum(-1).ne(0)[:, 5:9]  # (1 or samples, 4)
        table = {tuple(i for i in range(4) if i not in dropped): acc for dropped, acc in NODE4_ACCURACY.items()}
        acc = torch.tensor([table.get(tuple(torch.nonzero(row).flatten().tolist()), 20) for row in active], dtype=torch.float)
        right = x[:, 0] < acc.expand(len(x))
        return torch.stack([torch.zeros(len(x)), torch.where(right, 1.0, -1.0)], 1)


def run_table(rule):
    space = ThreeNodeSpace("three_nodes", ("skip_connect", "sep_conv_3x3"))
    x = torch.arange(100, dtype=torch.float).view(-1, 1)
    loader = TensorLoader(x, torch.ones(100, dtype=torch.long), 100)
    uniform = {kind: torch.full((9, 2), 0.5) for kind in space.cell_types}
    record = DecisionLog()
    selection = PerturbationSelection(
        space, ProjectedSupernet(AccuracyTable(), space), loader, pt_options(topology_rule=rule), 0, CPU, "none", record, "pt",
        current_weights=lambda: uniform,
    )
    cells = selection.run()
    return {e["input"] for e in cells["normal"]["edges"] if e["node"] == 4}, record


def test_reference_topology_keeps_the_edges_whose_single_removal_hurts_most_greedy_the_sequential_pair():
    kept, record = run_table("reference")
    assert kept == {0, 1}
    greedy, greedy_record = run_table("greedy")
    assert greedy == {0, 2}
    for rec, second in ((record, {0: 50, 1: 60, 2: 80}), (greedy_record, {0: 40, 1: 45, 2: 30})):
        rows = [i for i, d in enumerate(rec.decisions) if d["kind"] == "edge" and d["node"] == 4 and d["cell_type"] == "normal"]
        scores = [{c["input"]: c["score"] for c in rec.candidates if c["decision"] == row} for row in rows]
        assert scores == [{0: 50, 1: 60, 2: 80, 3: 85}, second]  # what each rule compared, round by round
        assert [rec.decisions[row]["input"] for row in rows] == [3, 2 if rec is record else 1]


# ---------------------------------------------------------------- NAS-Bench-201: `none` is a candidate


class HarmfulEdge(nn.Module):
    """NB201 cell weights (6 edges x none, skip, conv1x1, conv3x3, pool); x = (signal,
    noise), label = signal > 0. On edge 0 every op but none carries only noise; elsewhere
    conv3x3 carries the signal and the other ops noise."""

    def forward(self, x, weights):
        w = weights["cell"]
        logit = 0
        for e in range(6):
            noisy = w[..., e, 1] + w[..., e, 2] + w[..., e, 4] + (w[..., e, 3] if e == 0 else 0)
            logit = logit + noisy * x[:, 1] + (0 if e == 0 else w[..., e, 3] * 2 * x[:, 0])
        return torch.stack([-logit, logit], 1)


@pytest.mark.parametrize("exclude", [None, ["none"]])
def test_pt_on_nb201_keeps_none_where_every_other_op_hurts_unless_excluded(exclude):
    space = get_space("nb201")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 2, generator=g) * torch.tensor([1.0, 3.0])
    loader = TensorLoader(x, (x[:, 0] > 0).long(), 1000)
    uniform = {"cell": torch.full((6, 5), 0.2)}
    selection = PerturbationSelection(
        space, ProjectedSupernet(HarmfulEdge(), space), loader, pt_options(exclude_ops=exclude), 0, CPU, "none", DecisionLog(), "pt",
        current_weights=lambda: uniform,
    )
    ops = {e["input"] * 10 + e["node"]: e["op"] for e in selection.run()["cell"]["edges"]}
    edge0 = ops.pop(1)  # node 0 -> node 1
    assert (edge0 == "none") == (exclude is None)
    assert set(ops.values()) == {"nor_conv_3x3"}


# ---------------------------------------------------------------- the decision schedule


def test_tuning_plans_put_the_decisions_at_darts_pts_epochs():
    darts = tuning_plan(17, 5, "reference", ops_only=False)  # 14 op + 3 topology steps
    assert np.cumsum([0] + darts).tolist()[:-1] == list(range(0, 81, 5)) and sum(darts) == 81
    nb201 = tuning_plan(6, 5, "reference", ops_only=True)
    assert np.cumsum([0] + nb201).tolist()[:-1] == [0, 5, 10, 15, 20, 24] and sum(nb201) == 25
    assert tuning_plan(17, 5, "even", ops_only=False) == [5] * 16 + [0]
    assert tuning_plan(6, 0, "reference", ops_only=True) == [0] * 6


# ---------------------------------------------------------------- the real supernet


def darts_method(space, model):
    params = search_params()
    return SEARCH_METHODS.get("darts")(space, model, params["options"], params["settings"], CPU, "none")


def test_decided_edges_are_fixed_while_undecided_alpha_keeps_training():
    torch.manual_seed(0)
    space = get_space("darts")
    net = ProjectedSupernet(space.build_supernet(2, 3, 10), space)
    method = darts_method(space, net)
    net.decide_op("normal", 0, 4)
    net.remove_edge("reduce", 5)
    projected = net.project(method.weights())
    assert projected["normal"][0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert projected["reduce"][5].abs().sum() == 0
    torch.testing.assert_close(projected["normal"][1:], method.weights()["normal"][1:])
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    w_opt = torch.optim.SGD(net.parameters(), lr=0.01)
    grads = method.arch_gradient((x, y), (x, y), w_opt, 0.01)
    normal, reduce = grads
    assert normal[0].abs().sum() == 0 and reduce[5].abs().sum() == 0  # decided: no gradient
    assert normal[1:].abs().sum(dim=1).gt(0).all() and reduce[:5].abs().sum(dim=1).gt(0).all()


@pytest.mark.slow
def test_ghost_batch_norm_in_large_batches_equals_the_small_batches(tiny8_data):
    from pipeline.training.data import BatchLoader, load_prepared

    torch.manual_seed(0)
    space = get_space("darts")
    model = space.build_supernet(2, 3, 10)
    weights = darts_method(space, model).eval_weights()
    data = load_prepared(tiny8_data)
    common = dict(mean=data.meta["mean"], std=data.meta["std"])
    images = torch.arange(40)  # 40 = 2 x 16 + 8: a ragged last group too
    small = BatchLoader(data.train_images, data.train_labels, images, 16, **common)
    large = BatchLoader(data.train_images, data.train_labels, images, 64, **common)
    sets = [weights, {k: w * torch.tensor([1.0] * 7 + [0.0]) for k, w in weights.items()}]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = evaluate_weight_sets(model, small, sets, CPU, bn="batch", bn_batch_size=None)
    ghost = evaluate_weight_sets(model, large, sets, CPU, bn="batch", bn_batch_size=16)
    plain_large = evaluate_weight_sets(model, large, sets, CPU, bn="batch", bn_batch_size=None)
    for (loss_r, acc_r), (loss_g, acc_g) in zip(reference, ghost):
        assert loss_g == pytest.approx(loss_r, rel=1e-5) and acc_g == acc_r
    assert plain_large[0][0] != pytest.approx(reference[0][0], rel=1e-5)  # statistics of 64 differ
    # Settings evaluated together (per-sample weights) equal settings evaluated alone, also
    # when they differ in the reduction cells only (the cells before run once for all).
    reduce_only = [weights, {**weights, "reduce": weights["reduce"] * torch.tensor([1.0] * 4 + [0.0] * 4)}]
    for bn, group in (("running", None), ("batch", 16)):
        model.train(bn == "batch")
        for candidates in (sets, reduce_only):
            together = evaluate_weight_sets(model, large, candidates, CPU, bn=bn, bn_batch_size=group)
            alone = [evaluate_weight_sets(model, small, [ws], CPU, bn=bn, bn_batch_size=group)[0] for ws in candidates]
            for (loss_t, acc_t), (loss_a, acc_a) in zip(together, alone):
                assert loss_t == pytest.approx(loss_a, rel=1e-5) and acc_t == acc_a
    assert together[0] != together[1]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # running statistics untouched


def select_params(method, **options):
    defaults = {
        "pt": dict(finetune_epochs=0, eval_batch_size=70, bn_batch_size=5),
        "pt_mag": dict(finetune_epochs=0, eval_batch_size=70, bn_batch_size=5),
        "trainfree": dict(samples=3, batch_size=8, image_size=8),
    }[method]
    return {"dataset": "cifar10", "seed": 0, "method": method, "options": {"algorithm": method, **defaults, **options}, "runtime": dict(RUNTIME)}


def full_options(params):
    from pipeline.config import validate_stage_params

    return validate_stage_params("select", json.loads(json.dumps(params)))


def assert_two_inputs_per_node(cells):
    for kind, cell in cells.items():
        nodes = [e["node"] for e in cell["edges"]]
        assert sorted(nodes) == [2, 2, 3, 3, 4, 4, 5, 5], kind


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pt", "pt_mag"])
def test_pt_runs_on_a_tiny_supernet_and_records_every_decision(method, tiny_supernet, tiny8_data, tmp_path):
    out = tmp_path / "genotype.json"
    genotype = run_select(full_options(select_params(method)), tiny_supernet, tiny8_data, out, threads=1)
    assert_two_inputs_per_node(genotype["cells"])
    assert artifacts.read_genotype(out)["cells"] == genotype["cells"]
    record = artifacts.read_decisions(tmp_path / "decisions.h5")
    d, c = record.decisions, record.candidates
    assert record.method == method and record.summary["eval_bn"] == "batch" and record.summary["criterion"] == "acc"
    for kind in ("normal", "reduce"):
        ops = (d["cell_type"] == kind) & (d["kind"] == "op")
        edges = (d["cell_type"] == kind) & (d["kind"] == "edge")
        assert sorted(d["edge"][ops]) == list(range(14))  # every edge decided once
        assert edges.sum() == 1 + 2 + 3  # nodes 3, 4, 5 drop down to two inputs
        kept = {(e["input"], e["node"]): e["op"] for e in genotype["cells"][kind]["edges"]}
        for row in np.flatnonzero(ops):
            if (d["input"][row], d["node"][row]) in kept:
                assert kept[(d["input"][row], d["node"][row])] == d["choice"][row]
        for row in np.flatnonzero(edges):
            assert (d["input"][row], d["node"][row]) not in kept
    per_decision = np.bincount(c["decision"], minlength=record.num_decisions)
    assert (per_decision[d["kind"] == "op"] == 7).all()  # the DARTS ops but 'none'
    assert np.unique(d["step"]).tolist() == list(range(17))  # 14 op steps, 3 topology steps
    assert np.isfinite(d["valid_acc_after"]).all() and np.isfinite(record.summary["initial_valid_acc"])
    expected_criterion = "acc" if method == "pt" else "weight"
    assert set(d["criterion"][d["kind"] == "op"]) == {expected_criterion}
    assert not (tmp_path / "checkpoint").exists()  # resume point dropped once done


class TuningLog:
    """Wraps select.pt's train_supernet_epoch: the tuning epoch each decision step came after, and
    the optimiser's learning rate at every tuning step."""

    def __init__(self, monkeypatch):
        import pipeline.select.pt as pt_module

        self.epochs, self.step_lrs = [], []
        original = pt_module.train_supernet_epoch

        def train_epoch(method, loaders, w_optimizer, lr, seed, epoch, desc, batch_size=None):
            self.epochs.append(epoch - pt_module.FINETUNE_EPOCH_BASE)
            lrs = []
            step = method.train_step

            def logged(*args, **kwargs):
                lrs.append(w_optimizer.param_groups[0]["lr"])
                return step(*args, **kwargs)

            method.train_step = logged
            try:
                return original(method, loaders, w_optimizer, lr, seed, epoch, desc, batch_size)
            finally:
                method.train_step = step
                self.step_lrs.append(lrs)

        monkeypatch.setattr(pt_module, "train_supernet_epoch", train_epoch)


def test_pt_on_nb201_decides_operations_at_darts_pts_epochs_with_none_a_candidate(tiny8_data, tmp_path, monkeypatch):
    params = search_params(settings={"epochs": 1, "subset_per_class": 2, "batch_size": 10, "space": "nb201", "layers": 5, "init_channels": 4})
    supernet = run_search(params, tiny8_data, tmp_path / "search", threads=1)
    log = TuningLog(monkeypatch)
    options = select_params("pt", eval_images=6, finetune_epochs=5)  # exclude_ops: null
    genotype = run_select(full_options(options), supernet, tiny8_data, tmp_path / "g" / "genotype.json", threads=1)
    record = artifacts.read_decisions(tmp_path / "g" / "decisions.h5")
    assert set(record.decisions["kind"]) == {"op"} and sorted(record.decisions["edge"]) == list(range(6))
    assert record.summary["topology"] is False and record.summary["eval_images"] == 6
    assert (np.bincount(record.candidates["decision"]) == 5).all()  # all five NB201 ops, 'none' included
    assert record.summary["exclude_ops"] == []
    chosen = {(int(n), int(i)): c for n, i, c in zip(record.decisions["node"], record.decisions["input"], record.decisions["choice"])}
    assert {(e["node"], e["input"]): e["op"] for e in genotype["cells"]["cell"]["edges"]} == chosen
    # darts-pt's NB201 script: 25 tuning epochs, decisions at the start of epochs 0, 5, 10, 15, 20, 24
    assert log.epochs == list(range(25)) and record.summary["tune_epochs"] == 25
    assert record.summary["decision_epochs"] == [0, 5, 10, 15, 20, 24]
    rates = [lr for lrs in log.step_lrs for lr in lrs]
    assert len(rates) >= 25 and rates == [pytest.approx(0.0025)] * len(rates)  # w_lr / 10, never decayed


@pytest.mark.slow
@pytest.mark.parametrize("finetune_lr", ["constant", "cosine"])
def test_tuning_rate_is_constant_in_reference_mode_and_decays_in_cosine(finetune_lr, s2_supernet, tiny8_data, tmp_path, monkeypatch):
    log = TuningLog(monkeypatch)
    options = select_params("pt_mag", finetune_epochs=2, finetune_lr=finetune_lr)
    run_select(full_options(options), s2_supernet, tiny8_data, tmp_path / "genotype.json", threads=1)
    record = artifacts.read_decisions(tmp_path / "decisions.h5")
    # 14 op + 3 topology steps, 2 epochs between decisions and one after the last: 33 epochs
    assert record.summary["decision_epochs"] == list(range(0, 33, 2)) and log.epochs == list(range(33))
    d = record.decisions
    assert [int(d["step"][i]) for i in range(len(d["step"])) if d["kind"][i] == "edge"][:1] == [14]
    assert all(len(lrs) >= 1 and len(set(lrs)) == 1 for lrs in log.step_lrs)  # one rate within an epoch
    per_epoch = [lrs[0] for lrs in log.step_lrs]
    if finetune_lr == "constant":
        assert per_epoch == [pytest.approx(0.0025)] * 33
    else:
        assert per_epoch[0] == pytest.approx(0.0025) and all(a > b for a, b in zip(per_epoch, per_epoch[1:]))


def own_epoch_moves_the_architecture(supernet, data) -> bool:
    """Whether one epoch of the search method's own training, from its checkpoint, moves
    the weights PT-Mag reads (fix-alpha's never move; SGAS' freeze once decided)."""
    from pipeline.search.supernet_training import train_supernet_epoch
    from pipeline.select.base import SelectionContext
    from pipeline.select.pt import restore_supernet

    checkpoint = artifacts.load_checkpoint(supernet, "supernet")
    settings = checkpoint["provenance"]["params"]["settings"]
    ctx = SelectionContext(get_space(settings["space"]), checkpoint, checkpoint["arch_weights"], data, CPU, seed=0)
    setup = restore_supernet(ctx)
    before = {kind: w.clone() for kind, w in setup.method.eval_weights().items()}
    optimizer = torch.optim.SGD(setup.net.supernet.parameters(), lr=settings["w_lr"])
    train_supernet_epoch(setup.method, setup.loaders, optimizer, settings["w_lr"], 0, 0, "own epoch", settings["batch_size"])
    after = setup.method.eval_weights()
    return any(not torch.allclose(after[kind].double(), before[kind].double(), rtol=0, atol=1e-9) for kind in before)


@pytest.mark.slow
@pytest.mark.parametrize("case", search_cases(), ids=lambda case: case.algorithm)
def test_pt_tunes_the_supernet_of_every_search_method_with_its_own_step(case, tiny8_data, tmp_path):
    """Every registered search method: PT restores it from the checkpoint and tunes with its
    step between decisions, so the weights PT-Mag reads move exactly where the method's own
    training moves them."""
    settings = {"epochs": 1, "subset_per_class": 2, "batch_size": 10, "space": case.space, "layers": case.layers}
    params = search_params(settings=settings)
    params["method"], params["options"] = case.algorithm, case.options()
    supernet = run_search(params, tiny8_data, tmp_path / "search", threads=1)
    checkpoint = artifacts.load_checkpoint(supernet, "supernet")
    run_select(full_options(select_params("pt_mag", finetune_epochs=1)), supernet, tiny8_data, tmp_path / "g" / "genotype.json", threads=1)
    record = artifacts.read_decisions(tmp_path / "g" / "decisions.h5")
    assert record.summary["search_method"] == case.algorithm
    d, c = record.decisions, record.candidates
    space = get_space(case.space)
    moved = False
    for row in np.flatnonzero(d["kind"] == "op"):
        kind, edge, mine = d["cell_type"][row], d["edge"][row], c["decision"] == row
        ops = [list(space.candidates(kind)[edge]).index(name) for name in c["name"][mine]]
        before = checkpoint["arch_weights"][kind][edge].double().numpy()[ops]
        moved |= not np.allclose(c["weight"][mine], before, rtol=0, atol=1e-9)
    assert moved == own_epoch_moves_the_architecture(supernet, tiny8_data)


def run_cli(params, supernet, data, out):
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "select", "--params", json.dumps(params), "--supernet", str(supernet),
         "--data", str(data), "--out", str(out / "genotype.json"), "--decisions", str(out / "record.h5"), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_sigkill_mid_selection_then_rerun_resumes_to_the_same_decisions(s2_supernet, tiny8_data, tmp_path):
    params = select_params("pt", finetune_epochs=1)  # tuning between steps: optimiser, alpha and RNG must resume
    reference = run_cli(params, s2_supernet, tiny8_data, tmp_path / "ref")
    killed = run_cli(params, s2_supernet, tiny8_data, tmp_path / "killed")
    last = tmp_path / "killed" / "checkpoint" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.02)
    assert killed.poll() is None, "selection finished before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "genotype.json").exists() and not (tmp_path / "killed" / "record.h5").exists()
    done = artifacts.load_checkpoint(last, "select")["step"]
    assert 1 <= done < 17

    resumed = run_cli(params, s2_supernet, tiny8_data, tmp_path / "killed")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"after step {done}" in err
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err

    a = artifacts.read_decisions(tmp_path / "ref" / "record.h5")
    b = artifacts.read_decisions(tmp_path / "killed" / "record.h5")
    for table in ("decisions", "candidates"):
        for column, values in getattr(a, table).items():
            assert np.array_equal(values, getattr(b, table)[column], equal_nan=values.dtype != object), (table, column)
    ga, gb = (artifacts.read_genotype(tmp_path / name / "genotype.json") for name in ("ref", "killed"))
    assert ga["cells"] == gb["cells"]


# ---------------------------------------------------------------- bad supernets


def rewritten(checkpoint_path, tmp_path, change):
    record = artifacts.load_checkpoint(checkpoint_path, "supernet")
    change(record)
    path = tmp_path / "changed.pt"
    artifacts.save_checkpoint(path, "supernet", {k: v for k, v in record.items() if k not in ("format", "version", "kind")})
    return path


@pytest.mark.slow
def test_truncated_or_incompatible_supernet_is_rejected_naming_the_file(tiny_supernet, tiny8_data, tmp_path):
    params = full_options(select_params("pt"))
    out = tmp_path / "g" / "genotype.json"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_supernet.read_bytes()[: tiny_supernet.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=r"truncated\.pt: not a readable checkpoint, truncated or corrupt"):
        run_select(params, truncated, tiny8_data, out)

    def space_to(name):
        return lambda record: record["provenance"]["params"]["settings"].update(space=name)

    other_space = rewritten(tiny_supernet, tmp_path, space_to("darts_nonone"))
    with pytest.raises(ArtifactError, match=r"changed\.pt: arch_weights\['normal'\] has shape \(14, 8\), space 'darts_nonone' expects \(edges, ops\) = \(14, 7\)"):
        run_select(params, other_space, tiny8_data, out)
    unknown = rewritten(tiny_supernet, tmp_path, space_to("darts_v9"))
    with pytest.raises(ArtifactError, match=r"changed\.pt: unknown search space 'darts_v9'"):
        run_select(params, unknown, tiny8_data, out)
    deeper = rewritten(tiny_supernet, tmp_path, lambda r: r["provenance"]["params"]["settings"].update(layers=4))
    with pytest.raises(ArtifactError, match=r"changed\.pt: its weights do not fit a 'darts' supernet with init_channels 2, layers 4"):
        run_select(params, deeper, tiny8_data, out)
    assert not out.parent.exists() or not any(out.parent.iterdir())

    cli = subprocess.run(
        [sys.executable, "-m", "pipeline", "select", "--params", json.dumps(select_params("pt")), "--supernet", str(truncated),
         "--data", str(tiny8_data), "--out", str(out)], capture_output=True, text=True,
    )
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1 and "truncated.pt" in cli.stderr


# ---------------------------------------------------------------- the papers' configuration


def test_papers_config_runs_darts_plus_pt_on_the_space_without_none_in_reference_mode():
    from conftest import REPO
    from pipeline.config import load_config, read_yaml, search_settings, selections_for

    load_config([REPO / "config" / "config.yaml", REPO / "config" / "demo.yaml"])  # valid (the demo has the data)
    config = read_yaml(REPO / "config" / "config.yaml")
    assert search_settings(config, "darts_1st_nonone")["space"] == "darts_nonone"  # darts-pt's s5
    assert config["search"]["methods"]["darts_1st_nonone"]["order"] == 1  # darts-pt searches 1st order
    assert selections_for(config, "darts_1st_nonone") == ["pt", "pt_mag"]
    reference = {"topology_rule": "reference", "schedule": "reference", "finetune_lr": "constant", "exclude_ops": None}
    assert {key: PT_OPTIONS[key]["default"] for key in reference} == reference
    for name in ("pt", "pt_mag"):
        assert {key: config["select"]["methods"][name][key] for key in reference} == reference
