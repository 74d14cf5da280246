import math

import pytest
import torch
import torch.nn.functional as F

from conftest import SEARCH_SETTINGS, build_method, random_batch
from pipeline.config import ConfigError
from pipeline.search.sgas import PRUNED, SGAS, UNDECIDED, edge_scores
from pipeline.select.magnitude import parse_magnitude


def test_edge_scores_match_the_criterion_by_hand():
    # ops: none, a, b, c; four edges, the last one already decided
    probs = torch.tensor(
        [
            [0.1, 0.3, 0.3, 0.3],  # important, but undecided between its ops
            [0.1, 0.8, 0.05, 0.05],  # important and certain
            [0.7, 0.1, 0.1, 0.1],  # mostly none
            [0.0, 1.0, 0.0, 0.0],  # decided
        ]
    )
    none_mask = torch.tensor([[True, False, False, False]] * 4)
    undecided = torch.tensor([True, True, True, False])

    def entropy(ps):
        total = sum(ps)
        return -sum(p / total * math.log(p / total) for p in ps if p > 0) / math.log(3)

    importance = [0.9, 0.9, 0.3, 1.0]
    certainty = [1 - entropy([0.3, 0.3, 0.3]), 1 - entropy([0.8, 0.05, 0.05]), 1 - entropy([0.1, 0.1, 0.1]), 1.0]

    def norm(values, scope):
        low, high = min(values[i] for i in scope), max(values[i] for i in scope)
        return [(v - low) / (high - low) for v in values]

    for over, scope in (("all", range(4)), ("undecided", range(3))):
        want = [a * b for a, b in zip(norm(importance, scope), norm(certainty, scope))][:3]
        got = edge_scores(probs, none_mask, undecided, over)
        assert got[:3].tolist() == pytest.approx(want, abs=1e-6)
        assert got[3] == -math.inf
        assert int(got.argmax()) == 1


def test_decision_schedule_scales_with_the_epochs():
    _, _, method = build_method("sgas")
    assert method.total_rounds == 8
    assert method.decision_epochs(50) == [9, 14, 19, 24, 29, 34, 39, 44]  # the reference's
    short = method.decision_epochs(3)
    assert len(short) == 8 and max(short) == 2 and min(short) >= 1


def test_decisions_fix_the_best_edge_prune_full_nodes_and_grow_the_batch():
    space, _, method = build_method("sgas")
    ops = space.primitives
    with torch.no_grad():
        for a in method.alpha.values():
            a.zero_()
            a[0, ops.index("sep_conv_3x3")] = 5.0  # edge 0 -> 2: sharp and far from none
            a[1, ops.index("dil_conv_3x3")] = 4.0  # edge 1 -> 2: next best
    method.on_epoch_end(9, 50)
    assert method.batch_size(64) == 72
    for kind in ("normal", "reduce"):
        assert method.selected[kind][0] == ops.index("sep_conv_3x3")
        assert (method.selected[kind][1:] == UNDECIDED).all()
    method.on_epoch_end(14, 50)
    assert method.batch_size(64) == 80
    for kind in ("normal", "reduce"):
        assert method.selected[kind][1] == ops.index("dil_conv_3x3")  # node 2 now has its two inputs
    method.on_epoch_end(15, 50)  # not a decision epoch
    assert method.batch_size(64) == 80


