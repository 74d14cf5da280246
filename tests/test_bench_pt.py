"""bench/darts_pt_reference.py re-implements darts-pt's selection procedure; the speed
comparison of bench/select_pt.py means something only if it decides as darts-pt does and
as our ``pt`` in its reference mode does on the same states."""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.select.base import DecisionLog
from pipeline.select.pt import PerturbationSelection
from pipeline.select.supernet_eval import ProjectedSupernet
from pipeline.spaces import get_space
from test_select_pt import CPU, AccuracyTable, HarmfulEdge, TensorLoader, ThreeNodeSpace, pt_options

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import darts_pt_reference as ref  # noqa: E402


class ToyData:
    """Fixed scoring passes over a tensor loader, nothing to tune on."""

    def __init__(self, loader):
        self.loader = loader

    def scoring_pass(self):
        return self.loader.epoch(0)


def table_reference():
    space = ThreeNodeSpace("three_nodes", ("skip_connect", "sep_conv_3x3"))
    x = torch.arange(100, dtype=torch.float).view(-1, 1)
    data = ToyData(TensorLoader(x, torch.ones(100, dtype=torch.long), 100))
    alpha = {kind: torch.zeros(9, 2, requires_grad=True) for kind in space.cell_types}
    np.random.seed(0)
    return space, ref.ReferencePT(space, AccuracyTable(), alpha, data, tune=False, log_passes=False)


def test_reference_keeps_the_edges_whose_single_removal_hurts_most_and_rescores_every_round():
    space, reference = table_reference()
    reference.run()
    node4 = [d for d in reference.decisions if d["what"] == "edge" and d["kind"] == "normal" and d["node"] == 4][0]
    assert sorted(space.edges()[e][1] for e in node4["kept"]) == [0, 1]  # as our topology_rule: reference
    # darts-pt scores again each round with only the candidate removed: the same scores
    assert [sorted(r.values()) for r in node4["rounds"]] == [[50, 60, 80, 85], [50, 60, 80]]


def test_reference_decides_at_the_same_epochs_as_our_reference_schedule():
    space, reference = table_reference()
    reference.run()
    ours = PerturbationSelection(space, ProjectedSupernet(AccuracyTable(), space), None, pt_options(), 0, CPU, "none", DecisionLog(), "pt",
                                 current_weights=lambda: None)
    assert reference.tune_epochs() == 51 and reference.decision_epochs == list(range(0, 51, 5))  # 9 edges, 2 nodes
    assert ours.decision_epochs() == reference.decision_epochs and sum(ours.tuning_plan()) == 51

    nb201 = get_space("nb201")
    alpha = {"cell": torch.zeros(6, 5, requires_grad=True)}
    x = torch.randn(200, 2)
    data = ToyData(TensorLoader(x, (x[:, 0] > 0).long(), 200))
    nb_ref = ref.ReferencePT(nb201, HarmfulEdge(), alpha, data, tune=False, log_passes=False)
    nb_ref.run()
    nb_ours = PerturbationSelection(nb201, ProjectedSupernet(HarmfulEdge(), nb201), None, pt_options(), 0, CPU, "none", DecisionLog(), "pt",
                                    current_weights=lambda: None)
    assert nb_ref.decision_epochs == [0, 5, 10, 15, 20, 24] == nb_ours.decision_epochs()
    assert nb_ref.tune_epochs() == 25 == sum(nb_ours.tuning_plan())
    assert {d["op"] for d in nb_ref.decisions if d["edge"] == 0} == {0}  # 'none', as ours keeps it


