import math

import numpy as np
import pytest
import torch

from conftest import search_params
from pipeline import artifacts
from pipeline.nets.ops import OPS as OP_FACTORIES
from pipeline.search import METHODS
from pipeline.search.run import run_search
from pipeline.search.sampling import concrete_log_density, gumbel_softmax, linear_temperature
from pipeline.search.snas import cost_surrogate, edge_cost, op_costs
from pipeline.select.base import SelectionError
from pipeline.select.snas import parse_argmax
from pipeline.spaces import get_space

SPACE = get_space("darts")
OPS = SPACE.primitives


def test_gumbel_softmax_argmax_frequencies_match_softmax_alpha():
    torch.manual_seed(0)
    alpha = torch.tensor([1.5, 0.0, -1.0, 0.5, -3.0])
    p = torch.softmax(alpha, -1)
    for temperature in (1.0, 0.03):
        z, log_z = gumbel_softmax(alpha, temperature, (100_000,))
        torch.testing.assert_close(z.sum(-1), torch.ones(100_000))
        torch.testing.assert_close(log_z.exp(), z)
        freq = torch.bincount(z.argmax(-1), minlength=5).double() / len(z)
        se = (p * (1 - p) / len(z)).sqrt().double()
        assert ((freq - p.double()).abs() < 4 * se + 1e-4).all(), (freq, p)
    # a low temperature makes the samples nearly one-hot, a high one does not
    assert gumbel_softmax(alpha, 0.03, (1000,))[0].max(-1).values.median() > 0.99
    assert gumbel_softmax(alpha, 1.0, (1000,))[0].max(-1).values.median() < 0.9


def test_temperature_schedule_gives_configured_values():
    space = get_space("darts")
    model = space.build_supernet(2, 3, 10)
    options = search_params(options={"algorithm": "snas", "temperature_start": 1.0, "temperature_end": 0.03})["options"]
    method = METHODS.get("snas")(space, model, options, {}, torch.device("cpu"), "none")
    got = []
    for epoch in (0, 75, 149):
        method.on_epoch_start(epoch, 150)
        got.append(method.temperature)
    assert got == pytest.approx([1.0, 1.0 - 0.97 * 75 / 149, 0.03])
    assert linear_temperature(5, 11, 1.0, 0.0) == pytest.approx(0.5)
    assert method.state_dict()["temperature"] == pytest.approx(0.03)


def test_concrete_log_density_integrates_to_one():
    alpha = torch.tensor([0.7, -0.4], dtype=torch.float64)
    s = torch.linspace(-80, 80, 200_001, dtype=torch.float64)  # x = sigmoid(s): smooth at the ends
    log_x = torch.stack([torch.nn.functional.logsigmoid(s), torch.nn.functional.logsigmoid(-s)], -1)
    for t in (0.5, 1.0, 2.0):
        density = concrete_log_density(alpha, log_x, t).exp() * log_x.sum(-1).exp()  # * dx/ds
        assert torch.trapezoid(density, s).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.trapezoid(concrete_log_density(alpha, log_x, 1.0).exp(), s).item() != pytest.approx(1.0, abs=0.1)


