import pytest
import torch
import torch.nn.functional as F

from conftest import build_method, random_batch
from pipeline.search.gdas import gumbel_straight_through
from pipeline.search.sampling import gumbel_noise


def test_forward_is_exactly_one_hot_per_edge():
    torch.manual_seed(0)
    alpha = torch.randn(14, 8, requires_grad=True)
    for tau in (10.0, 1.0, 0.1):
        h, index = gumbel_straight_through(alpha, tau)
        assert ((h == 0).sum(-1) == 7).all()  # the other ops are exactly 0: the supernet skips them
        torch.testing.assert_close(h.gather(-1, index[:, None]).squeeze(-1), torch.ones(14), rtol=0, atol=1e-6)


def test_gradient_is_that_of_the_relaxed_softmax_sample():
    alpha = torch.randn(6, 5).requires_grad_(True)
    c = torch.randn(6, 5)
    tau = 0.7
    torch.manual_seed(3)
    h, _ = gumbel_straight_through(alpha, tau)
    (grad_h,) = torch.autograd.grad((c * h).sum(), alpha)
    torch.manual_seed(3)  # the same noise, by hand
    g = gumbel_noise(alpha.shape, alpha)
    p = F.softmax((F.log_softmax(alpha, -1) + g) / tau, dim=-1)
    (grad_p,) = torch.autograd.grad((c * p).sum(), alpha)
    torch.testing.assert_close(grad_h, grad_p)
    assert grad_h.abs().sum() > 0


@pytest.mark.parametrize("tau", [10.0, 0.1])
def test_op_frequencies_follow_softmax_alpha_at_any_temperature(tau):
    # Gumbel-max draws op k with probability softmax(alpha)_k; tau only shapes the gradient.
    alpha = torch.tensor([[1.0, 0.0, -1.0, 0.5, -2.0]])
    torch.manual_seed(0)
    n = 200_000
    _, index = gumbel_straight_through(alpha, tau, sample_shape=(n,))
    freq = torch.bincount(index.flatten(), minlength=5).double() / n
    expected = F.softmax(alpha[0].double(), dim=0)
    assert (freq - expected).abs().max() < 4 * (expected * (1 - expected) / n).sqrt().max()


def test_step_trains_weights_on_one_sample_then_alpha_on_another():
    _, model, method = build_method("gdas")
    method.on_epoch_start(0, 10)
    assert method.tau == 10.0
    method.on_epoch_start(9, 10)
    assert method.tau == pytest.approx(0.1)
    w_opt, _ = method.make_weight_optimizer(model.parameters())
    alpha0 = {k: a.detach().clone() for k, a in method.alpha.items()}
    weights0 = [p.detach().clone() for p in model.parameters()]
    method.train_step(random_batch(0), random_batch(1), w_opt, 0.025)
    assert all(not torch.equal(alpha0[k], a) for k, a in method.alpha.items())
    assert any(not torch.equal(w0, p) for w0, p in zip(weights0, model.parameters()))
    # Only sampled ops ran: the unsampled convolutions of a cell got no gradient.
    assert any(p.grad is None for p in model.parameters())


def test_state_round_trip():
    _, model, method = build_method("gdas")
    method.on_epoch_start(4, 10)
    w_opt, _ = method.make_weight_optimizer(model.parameters())
    method.train_step(random_batch(0), random_batch(1), w_opt, 0.025)
    _, _, other = build_method("gdas", seed=1)
    other.load_state_dict(method.state_dict())
    assert other.tau == method.tau
    for k in method.alpha:
        assert torch.equal(other.alpha[k], method.alpha[k])
