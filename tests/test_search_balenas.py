import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import build_method, random_batch
from pipeline.search.variational_adam import VariationalAdam


def test_variational_adam_steps_follow_the_formulas():
    lr, b1, b2, delta, n = 0.1, 0.5, 0.999, 0.01, 50
    mu0 = [0.3, -0.2, 0.1]
    g1, g2 = [0.5, -1.0, 0.02], [-0.3, 0.4, 0.0]
    p = nn.Parameter(torch.tensor(mu0, dtype=torch.float64))
    opt = VariationalAdam([p], lr=lr, betas=(b1, b2), delta=delta, dataset_size=n)
    assert torch.allclose(opt.sigma(p), torch.full((3,), 1 / math.sqrt(n * delta), dtype=torch.float64))

    mu, m, s = list(mu0), [0.0] * 3, [0.0] * 3
    for t, g in enumerate((g1, g2), start=1):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        for i in range(3):
            m[i] = b1 * m[i] + (1 - b1) * (g[i] + delta * mu[i])
            s[i] = b2 * s[i] + (1 - b2) * g[i] ** 2
            m_hat, s_hat = m[i] / (1 - b1**t), s[i] / (1 - b2**t)
            mu[i] = mu[i] - lr * m_hat / (math.sqrt(s_hat) + delta)
        assert p.detach().tolist() == pytest.approx(mu, rel=1e-12)
        sigma = [1 / math.sqrt(n * (s[i] + delta)) for i in range(3)]
        assert opt.sigma(p).tolist() == pytest.approx(sigma, rel=1e-12)


def test_arch_step_averages_the_darts_gradient_over_samples_then_steps_vadam():
    _, model, method = build_method("balenas", samples=3, arch_lr=0.05, delta=0.01)
    n = 200
    method.on_data(train_size=100, arch_size=n)
    batch_w, batch_a = random_batch(0), random_batch(1)
    w_opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9)
    kinds = list(method.alpha)
    mu0 = {k: a.detach().clone() for k, a in method.alpha.items()}
    sigma0 = 1 / math.sqrt(n * 0.01)  # s = 0 before the first step

    torch.manual_seed(7)
    method.arch_step(batch_w, batch_a, w_opt, 0.025)

    torch.manual_seed(7)  # the same draws, by hand
    total = {k: torch.zeros_like(mu0[k]) for k in kinds}
    for _ in range(3):
        sample = {k: (mu0[k] + sigma0 * torch.randn_like(mu0[k])).requires_grad_(True) for k in kinds}
        loss = F.cross_entropy(model(batch_a[0], {k: F.softmax(a, dim=-1) for k, a in sample.items()}), batch_a[1])
        for k, g in zip(kinds, torch.autograd.grad(loss, [sample[k] for k in kinds])):
            total[k] += g / 3
    leaves = [mu0[k].clone().requires_grad_(True) for k in kinds]
    loss = F.cross_entropy(model(batch_a[0], {k: F.softmax(a, dim=-1) for k, a in zip(kinds, leaves)}), batch_a[1])
    at_mean = torch.autograd.grad(loss, leaves)
    b1, b2, delta, lr = 0.5, 0.999, 0.01, 0.05
    for k, g_mean in zip(kinds, at_mean):
        g = total[k]
        assert not torch.allclose(g, g_mean, rtol=1e-2)  # the samples really are spread
        m = (1 - b1) * (g + delta * mu0[k])
        s = (1 - b2) * g * g
        want = mu0[k] - lr * (m / (1 - b1)) / ((s / (1 - b2)).sqrt() + delta)
        torch.testing.assert_close(method.alpha[k].detach(), want, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(method.sigma()[k], (n * (s + delta)).rsqrt(), rtol=1e-5, atol=0)
    # The supernet sees the mean: validation and the weight step use softmax(mu).
    for k, w in method.eval_weights().items():
        torch.testing.assert_close(w, F.softmax(method.alpha[k].detach(), dim=-1))


def test_sigma_shrinks_as_the_training_set_grows():
    _, model, method = build_method("balenas", samples=1)
    method.on_data(train_size=10, arch_size=10)
    w_opt = torch.optim.SGD(model.parameters(), lr=0.025)
    method.arch_step(random_batch(0), random_batch(1), w_opt, 0.025)  # s > 0 from here on
    previous = None
    for n in (10, 1_000, 100_000):
        method.on_data(train_size=n, arch_size=n)
        sigma = method.sigma()["normal"]
        s = method.arch_optimizer.state[method.alpha["normal"]]["s"]
        torch.testing.assert_close(sigma, (n * (s + method.options["delta"])).rsqrt())
        if previous is not None:
            assert (sigma < previous).all()
        previous = sigma


def test_state_round_trip_resumes_the_same_updates():
    _, model, method = build_method("balenas", samples=2)
    method.on_data(10, 40)
    w_opt = torch.optim.SGD(model.parameters(), lr=0.025)
    method.arch_step(random_batch(0), random_batch(1), w_opt, 0.025)
    state = copy.deepcopy(method.state_dict())  # a checkpoint holds copies, not the live tensors
    _, _, other = build_method("balenas", seed=1, samples=2)
    other.model.load_state_dict(model.state_dict())
    other.on_data(10, 40)
    other.load_state_dict(state)
    for k in method.alpha:
        torch.testing.assert_close(other.sigma()[k], state["sigma"][k], rtol=0, atol=0)
    torch.manual_seed(3)
    method.arch_step(random_batch(2), random_batch(3), w_opt, 0.025)
    torch.manual_seed(3)
    other.arch_step(random_batch(2), random_batch(3), torch.optim.SGD(other.model.parameters(), lr=0.025), 0.025)
    for k in method.alpha:
        assert torch.equal(method.alpha[k], other.alpha[k])
