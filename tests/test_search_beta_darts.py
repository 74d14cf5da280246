import math

import pytest
import torch

from conftest import build_method, random_batch
from pipeline.search.beta_darts import beta_decay


def test_regulariser_is_the_mean_log_sum_exp_and_its_gradient_the_softmax_over_edges():
    normal = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]], requires_grad=True)
    reduce = torch.tensor([[-1.0, 0.0, 3.0]], requires_grad=True)
    value = beta_decay([normal, reduce])
    by_hand = (
        math.log(1 + math.e + math.e**2) + math.log(3 * math.e) + math.log(math.exp(-1) + 1 + math.exp(3))
    ) / 3
    assert value.item() == pytest.approx(by_hand, rel=1e-6)
    value.backward()
    e = math.e
    torch.testing.assert_close(normal.grad, torch.tensor([[1, e, e * e], [e, e, e]]) / torch.tensor([[1 + e + e * e], [3 * e]]) / 3)
    torch.testing.assert_close(reduce.grad, torch.tensor([[math.exp(-1), 1, math.exp(3)]]) / (math.exp(-1) + 1 + math.exp(3)) / 3)


def test_weight_grows_as_the_reference_schedule():
    _, _, method = build_method("beta_darts")
    for epoch, weight in [(0, 0.0), (1, 0.5), (49, 24.5)]:
        method.on_epoch_start(epoch, 50)
        assert method.decay_weight == pytest.approx(weight)


@pytest.mark.parametrize("order", [1, 2])
def test_arch_gradient_is_darts_plus_weight_times_softmax_over_edges(order):
    _, model, method = build_method("beta_darts", order=order)
    _, _, darts = build_method("darts", order=order)
    darts.model.load_state_dict(model.state_dict())
    for k in method.alpha:
        with torch.no_grad():
            method.alpha[k].copy_(torch.randn_like(method.alpha[k]))
            darts.alpha[k].copy_(method.alpha[k])
    method.on_epoch_start(10, 50)
    w_opt, _ = method.make_weight_optimizer(model.parameters())
    d_opt, _ = darts.make_weight_optimizer(darts.model.parameters())
    batches = (random_batch(0), random_batch(1))
    torch.manual_seed(5)
    got = method.arch_gradient(*batches, w_opt, 0.025)
    torch.manual_seed(5)
    plain = darts.arch_gradient(*batches, d_opt, 0.025)
    edges = sum(a.shape[0] for a in method.alpha.values())
    for g, p, a in zip(got, plain, method.alpha.values()):
        torch.testing.assert_close(g, p + 5.0 * torch.softmax(a.detach(), -1) / edges, rtol=1e-4, atol=1e-6)
