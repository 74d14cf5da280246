import pytest
import torch
from torch.distributions import Dirichlet

from conftest import build_method, random_batch
from pipeline.search.drnas import concentration, dirichlet_kl


def second_moment_objective(c: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """E[sum_k weights_k w_k^2] for w ~ Dir(c), in closed form: E[w_k^2] = c_k (c_k + 1) / (c0 (c0 + 1))."""
    c0 = c.sum()
    return (weights * c * (c + 1) / (c0 * (c0 + 1))).sum()


def test_pathwise_gradient_matches_finite_differences_of_the_expectation():
    c = torch.tensor([0.7, 1.5, 3.0, 0.4], dtype=torch.float64)
    f_weights = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    # Monte-Carlo pathwise gradient of E[f(w)] through Dirichlet.rsample
    torch.manual_seed(0)
    n = 400_000
    leaf = c.clone().requires_grad_(True)
    w = Dirichlet(leaf.expand(n, 4)).rsample()
    per_sample = (f_weights * w**2).sum(-1)
    (grad,) = torch.autograd.grad(per_sample.mean(), leaf)
    # central finite differences of the exact expectation
    h = 1e-5
    fd = torch.stack(
        [(second_moment_objective(c + h * e, f_weights) - second_moment_objective(c - h * e, f_weights)) / (2 * h) for e in torch.eye(4, dtype=torch.float64)]
    )
    # Monte-Carlo tolerance: 5 standard errors of the per-sample gradients (by batches)
    leaf_b = c.clone().requires_grad_(True)
    torch.manual_seed(1)
    chunks = []
    for _ in range(20):
        wb = Dirichlet(leaf_b.expand(20_000, 4)).rsample()
        chunks.append(torch.autograd.grad((f_weights * wb**2).sum(-1).mean(), leaf_b)[0])
    se = torch.stack(chunks).std(0) / (20**0.5) * (20 * 20_000 / n) ** 0.5
    assert ((grad - fd).abs() <= 5 * se + 1e-6).all(), (grad, fd, se)
    assert (fd.abs() > 10 * se).any()  # the check can tell a wrong gradient from noise


def test_kl_equals_the_closed_form():
    alpha = torch.tensor([[0.5, -0.3, 2.0], [-1.5, 0.0, 1.0]], dtype=torch.float64)
    total = 0.0
    for row in concentration(alpha):
        a, b = row, torch.ones_like(row)
        a0, b0 = a.sum(), b.sum()
        kl = (
            torch.lgamma(a0) - torch.lgamma(a).sum() - torch.lgamma(b0) + torch.lgamma(b).sum()
            + ((a - b) * (torch.digamma(a) - torch.digamma(a0))).sum()
        )
        total += kl.item()
    # concentration = elu(alpha) + 1 by hand: alpha >= 0 -> alpha + 1, else exp(alpha)
    torch.testing.assert_close(concentration(alpha)[1, 0], torch.exp(torch.tensor(-1.5, dtype=torch.float64)))
    assert dirichlet_kl(alpha).item() == pytest.approx(total, rel=1e-10)
    assert dirichlet_kl(torch.zeros(3, 5)).item() == pytest.approx(0.0, abs=1e-6)  # c = 1: the anchor itself


def test_every_forward_draws_a_dirichlet_sample_and_eval_uses_softmax_or_mean():
    _, _, method = build_method("drnas")
    torch.manual_seed(0)
    a = method.weights()
    b = method.weights()
    for kind in a:
        torch.testing.assert_close(a[kind].sum(-1), torch.ones(14))
        assert not torch.equal(a[kind], b[kind])
        torch.testing.assert_close(method.eval_weights()[kind], torch.softmax(method.alpha[kind].detach(), -1))
    _, _, mean = build_method("drnas", eval_weights="mean")
    c = concentration(mean.alpha["normal"].detach())
    torch.testing.assert_close(mean.eval_weights()["normal"], c / c.sum(-1, keepdim=True))


@pytest.mark.parametrize("reg_type", ["l2", "kl"])
def test_arch_gradient_is_the_sampled_loss_gradient_plus_the_kl_term(reg_type):
    _, model, method = build_method("drnas", reg_type=reg_type, reg_scale=0.5)
    w_opt, _ = method.make_weight_optimizer(model.parameters())
    batches = (random_batch(0), random_batch(1))
    with torch.no_grad():
        for a in method.alpha.values():
            a.copy_(torch.randn_like(a))
    torch.manual_seed(2)
    got = method.arch_gradient(*batches, w_opt, 0.025)
    torch.manual_seed(2)
    alphas = list(method.alpha.values())
    samples = {k: Dirichlet(concentration(a)).rsample() for k, a in method.alpha.items()}
    loss, _ = method.loss(*batches[1], samples)
    if reg_type == "kl":
        loss = loss + 0.5 * sum(dirichlet_kl(a) for a in alphas)
    expected = torch.autograd.grad(loss, alphas)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    decay = method.arch_optimizer.param_groups[0]["weight_decay"]
    assert decay == (0.5 if reg_type == "l2" else 0.0)


def test_architecture_is_frozen_during_warmup():
    _, model, method = build_method("drnas", warmup_epochs=2)
    w_opt, _ = method.make_weight_optimizer(model.parameters())
    before = {k: a.detach().clone() for k, a in method.alpha.items()}
    method.on_epoch_start(1, 5)
    method.train_step(random_batch(0), random_batch(1), w_opt, 0.025)
    assert all(torch.equal(before[k], a) for k, a in method.alpha.items())
    method.on_epoch_start(2, 5)
    method.train_step(random_batch(0), random_batch(1), w_opt, 0.025)
    assert all(not torch.equal(before[k], a) for k, a in method.alpha.items())
