import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, search_params
from pipeline import artifacts
from pipeline.config import ConfigError, load_config, selections_for
from pipeline.search import METHODS
from pipeline.search.run import run_search
from pipeline.search.sampling import rebar_categorical, rebar_surrogate, reinforce_surrogate
from pipeline.search.unas import branch_overlap, inputs_key, ops_key
from pipeline.select.unas import parse_branches
from pipeline.spaces import get_space

SPACE = get_space("unas")
OPS = SPACE.primitives


def make_unas(**options):
    torch.manual_seed(0)
    model = SPACE.build_supernet(2, 3, 10)
    params = search_params(options={"algorithm": "unas", **options}, settings={"space": "unas"})
    method = METHODS.get("unas")(SPACE, model, params["options"], params["settings"], torch.device("cpu"), "none")
    return model, method


def one_hot(index, size):
    return F.one_hot(torch.tensor(index), size).float()


def test_arch_penalty_is_one_exactly_when_both_branches_pick_the_same_pair():
    def overlap(pair_a, pair_b):
        inputs = torch.stack([one_hot(pair_a[0], 4), one_hot(pair_b[0], 4)])
        ops = torch.stack([one_hot(pair_a[1], 7), one_hot(pair_b[1], 7)])
        return branch_overlap(inputs, ops).item()

    assert overlap((2, 3), (2, 3)) == 1.0
    assert overlap((2, 3), (2, 4)) == 0.0  # same input, other op
    assert overlap((1, 3), (2, 3)) == 0.0  # same op, other input
    assert overlap((0, 0), (3, 6)) == 0.0
    # On drawn architectures: the penalty counts the nodes whose hard weights hold a 2.
    _, method = make_unas()
    for p in method.alpha.values():
        p.data.normal_(0, 2.0)  # peaked logits make coinciding branches frequent
    sample = method.sample(400)
    doubles = sum((w == 2).flatten(1).sum(1) for w in sample.hard.values())
    assert torch.equal(sample.overlap_hard, doubles.float())
    assert 0 < doubles.sum() < 400 * 8


def test_sampled_weights_place_two_branches_per_node():
    _, method = make_unas()
    sample = method.sample(5)
    edges = SPACE.edges()
    for kind in SPACE.cell_types:
        for weights in (sample.hard[kind], sample.relaxed[kind], method.eval_weights()[kind][None]):
            for node in range(2, 6):
                ids = [e for e, (target, _) in enumerate(edges) if target == node]
                torch.testing.assert_close(weights[:, ids].sum((1, 2)), torch.full((len(weights),), 2.0))
        hard = sample.hard[kind]
        assert set(hard.unique().tolist()) <= {0.0, 1.0, 2.0}
        assert ((hard > 0).flatten(1).sum(1) <= 8).all()  # at most 2 (input, op) per node: cheap to run
    # the expected weights at the initial (zero) logits are uniform over inputs and ops
    torch.testing.assert_close(method.eval_weights()["normal"][0], torch.full((7,), 2 / (2 * 7)))


def _toy_objective(w1, w2, c):
    """A discrete objective of two categorical choices, nonlinear in their (relaxed) one-hots."""
    return (w1 @ c[0]) * (w2 @ c[1]) + torch.sin(3 * (w1 @ c[2])) + (w2 @ c[3]) ** 2


def _gradient_estimate(estimator, logits, c, temperature, n=5000, chunks=40):
    grads = []
    for _ in range(chunks):
        params = [p.detach().clone().requires_grad_(True) for p in logits]
        s1, s2 = (rebar_categorical(p, temperature, (n,)) for p in params)
        f_hard = _toy_objective(s1.hard, s2.hard, c)
        log_prob = s1.log_prob + s2.log_prob
        if estimator == "rebar":
            surrogate = rebar_surrogate(log_prob, f_hard, _toy_objective(s1.relaxed, s2.relaxed, c))
        elif estimator == "reinforce":
            surrogate = reinforce_surrogate(log_prob, f_hard, baseline=0.7)
        else:  # the plain Gumbel-softmax control variate, without REBAR's conditional correction
            soft = [_plain_relaxation(p, s, temperature) for s, p in zip((s1, s2), params)]
            surrogate = rebar_surrogate(log_prob, f_hard, _toy_objective(*soft, c))
        grads.append(torch.cat(torch.autograd.grad(surrogate, params)))
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / math.sqrt(chunks)


def _plain_relaxation(logits, sample, temperature):
    """softmax((log q + G) / t) for the sample's own noise G, differentiated through log q only."""
    z_over_t = sample.relaxed.detach().log()  # z / t up to a per-row constant
    log_q = logits.log_softmax(-1)
    return F.softmax(z_over_t + (log_q - log_q.detach()) / temperature, -1)