def test_per_op_cost_equals_hand_computed_values():
    # 3 cells (normal, reduce, reduce) at C=4 on 8x8 images: cell 0 sees 4 x 8x8, cell 1 8 x 8x8.
    model = SPACE.build_supernet(channels=4, layers=3, num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    costs = op_costs(model, (3, 8, 8))
    assert costs["normal"].shape == (1, 14, 8, 3) and costs["reduce"].shape == (2, 14, 8, 3)
    assert torch.equal(torch.get_rng_state(), rng)  # measuring draws nothing
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nor moves BN statistics

    def cost(kind, cell, edge, op):
        return costs[kind][cell, edge, OPS.index(op)].tolist()

    # Normal cell, edge 0 (input 0 -> node 2), stride 1, C=4, H=W=8 (HW=64):
    # sep_conv_3x3 = 2 x (depthwise 3x3: 36 params, pointwise: 16). FLOPs = HW * params.
    # MAC per conv = in + out elements + params: 2 x ((256+256+36) + (256+256+16)) = 2152.
    assert cost("normal", 0, 0, "sep_conv_3x3") == [104, 104 * 64, 2152]
    assert cost("normal", 0, 0, "dil_conv_3x3") == [52, 52 * 64, 1076]
    assert cost("normal", 0, 0, "max_pool_3x3") == [0, 64 * 9 * 4, 512]  # one channel per window
    assert cost("normal", 0, 0, "avg_pool_3x3") == [0, 2304, 512]
    assert cost("normal", 0, 0, "skip_connect") == [0, 0, 512]
    assert cost("normal", 0, 0, "none") == [0, 0, 0]
    # Reduce cell 1, edge 0, stride 2, C=8: 8x8 -> 4x4. The first depthwise conv reads 512
    # and writes 128 elements; the rest run at 4x4: MAC = (512+128+72) + 320 + 328 + 320.
    assert cost("reduce", 0, 0, "sep_conv_3x3") == [272, 272 * 16, 1680]
    assert cost("reduce", 0, 0, "max_pool_3x3") == [0, 16 * 9 * 8, 512 + 128]
    # skip = FactorizedReduce: two 1x1 stride-2 convs 8 -> 4 channels, the second on the
    # input shifted by one pixel (7x7): MAC (512 + 64 + 32) + (392 + 64 + 32).
    assert cost("reduce", 0, 0, "skip_connect") == [64, 64 * 16, 1096]
    # Edge 4 of the reduce cell (node 2 -> node 3, stride 1) is at 4x4.
    assert cost("reduce", 0, 4, "sep_conv_3x3") == [2 * (72 + 64), 272 * 16, 2 * ((128 + 128 + 72) + (128 + 128 + 64))]


def test_edge_cost_forms():
    costs = torch.tensor([[[[0.0, 0.0, 0.0], [10.0, 100.0, 1000.0]]], [[[0.0, 0.0, 0.0], [20.0, 300.0, 5000.0]]]])  # 2 cells, 1 edge, 2 ops
    w = torch.tensor([[0.25, 0.75]])
    log_cost = edge_cost(w, costs, "log", [1 / 3, 1 / 3, 1 / 3])
    want = sum(math.log(0.75 * v) for v in (10, 100, 1000, 20, 300, 5000)) / 3
    assert log_cost.item() == pytest.approx(want)
    # below 1 the log penalty is 0 (the reference's clean-up of 'none' and skip)
    assert edge_cost(torch.tensor([[1.0, 0.0]]), costs, "log", [1, 1, 1]).item() == 0.0
    linear = edge_cost(w, costs, "linear", [1.0, 0.0, 2.0])
    assert linear.item() == pytest.approx(0.75 * (10 + 2 * 1000 + 20 + 2 * 5000) * 1e-6)


def _estimate(estimator, alpha0, costs, temperature, n=20_000, chunks=20):
    grads = []
    for _ in range(chunks):
        alpha = alpha0.clone().requires_grad_(True)
        rows = alpha.expand(n, -1)  # n independent edges sharing alpha: the mean gradient
        z, log_z = gumbel_softmax(rows, temperature)
        surrogate = cost_surrogate(estimator, rows, z, log_z, temperature, lambda w: w @ costs)
        grads.append(torch.autograd.grad(surrogate, alpha)[0] / n)
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / math.sqrt(chunks)


def test_the_three_cost_estimators_agree_in_expectation():
    torch.manual_seed(0)
    alpha = torch.tensor([0.3, -0.5, 1.0, 0.0, -1.0], dtype=torch.float64)
    costs = torch.tensor([0.0, 1.0, 3.0, 0.5, 2.0], dtype=torch.float64)

    def close(a, b, atol=0.0):
        (ma, sa), (mb, sb) = a, b
        return bool(((ma - mb).abs() <= 4 * (sa**2 + sb**2).sqrt() + atol).all())

    # Reparameterization and the score function of the Concrete density both estimate
    # d E[C(Z)] at any temperature; the analytic gradient is d E[C(one-hot)], the t -> 0 limit.
    warm = {name: _estimate(name, alpha, costs, 1.0) for name in ("reparameterized", "policy_gradient", "analytic")}
    assert close(warm["reparameterized"], warm["policy_gradient"])
    assert not close(warm["reparameterized"], warm["analytic"], atol=0.02)
    cold = {name: _estimate(name, alpha, costs, 0.05) for name in ("reparameterized", "policy_gradient", "analytic")}
    assert close(cold["reparameterized"], cold["analytic"], atol=5e-3)
    assert close(cold["policy_gradient"], cold["analytic"], atol=5e-3)


def _weights(argmax: dict[int, str], default="sep_conv_3x3") -> torch.Tensor:
    w = torch.full((14, len(OPS)), 0.1)
    for e in range(14):
        w[e, OPS.index(argmax.get(e, default))] = 0.5
    return w


def test_child_network_drops_edges_whose_argmax_is_none(tmp_path):
    # Edges: node 2 <- 0, 1 (e0, e1); node 3 <- 0, 1, 2 (e2-e4); node 4 <- 0-3 (e5-e8); node 5 <- 0-4 (e9-e13).
    normal = _weights({0: "none", 1: "skip_connect", 3: "none", 5: "none", 6: "none", 7: "none", 8: "none"})
    reduce = _weights({e: "none" for e in range(14) if e not in (0, 11)} | {0: "max_pool_3x3"})
    cells = parse_argmax(SPACE, {"normal": normal, "reduce": reduce})
    edges = [(e["node"], e["input"], e["op"]) for e in cells["normal"]["edges"]]
    assert edges == [
        (2, 1, "skip_connect"),
        (3, 0, "sep_conv_3x3"), (3, 2, "sep_conv_3x3"),
        (5, 0, "sep_conv_3x3"), (5, 1, "sep_conv_3x3"), (5, 2, "sep_conv_3x3"), (5, 3, "sep_conv_3x3"),
    ]  # node 4 lost every input: dropped, and with it edge 4 -> 5
    assert cells["normal"]["concat"] == [2, 3, 5]
    # The reduce cell keeps 0 -> 2 and 2 -> 5 (edge 11), nothing else.
    assert [(e["node"], e["input"]) for e in cells["reduce"]["edges"]] == [(2, 0), (5, 2)]
    assert cells["reduce"]["concat"] == [2, 5]
    # The decision record: each edge's argmax over all ops, kept or dropped as in the cells.
    from pipeline.select.base import DecisionLog
    from pipeline.select.snas import record_argmax

    log = DecisionLog()
    record_argmax(log, SPACE, {"normal": normal, "reduce": reduce}, cells)
    normal_rows = [d for d in log.decisions if d["cell_type"] == "normal"]
    assert len(log.decisions) == 28 and [d["choice"] for d in normal_rows][:2] == ["none", "skip_connect"]
    assert [d["action"] for d in normal_rows] == ["drop", "keep", "keep", "drop", "keep"] + ["drop"] * 4 + ["keep"] * 4 + ["drop"]
    assert len([c for c in log.candidates if c["decision"] == 0]) == len(OPS)  # none among the candidates

    assert SPACE.from_text(SPACE.to_text(cells)) == cells  # the (op, input, node) form round-trips
    artifacts.write_genotype(tmp_path / "g.json", {"space": "darts", "cells": cells}, {"seed": 0})
    assert artifacts.read_genotype(tmp_path / "g.json")["cells"] == cells
    model = SPACE.build_network(cells, 4, 3, 10, auxiliary=False)
    assert [len(cell.ops) for cell in model.cells] == [7, 2, 2]
    assert model.cells[0].multiplier == 3
    logits, _ = model(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10)

    all_none = _weights({}, default="none")
    with pytest.raises(SelectionError, match="every edge of the normal cell"):
        parse_argmax(SPACE, {"normal": all_none, "reduce": reduce})


@pytest.mark.slow
def test_cost_pushes_alpha_towards_cheap_ops():
    """With the cost dominating, each estimator moves probability to 'none' (free)."""
    for estimator in ("reparameterized", "analytic", "policy_gradient"):
        torch.manual_seed(0)
        model = SPACE.build_supernet(2, 3, 10)
        options = search_params(
            options={"algorithm": "snas", "estimator": estimator, "arch_lr": 0.3, "arch_weight_decay": 0.0, "cost_level": "aggressive",
                     "cost_eta": {"mild": 0, "moderate": 0, "aggressive": 10.0}, "temperature_start": 0.5}
        )["options"]
        settings = search_params()["settings"]
        method = METHODS.get("snas")(SPACE, model, options, settings, torch.device("cpu"), "none")
        w_opt, _ = method.make_weight_optimizer(model.parameters())
        before = method.eval_weights()["normal"][:, OPS.index("none")].mean()
        x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
        for _ in range(8):
            method.train_step((x, y), None, w_opt, 0.025)
        after = method.eval_weights()["normal"][:, OPS.index("none")].mean()
        assert after > before + 0.1, estimator


@pytest.mark.slow
def test_snas_search_runs_and_trains_alpha(tiny_data, tmp_path):
    params = search_params(options={"algorithm": "snas"}, settings={"epochs": 2})
    checkpoint = artifacts.load_checkpoint(run_search(params, tiny_data, tmp_path, threads=1), "supernet")
    assert checkpoint["method"]["temperature"] == pytest.approx(0.03)
    metrics = artifacts.read_metrics(tmp_path / "metrics.h5")
    assert metrics.epochs["temperature"].tolist() == pytest.approx([1.0, 0.03])
    assert not np.allclose(metrics.epochs["alpha_normal"][0], metrics.epochs["alpha_normal"][1])
    assert metrics.summary["algorithm"] == "snas"
    cells = parse_argmax(SPACE, checkpoint["arch_weights"])
    SPACE.validate_genotype(cells)
    assert set(OP_FACTORIES) >= {e["op"] for e in cells["normal"]["edges"]}


def test_snas_on_nas_bench_201_cells():
    from pipeline.select.base import SelectionContext
    from pipeline.select.snas import SnasArgmax

    space = get_space("nb201")
    torch.manual_seed(0)
    model = space.build_supernet(4, 5, 10)
    options = search_params(options={"algorithm": "snas"})["options"]
    settings = search_params(settings={"space": "nb201"})["settings"]
    method = METHODS.get("snas")(space, model, options, settings, torch.device("cpu"), "none")
    w_opt, _ = method.make_weight_optimizer(model.parameters())
    before = method.alpha["cell"].detach().clone()
    method.train_step((torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))), None, w_opt, 0.025)
    assert not torch.equal(before, method.alpha["cell"])
    costs = method.costs["cell"]  # one cell per stage: 3 cells at 8x8, 4x4, 2x2 with C = 4, 8, 16
    conv3 = space.primitives.index("nor_conv_3x3")
    assert costs.shape == (3, 6, 5, 3) and costs[:, 0, conv3, 0].tolist() == [144, 576, 2304]
    weights = torch.full((6, 5), 0.1)
    weights[:, space.primitives.index("nor_conv_3x3")] = 0.5
    weights[2, space.primitives.index("none")] = 0.9
    ctx = SelectionContext(space, {}, {"cell": weights}, None, torch.device("cpu"), 0)
    edges = SnasArgmax({}).select(ctx)["cell"]["edges"]
    assert [e["op"] for e in edges] == ["nor_conv_3x3", "nor_conv_3x3", "none", "nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3"]


def test_snas_and_unas_reject_spaces_they_cannot_search(tmp_path):
    from conftest import REPO
    from pipeline.config import ConfigError, load_config

    base = [REPO / "config" / "config.yaml", REPO / "config" / "demo.yaml"]
    overlay = tmp_path / "o.yaml"
    for method, space in (("snas", "proxyless"), ("unas", "nb201"), ("unas", "s1")):
        overlay.write_text(f"search: {{run: [{method}], methods: {{{method}: {{settings: {{space: {space}}}}}}}}}\n")
        with pytest.raises(ConfigError, match=f"config key 'search.methods.{method}.settings.space': search method {method} needs"):
            load_config([*base, overlay])