@pytest.fixture(scope="module")
def nonone_state():
    torch.manual_seed(0)
    space = get_space("darts_nonone")
    model = space.build_supernet(2, 3, 10)
    alpha = {kind: torch.randn(14, 7) for kind in space.cell_types}
    images = torch.randint(0, 256, (80, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 10, (80,))
    return space, model, alpha, images, labels


def run_reference(state, scoring, seed=0, pick_like_ours=True, crit="acc"):
    space, model, alpha, images, labels = state
    data = ref.ReferenceData(images, labels, torch.arange(40), torch.arange(40, 80), [0.5] * 3, [0.25] * 3, scoring=scoring)
    kinds = list(space.cell_types)
    pick = (lambda step, kind, choices: int(np.random.default_rng([seed, step, kinds.index(kind)]).choice(choices))) if pick_like_ours else None
    leaves = {k: a.clone().requires_grad_(True) for k, a in alpha.items()}
    reference = ref.ReferencePT(space, copy.deepcopy(model), leaves, data, crit=crit, tune=False, log_passes=False, pick=pick)
    reference.run()
    return reference


def run_ours(state, seed=0, crit="acc"):
    space, model, alpha, images, labels = state
    from pipeline.training.data import BatchLoader

    loader = BatchLoader(images, labels, torch.arange(40, 80), 512, mean=[0.5] * 3, std=[0.25] * 3)
    weights = {k: a.softmax(-1) for k, a in alpha.items()}
    record = DecisionLog()
    selection = PerturbationSelection(space, ProjectedSupernet(copy.deepcopy(model), space), loader, pt_options(eval_bn="batch", bn_batch_size=64, criterion=crit),
                                      seed, CPU, "none", record, "pt", current_weights=lambda: weights)
    return selection.run(), record


@pytest.mark.slow
@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_reference_and_our_pt_make_the_same_decisions_on_the_same_states_and_data(nonone_state, crit):
    space = nonone_state[0]
    reference = run_reference(nonone_state, "fixed", crit=crit)
    cells, record = run_ours(nonone_state, crit=crit)
    names = space.primitives
    assert [(d["kind"], d["edge"]) for d in reference.decisions if d["what"] == "op"] == [
        (d["cell_type"], d["edge"]) for d in record.decisions if d["kind"] == "op"
    ]
    for kind in space.cell_types:
        theirs = {key: names[op] for key, op in reference.cells_ops()[kind].items()}
        assert {(e["node"], e["input"]): e["op"] for e in cells[kind]["edges"]} == theirs
    # the scores themselves: accuracy with each op removed, decision by decision
    ours_scores = [[c["score"] for c in record.candidates if c["decision"] == i] for i, d in enumerate(record.decisions) if d["kind"] == "op"]
    theirs_scores = [d["scores"] for d in reference.decisions if d["what"] == "op"]
    assert len(ours_scores) == 28 and [len(s) for s in ours_scores] == [7] * 28
    def flat(scores):
        return [x for row in scores for x in row]
    assert flat(ours_scores) == (flat(theirs_scores) if crit == "acc" else pytest.approx(flat(theirs_scores), rel=1e-5))
    # topology: ours scores each edge of a node once, the reference every round; first rounds agree
    ours_edges = [[c["score"] for c in record.candidates if c["decision"] == i] for i, d in enumerate(record.decisions) if d["kind"] == "edge"]
    edge_rows = [i for i, d in enumerate(record.decisions) if d["kind"] == "edge"]
    first_of_node = {}
    for position, i in enumerate(edge_rows):
        first_of_node.setdefault((record.decisions[i]["cell_type"], record.decisions[i]["node"]), position)
    firsts = [ours_edges[position] for position in sorted(first_of_node.values())]
    theirs_first = [list(d["rounds"][0].values()) for d in reference.decisions if d["what"] == "edge"]
    assert flat(firsts) == (flat(theirs_first) if crit == "acc" else pytest.approx(flat(theirs_first), rel=1e-5))


def test_darts_pt_scoring_data_reshuffles_and_augments_every_pass(nonone_state):
    space, model, alpha, images, labels = nonone_state
    data = ref.ReferenceData(images, labels, torch.arange(40), torch.arange(40, 80), [0.5] * 3, [0.25] * 3, scoring="darts-pt")
    first, second = (torch.cat([x for x, _ in data.scoring_pass()]) for _ in range(2))
    assert first.shape == second.shape == (40, 3, 8, 8) and not torch.equal(first, second)
    fixed = ref.ReferenceData(images, labels, torch.arange(40), torch.arange(40, 80), [0.5] * 3, [0.25] * 3, scoring="fixed")
    assert torch.equal(*(torch.cat([x for x, _ in fixed.scoring_pass()]) for _ in range(2)))


@pytest.mark.slow
def test_reference_tuning_keeps_the_rate_and_trains_alpha_of_undecided_edges(nonone_state):
    space, model, alpha, images, labels = nonone_state
    data = ref.ReferenceData(images, labels, torch.arange(40), torch.arange(40, 80), [0.5] * 3, [0.25] * 3, scoring="fixed", batch_size=16)
    leaves = {k: a.clone().requires_grad_(True) for k, a in alpha.items()}
    reference = ref.ReferencePT(space, copy.deepcopy(model), leaves, data, interval=1, log_passes=True, learning_rate=0.025)
    before = {k: a.detach().clone() for k, a in leaves.items()}
    reference.project_op("normal")
    reference.tune_epoch()
    assert reference.w_optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert all(not torch.equal(before[k], leaves[k].detach()) for k in leaves)
    w = reference.projected("normal")
    decided = [e for e in range(14) if not reference.undecided["normal"][e]][0]
    assert w[decided].tolist() == reference.proj_weights["normal"][decided].tolist()  # one-hot whatever alpha does


@pytest.mark.parametrize("fraction, prune", [(0.5, False), (1.0, True)])
def test_bench_times_both_sides_on_the_same_projected_state(nonone_state, fraction, prune):
    import select_pt

    space, model, alpha, images, labels = nonone_state
    net = ProjectedSupernet(model, space)
    select_pt.make_state(space, net, fraction, prune, np.random.default_rng(1))
    leaves = {k: a.clone().requires_grad_(True) for k, a in alpha.items()}
    reference = ref.ReferencePT(space, model, leaves, None)
    select_pt.mirror_state(reference, net)
    ours = net.project({k: a.softmax(-1) for k, a in alpha.items()})
    for kind in space.cell_types:
        torch.testing.assert_close(reference.projected(kind).detach(), ours[kind])
        assert (ours[kind].sum(1) == 0).sum() == (6 if prune else 0)  # dropped edges: 14 - 8