def test_rebar_is_unbiased_on_a_toy_discrete_objective():
    torch.manual_seed(0)
    logits = [torch.tensor([0.4, -0.2, 1.0], dtype=torch.float64), torch.tensor([-0.5, 0.3, 0.0, 0.8], dtype=torch.float64)]
    c = [torch.tensor(v, dtype=torch.float64) for v in ([1.0, -2.0, 0.5], [0.3, 1.5, -1.0, 2.0], [2.0, 0.0, -1.0], [1.0, -1.0, 0.5, 0.0])]
    # Exact: d/dlogits sum_{b1, b2} q1(b1) q2(b2) f(b1, b2), by enumeration.
    exact_params = [p.clone().requires_grad_(True) for p in logits]
    q1, q2 = (F.softmax(p, -1) for p in exact_params)
    expected = sum(
        q1[i] * q2[j] * _toy_objective(torch.eye(3, dtype=torch.float64)[i], torch.eye(4, dtype=torch.float64)[j], c)
        for i, j in itertools.product(range(3), range(4))
    )
    exact = torch.cat(torch.autograd.grad(expected, exact_params))

    for estimator in ("rebar", "reinforce"):
        mean, se = _gradient_estimate(estimator, logits, c, temperature=0.4)
        assert ((mean - exact).abs() <= 4 * se + 1e-3).all(), (estimator, mean, exact, se)
    # A masked (-inf) category is never drawn, and the others stay unbiased with finite gradients.
    masked = [torch.cat([p, torch.tensor([float("-inf")], dtype=torch.float64)]) for p in logits]
    c_masked = [torch.cat([v, torch.tensor([100.0], dtype=torch.float64)]) for v in c]
    mean, se = _gradient_estimate("rebar", masked, c_masked, temperature=0.4, chunks=10)
    keep = torch.tensor([True, True, True, False, True, True, True, True, False])
    assert torch.isfinite(mean).all() and (mean[~keep] == 0).all()
    assert ((mean[keep] - exact).abs() <= 4 * se[keep] + 1e-3).all()
    # The test can fail: the relaxation without the conditional correction is biased.
    mean, se = _gradient_estimate("plain", logits, c, temperature=0.4)
    assert ((mean - exact).abs() > 4 * se + 1e-3).any()


def test_alpha_frozen_during_warmup_then_trained_with_either_estimator():
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    xv, yv = torch.randn(5, 3, 8, 8), torch.randint(0, 10, (5,))  # a shorter last batch pairs 5
    for estimator in ("rebar", "reinforce"):
        model, method = make_unas(estimator=estimator, warmup_epochs=1)
        w_opt, lr_min = method.make_weight_optimizer(model.parameters())
        assert isinstance(w_opt, torch.optim.Adam) and w_opt.defaults["lr"] == 6e-4 and lr_min == 1e-4
        start = {k: v.detach().clone() for k, v in method.alpha.items()}
        weight = next(model.parameters()).detach().clone()
        method.on_epoch_start(0, 4)
        method.train_step((x, y), (xv, yv), w_opt, 6e-4)
        assert all(torch.equal(v, start[k]) for k, v in method.alpha.items())
        assert not torch.equal(next(model.parameters()), weight)  # the weights train meanwhile
        method.on_epoch_start(1, 4)
        assert method.arch_optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 + 0.5 * 1.7e-3 * (1 + math.cos(math.pi / 4)))
        method.train_step((x, y), (xv, yv), w_opt, 6e-4)
        changed = [k for k, v in method.alpha.items() if not torch.equal(v, start[k])]
        assert ops_key("normal") in changed and inputs_key("reduce", 5) in changed
        assert (method.baseline is not None) == (estimator == "reinforce")


@pytest.mark.slow
def test_unas_search_runs_with_adam_weights(tiny_data, tmp_path):
    params = search_params(options={"algorithm": "unas", "warmup_epochs": 1, "per_sample": False}, settings={"space": "unas", "epochs": 2, "batch_size": 20})
    checkpoint = artifacts.load_checkpoint(run_search(params, tiny_data, tmp_path, threads=1), "supernet")
    assert "exp_avg" in next(iter(checkpoint["optimizer"]["state"].values()))  # Adam, not SGD
    metrics = artifacts.read_metrics(tmp_path / "metrics.h5")
    assert metrics.epochs["lr"].tolist() == pytest.approx([6e-4, 3.5e-4])
    ops = metrics.epochs["alpha_normal_ops"]
    assert ops.shape == (2, 4, 2, 7) and np.all(ops[0] == 0) and not np.all(ops[1] == 0)  # frozen, then trained
    inputs = metrics.epochs["alpha_reduce_inputs"]
    assert inputs.shape == (2, 4, 2, 5) and np.isnan(inputs[1, 0, :, 2:]).all() and not np.isnan(inputs[1, 3]).any()
    torch.testing.assert_close(checkpoint["arch_weights"]["normal"].sum(-1)[:2].sum(), torch.tensor(2.0))
    cells = parse_branches(SPACE, checkpoint["method"]["alpha"])
    assert [len([e for e in cells[k]["edges"] if e["node"] == n]) for k in SPACE.cell_types for n in range(2, 6)] == [2] * 8


