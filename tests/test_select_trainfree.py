"""Train-free selection: the proxies (SynFlow, SNIP, GraSP), sampling, determinism."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import artifacts
from pipeline.nets.cifar import NetworkCIFAR
from pipeline.select.base import SelectionContext
from pipeline.select.magnitude import parse_magnitude
from pipeline.select.run import run_select
from pipeline.select.trainfree import TrainFree, grasp, sample_weights, snip, synflow
from pipeline.spaces import get_space

CPU = torch.device("cpu")
SPACE = get_space("darts")


def cells_of(op: str) -> dict:
    edges = [(node, source, op) for node in range(2, 6) for source in (0, 1)]
    return {kind: {"edges": edges, "concat": [2, 3, 4, 5]} for kind in ("normal", "reduce")}


def network(op: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return NetworkCIFAR(cells_of(op), 4, 10, 3, auxiliary=False)


def test_synflow_of_a_network_whose_only_path_is_none_is_zero():
    assert synflow(network("none"), (3, 8, 8), CPU) == 0.0
    assert synflow(network("sep_conv_3x3"), (3, 8, 8), CPU) > 0.0


def test_synflow_is_a_product_over_depth_and_runs_in_float64():
    deeper = NetworkCIFAR(cells_of("sep_conv_3x3"), 4, 10, 8, auxiliary=False)
    shallow = network("sep_conv_3x3")
    assert synflow(deeper, (3, 8, 8), CPU) > synflow(shallow, (3, 8, 8), CPU)
    assert next(deeper.parameters()).dtype == torch.float64


def test_snip_is_weight_times_gradient_on_the_batch():
    net = network("sep_conv_3x3")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g)
    score = snip(net, x, y)
    net.zero_grad()
    F.cross_entropy(net(x)[0], y).backward()
    expected = sum((m.weight * m.weight.grad).abs().sum().item() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert score == pytest.approx(expected, rel=1e-6) and score > 0


def test_grasp_is_minus_weight_times_hessian_gradient_product():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randint(0, 3, (7,))
    weights = [net[0].weight, net[2].weight]

    def loss_of(w0, w2):
        h = torch.tanh(F.linear(x, w0, net[0].bias))
        return F.cross_entropy(F.linear(h, w2, net[2].bias), y)

    g = torch.autograd.grad(loss_of(*weights), weights)
    _, hg = torch.autograd.functional.hvp(loss_of, tuple(w.detach() for w in weights), tuple(g))
    expected = sum((-w * h).sum().item() for w, h in zip(weights, hg))
    assert grasp(net, x, y) == pytest.approx(expected, rel=1e-9)


def context(supernet_path, data_path, seed=0, checkpoint=None):
    checkpoint = checkpoint or artifacts.load_checkpoint(supernet_path, "supernet")
    return SelectionContext(SPACE, checkpoint, checkpoint["arch_weights"], Path(data_path), CPU, seed, supernet_path=Path(supernet_path))


def options(proxy, **changes):
    values = {name: spec["default"] for name, spec in TrainFree.OPTIONS.items()}
    values.update(proxy=proxy, samples=3, batch_size=6, image_size=8, **changes)
    return values


def test_synflow_selection_needs_no_data(tiny_supernet, tmp_path):
    ctx = context(tiny_supernet, tmp_path / "no-such-data.pt")
    cells = TrainFree(options("synflow")).select(ctx)
    SPACE.validate_genotype(cells)
    (decision,) = ctx.record.decisions
    assert decision["kind"] == "sample" and decision["criterion"] == "synflow" and decision["choice"] == SPACE.to_text(cells)
    scores = [c["score"] for c in ctx.record.candidates]
    assert len(scores) == 3 and all(s > 0 for s in scores) and decision["choice"] == ctx.record.candidates[scores.index(max(scores))]["name"]


@pytest.mark.parametrize("proxy, function", [("snip", snip), ("grasp", grasp)])
def test_snip_and_grasp_score_every_sample_on_one_batch(proxy, function, tiny_supernet, tiny8_data, monkeypatch):
    from pipeline.select import trainfree
    from pipeline.training import data as data_module

    made = []
    original = data_module.BatchLoader._batch

    def counting(self, raw, generator):
        batch = original(self, raw, generator)
        made.append(batch)
        return batch

    monkeypatch.setattr(data_module.BatchLoader, "_batch", counting)
    ctx = context(tiny_supernet, tiny8_data)
    TrainFree(options(proxy)).select(ctx)
    assert len(made) == 1 and len(made[0]) == 6  # one batch of batch_size images
    (x, y), _ = trainfree.one_batch(context(tiny_supernet, tiny8_data), 6)
    torch.testing.assert_close(x, made[0])
    settings = ctx.search_params["settings"]
    first = ctx.record.candidates[0]
    torch.manual_seed(trainfree._seed(0, 0, 1))
    net = SPACE.build_network(SPACE.from_text(first["name"]), settings["init_channels"], settings["layers"], 10, False)
    assert function(net, x, y) == pytest.approx(first["score"], rel=1e-6)


@pytest.mark.parametrize("proxy", ["synflow", "snip", "grasp"])
def test_trainfree_is_deterministic_for_a_seed(proxy, tiny_supernet, tiny8_data):
    runs = []
    for seed in (0, 0, 1):
        ctx = context(tiny_supernet, tiny8_data, seed=seed)
        cells = TrainFree(options(proxy)).select(ctx)
        runs.append((cells, [(c["name"], c["score"]) for c in ctx.record.candidates]))
    assert runs[0] == runs[1]
    assert [name for name, _ in runs[0][1]] != [name for name, _ in runs[2][1]]  # another seed, other samples


def test_samples_follow_the_gaussian_when_the_search_stored_one():
    g = torch.Generator().manual_seed(0)
    mu = {kind: torch.randn(14, 8, generator=g) for kind in ("normal", "reduce")}
    uniform = {kind: torch.full((14, 8), 1 / 8) for kind in mu}
    tight = {kind: (m, torch.full_like(m, 1e-6)) for kind, m in mu.items()}
    drawn = sample_weights(uniform, tight, torch.Generator().manual_seed(1))
    expected = {kind: F.softmax(m, dim=-1) for kind, m in mu.items()}
    assert parse_magnitude(SPACE, drawn) == parse_magnitude(SPACE, expected)
    # Without a Gaussian, each edge's weights are a categorical: a certain op is always drawn.
    certain = {kind: F.one_hot(torch.full((14,), 4), 8).float() * 0.999 + 1e-4 for kind in mu}
    for seed in range(3):
        cells = parse_magnitude(SPACE, sample_weights(certain, None, torch.Generator().manual_seed(seed)))
        assert {e["op"] for kind in cells for e in cells[kind]["edges"]} == {"sep_conv_3x3"}
    loose = [parse_magnitude(SPACE, sample_weights(uniform, None, torch.Generator().manual_seed(s))) for s in range(3)]
    assert loose[0] != loose[1] != loose[2]


def test_trainfree_runs_from_a_checkpoint_with_a_gaussian(tiny_supernet, tiny8_data, tmp_path):
    checkpoint = artifacts.load_checkpoint(tiny_supernet, "supernet")
    mu = {kind: torch.zeros(14, 8) for kind in ("normal", "reduce")}
    for kind in mu:
        mu[kind][:, 6] = 5.0  # dil_conv_3x3 everywhere
    checkpoint["method"] = {**checkpoint["method"], "mu": mu, "sigma": {k: torch.full((14, 8), 0.01) for k in mu}}
    path = tmp_path / "balenas.pt"
    artifacts.save_checkpoint(path, "supernet", {k: v for k, v in checkpoint.items() if k not in ("format", "version", "kind")})
    params = {"dataset": "cifar10", "seed": 0, "method": "tf", "options": {"algorithm": "trainfree", **options("synflow")},
              "runtime": {"device": "cpu", "amp": "none", "channels_last": False, "threads": 1}}
    genotype = run_select(params, path, tiny8_data, tmp_path / "g" / "genotype.json")
    assert {e["op"] for kind in genotype["cells"] for e in genotype["cells"][kind]["edges"]} == {"dil_conv_3x3"}
    record = artifacts.read_decisions(tmp_path / "g" / "decisions.h5")
    assert record.summary["sampling"] == "gaussian" and record.num_decisions == 1 and len(record.candidates["score"]) == 3
    assert all(math.isfinite(s) for s in record.candidates["score"])


def test_trainfree_draws_from_a_balenas_search(tiny8_data, tmp_path):
    from conftest import search_params
    from pipeline.config import method_options
    from pipeline.search import METHODS as SEARCH_METHODS
    from pipeline.search.run import run_search
    from pipeline.select.trainfree import arch_distribution

    balenas = method_options(SEARCH_METHODS, {"algorithm": "balenas"}, "search")
    params = search_params(settings={"epochs": 1, "subset_per_class": 2, "batch_size": 10})
    params["options"] = balenas
    supernet = run_search(params, tiny8_data, tmp_path, threads=1)
    ctx = context(supernet, tiny8_data)
    mu, sigma = arch_distribution(ctx.checkpoint)["normal"]
    torch.testing.assert_close(mu, ctx.checkpoint["method"]["alpha"]["normal"])  # BaLeNAS keeps mu as alpha
    assert (sigma > 0).all()
    TrainFree(options("synflow")).select(ctx)
    assert ctx.record.summary["sampling"] == "gaussian"
