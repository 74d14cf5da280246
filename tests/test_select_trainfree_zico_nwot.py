"""The ZiCo and NWOT train-free proxies: values by hand, and as trainfree selection criteria."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.select import trainfree
from pipeline.select.trainfree import TrainFree, nwot, zico
from test_select_trainfree import SPACE, context, options


def tiny_net() -> nn.Module:
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.8, -1.0]]))
        net[2].weight.copy_(torch.tensor([[0.7, -1.2], [0.4, 0.9]]))
    return net


def test_zico_is_the_log_sum_of_mean_abs_over_std_of_the_gradients_per_layer():
    net = tiny_net()
    # input feature 2 is 0 in every batch: its first-layer weights get gradient 0 with std 0
    batches = [
        (torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 0.0]]), torch.tensor([0, 1])),
        (torch.tensor([[2.0, 0.5, 0.0], [-1.0, 1.5, 0.0]]), torch.tensor([1, 1])),
        (torch.tensor([[0.2, 1.0, 0.0], [1.0, 1.0, 0.0]]), torch.tensor([0, 0])),
    ]
    # direct: per batch, the mean cross-entropy's gradient of each weight matrix
    w1, w2 = (net[0].weight.detach().double(), net[2].weight.detach().double())
    grads = {0: [], 1: []}
    for x, y in batches:
        a, b = w1.clone().requires_grad_(True), w2.clone().requires_grad_(True)
        loss = F.cross_entropy(F.relu(x.double() @ a.T) @ b.T, y)
        ga, gb = torch.autograd.grad(loss, (a, b))
        grads[0].append(ga.flatten().numpy())
        grads[1].append(gb.flatten().numpy())
    expected = 0.0
    for layer in (0, 1):
        g = np.array(grads[layer])
        std = g.std(axis=0)
        keep = std != 0
        expected += math.log((np.abs(g).mean(axis=0)[keep] / std[keep]).sum())
    assert (np.array(grads[0])[:, [2, 5]] == 0).all()  # the left-out weights are really there
    assert zico(net, batches) == pytest.approx(expected, rel=1e-9)


def test_nwot_is_the_log_determinant_of_the_relu_code_agreement_kernel():
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3))
    # codes (x > 0): [1,0,0], [0,1,0], [1,1,1]; K_ij = units on which samples i and j agree
    x = torch.tensor([[1.0, -1.0, -2.0], [-0.5, 2.0, -1.0], [0.1, 0.2, 0.3]])
    kernel = np.array([[3, 1, 1], [1, 3, 1], [1, 1, 3]], dtype=float)
    assert np.linalg.det(kernel) == pytest.approx(20.0)
    assert nwot(net, x) == pytest.approx(math.log(20.0), rel=1e-12)
    # two ReLU modules: their kernels add
    deeper = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 3, bias=False), nn.ReLU())
    with torch.no_grad():
        deeper[0].weight.copy_(torch.eye(3))
        deeper[2].weight.copy_(torch.eye(3))
    # second ReLU's codes equal the first's: K doubles, det x 8
    assert nwot(deeper, x) == pytest.approx(math.log(160.0), rel=1e-12)


@pytest.mark.parametrize("proxy", ["zico", "nwot"])
def test_trainfree_scores_every_sample_with_the_proxy(proxy, tiny_supernet, tiny8_data):
    ctx = context(tiny_supernet, tiny8_data)
    o = options(proxy)
    o["batch_size"] = 4  # the weight half has 10 images: zico needs 2 batches
    cells = TrainFree(o).select(ctx)
    SPACE.validate_genotype(cells)
    (decision,) = ctx.record.decisions
    assert decision["criterion"] == proxy
    scores = [c["score"] for c in ctx.record.candidates]
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    assert decision["choice"] == ctx.record.candidates[scores.index(max(scores))]["name"]
    # the first candidate's score, recomputed directly
    batches, _ = trainfree.first_batches(context(tiny_supernet, tiny8_data), 4, 2)
    first = ctx.record.candidates[0]
    settings = ctx.search_params["settings"]
    torch.manual_seed(trainfree._seed(0, 0, 1))
    net = SPACE.build_network(SPACE.from_text(first["name"]), settings["init_channels"], settings["layers"], 10, False)
    direct = zico(net, batches) if proxy == "zico" else nwot(net, batches[0][0])
    assert direct == pytest.approx(first["score"], rel=1e-6)