def test_unas_derivation_takes_each_branch_argmax():
    logits = {}
    for kind in SPACE.cell_types:
        logits[ops_key(kind)] = torch.zeros(4, 2, 7)
        for node in range(2, 6):
            logits[inputs_key(kind, node)] = torch.zeros(2, node)
    # normal node 3: branch 0 -> (input 2, dil_conv_3x3), branch 1 -> (input 0, sep_conv_5x5)
    logits[inputs_key("normal", 3)][0, 2] = 3.0
    logits[inputs_key("normal", 3)][1, 0] = 1.0
    logits[ops_key("normal")][1, 0, OPS.index("dil_conv_3x3")] = 2.0
    logits[ops_key("normal")][1, 1, OPS.index("sep_conv_5x5")] = 2.0
    # normal node 4: both branches prefer (input 1, skip); the second falls back to its next pair
    logits[inputs_key("normal", 4)][:, 1] = 4.0
    logits[inputs_key("normal", 4)][1, 3] = 3.0
    logits[ops_key("normal")][2, :, OPS.index("skip_connect")] = 2.0
    from pipeline.select.base import DecisionLog

    log = DecisionLog()
    cells = parse_branches(SPACE, logits, log)
    edges = cells["normal"]["edges"]
    branch = [d for d in log.decisions if d["cell_type"] == "normal" and d["node"] == 4]  # one decision per branch
    assert [(d["input"], d["choice"]) for d in branch] == [(1, "skip_connect"), (3, "skip_connect")]
    second = [c for c in log.candidates if c["decision"] == log.decisions.index(branch[1])]
    assert len(second) == 4 * len(OPS) and max(second, key=lambda c: c["score"])["input"] == 3  # (1, skip) is taken
    assert edges[2:4] == [{"node": 3, "input": 0, "op": "sep_conv_5x5"}, {"node": 3, "input": 2, "op": "dil_conv_3x3"}]
    assert edges[4:6] == [{"node": 4, "input": 1, "op": "skip_connect"}, {"node": 4, "input": 3, "op": "skip_connect"}]
    assert cells["normal"]["concat"] == [2, 3, 4, 5]
    assert SPACE.from_text(SPACE.to_text(cells)) == cells  # two per node: the DARTS pair form
    model = SPACE.build_network(cells, 4, 3, 10, auxiliary=False)
    assert model(torch.zeros(1, 3, 16, 16))[0].shape == (1, 10)
    # the same input with two different ops is a valid cell
    logits[ops_key("normal")][2, 1, OPS.index("max_pool_3x3")] = 5.0
    logits[inputs_key("normal", 4)][1, 3] = 0.0
    cells = parse_branches(SPACE, logits)
    assert cells["normal"]["edges"][4:6] == [{"node": 4, "input": 1, "op": "skip_connect"}, {"node": 4, "input": 1, "op": "max_pool_3x3"}]
    SPACE.build_network(cells, 4, 3, 10, auxiliary=False)


def test_unas_selection_refuses_other_supernets(tmp_path):
    supernet = tmp_path / "supernet.pt"
    darts = search_params()
    artifacts.save_checkpoint(supernet, "supernet", {
        "epoch": 1, "model": {}, "optimizer": {}, "scheduler": {}, "method": {}, "history": {},
        "arch_weights": {k: torch.rand(14, 8) for k in ("normal", "reduce")},
        "provenance": {"params": darts, "search_seconds": 1.0, "device": "cpu"},
    })
    params = {"dataset": "cifar10", "seed": 0, "method": "unas", "options": {"algorithm": "unas"}, "runtime": darts["runtime"]}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "select", "--params", json.dumps(params), "--supernet", str(supernet),
         "--data", str(tmp_path / "unused.pt"), "--out", str(tmp_path / "g.json")], capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "selection 'unas' cannot read a 'darts' supernet" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g.json").exists()


def test_selections_skip_supernets_they_cannot_read(tmp_path):
    overlay = tmp_path / "runs.yaml"
    base = [REPO / "config" / "config.yaml", REPO / "config" / "demo.yaml"]
    # (methods the demo's select.run_for does not name, so select.run applies to them)
    overlay.write_text(
        "search: {run: [darts_2nd, snas_b, unas_b], methods: {snas_b: {algorithm: snas}, unas_b: {algorithm: unas, settings: {space: unas}}}}\n"
        "select: {run: [magnitude, snas, unas]}\n"
    )
    config = load_config([*base, overlay])
    assert selections_for(config, "darts_2nd") == ["magnitude", "snas"]
    assert selections_for(config, "snas_b") == ["magnitude", "snas"]
    assert selections_for(config, "unas_b") == ["magnitude", "snas", "unas"]
    overlay.write_text("search: {run: [darts_2nd]}\nselect: {run: [unas]}\n")
    with pytest.raises(ConfigError, match="config key 'select.run': no selection in it can read the supernets of search 'darts_2nd'"):
        load_config([*base, overlay])
    overlay.write_text("select: {run_for: {darts_2nd: [magnitude, unas]}}\n")
    with pytest.raises(ConfigError, match=r"config key 'select.run_for.darts_2nd\[1\]': selection 'unas' cannot read"):
        load_config([*base, overlay])