def test_decided_edges_stay_frozen_while_the_rest_trains():
    _, model, method = build_method("sgas", arch_lr=0.05)
    w_opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    batch_w, batch_a = random_batch(0), random_batch(1)
    for _ in range(2):
        method.train_step(batch_w, batch_a, w_opt, 0.025)
    method.on_epoch_end(9, 50)
    method.on_epoch_end(14, 50)
    method.on_epoch_end(19, 50)
    alpha_before = {k: a.detach().clone() for k, a in method.alpha.items()}
    weights_before = method.eval_weights()
    for step in range(3):
        method.train_step(random_batch(2 + step), random_batch(10 + step), w_opt, 0.025)
    weights_after = method.eval_weights()
    for kind, selected in method.selected.items():
        frozen = selected != UNDECIDED
        assert frozen.sum() >= 3
        assert torch.equal(method.alpha[kind][frozen], alpha_before[kind][frozen])
        assert torch.equal(weights_after[kind][frozen], weights_before[kind][frozen])
        assert not torch.allclose(method.alpha[kind][~frozen], alpha_before[kind][~frozen])
        decided = selected >= 0
        assert torch.equal(weights_after[kind][decided].sum(-1), torch.ones(int(decided.sum())))
        assert weights_after[kind][selected == PRUNED].abs().sum() == 0


def test_after_all_rounds_magnitude_selection_returns_the_decided_edges():
    space, model, method = build_method("sgas")
    with torch.no_grad():
        for a in method.alpha.values():
            a.normal_(0, 1)
    method.on_epoch_end(2, 3)  # the last epoch: every remaining round
    method.on_epoch_end(1, 3)
    edges = space.edges()
    cells = parse_magnitude(space, method.eval_weights())
    for kind, selected in method.selected.items():
        assert (selected != UNDECIDED).all()
        decided = [
            {"node": edges[e][0], "input": edges[e][1], "op": space.primitives[int(selected[e])]}
            for e in range(len(edges))
            if selected[e] >= 0
        ]
        assert len(decided) == 8 and int((selected == PRUNED).sum()) == len(edges) - 8
        assert sorted(cells[kind]["edges"], key=str) == sorted(decided, key=str)


def test_decided_edge_computes_its_op_with_weight_one():
    space, model, method = build_method("sgas")
    method.selected["normal"][0] = space.primitives.index("skip_connect")
    method._refresh_fixed()
    w = method.weights()["normal"]
    assert w[0].tolist() == [1.0 if op == "skip_connect" else 0.0 for op in space.primitives]
    torch.testing.assert_close(w[1:], F.softmax(method.alpha["normal"].detach()[1:], dim=-1))


def test_spaces_without_a_fixed_number_of_inputs_are_a_config_error():
    SGAS.check_settings(dict(SEARCH_SETTINGS))
    with pytest.raises(ConfigError, match="config key 'search.settings.space': search method sgas needs a cell space"):
        SGAS.check_settings({**SEARCH_SETTINGS, "space": "nb201"})


def test_sgas_pt_keeps_the_op_whose_removal_hurts_validation_most():
    """SGAS+PT (darts-pt): same edge order as SGAS, but the op comes from perturbation. Skip
    has the largest alpha on the decided edge; the validation says the conv matters."""
    decided = {}
    for op_selection in ("magnitude", "pt"):
        built = {}
        seen = []

        def validate(weights, built=built, seen=seen):
            ops = built["space"].primitives
            before = built["method"].eval_weights()
            changed = (weights["normal"] != before["normal"]).nonzero().tolist()
            assert len(changed) == 1 and weights["normal"][tuple(changed[0])] == 0  # one op removed, the rest kept
            assert torch.equal(weights["reduce"], before["reduce"])
            seen.append(tuple(changed[0]))
            return 1.0, 20.0 if changed[0] == [0, ops.index("sep_conv_3x3")] else 60.0

        space, _, method = build_method("sgas", validate=validate, op_selection=op_selection)
        built.update(space=space, method=method)
        ops = space.primitives
        with torch.no_grad():
            method.alpha["normal"].zero_()
            method.alpha["normal"][0, ops.index("skip_connect")] = 3.0
            method.alpha["normal"][0, ops.index("sep_conv_3x3")] = 2.0
        decided[op_selection] = method.decide("normal")
        if op_selection == "pt":
            assert seen == [(0, k) for k, name in enumerate(ops) if name != "none"]  # every non-none op of that edge
    assert decided["magnitude"] == (0, ops.index("skip_connect"))
    assert decided["pt"] == (0, ops.index("sep_conv_3x3"))
