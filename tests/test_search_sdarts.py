import pytest
import torch
import torch.nn.functional as F

from conftest import build_method, random_batch
from pipeline.search.sdarts import project_perturbation


def assert_on_simplex_within(weights, center, eps):
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]), rtol=0, atol=1e-5)
    assert (weights - center).abs().max() <= eps + 1e-6


def test_projection_is_the_nearest_point_of_simplex_and_eps_box():
    g = torch.Generator().manual_seed(0)
    center = F.softmax(3 * torch.randn(50, 8, generator=g), dim=-1)
    eps = 0.1
    v = center + 0.5 * torch.randn(50, 8, generator=g)
    p = project_perturbation(v, center, eps)
    assert_on_simplex_within(p, center, eps)
    # No feasible point is closer: the center itself and other projected points are feasible.
    others = [center] + [project_perturbation(center + 0.3 * torch.randn(50, 8, generator=g), center, eps) for _ in range(20)]
    distance = (v - p).norm(dim=-1)
    for z in others:
        assert (distance <= (v - z).norm(dim=-1) + 1e-5).all()
    # A feasible point stays where it is.
    torch.testing.assert_close(project_perturbation(p, center, eps), p, rtol=0, atol=1e-6)


def test_epsilon_ramps_linearly_over_the_epochs():
    _, _, method = build_method("sdarts", mode="rs")
    expected = {0: 0.03, 25: 0.165, 49: 0.03 + 0.27 * 49 / 50}
    for epoch, eps in expected.items():
        method.on_epoch_start(epoch, 50)
        assert method.epsilon == pytest.approx(eps)


def test_random_smoothing_noise_is_bounded_by_eps_and_stays_on_the_simplex():
    _, _, method = build_method("sdarts", mode="rs")
    method.on_epoch_start(40, 50)
    eps = method.epsilon
    center = method.eval_weights()
    x, y = random_batch(0)
    deviations = []
    for _ in range(20):
        perturbed = method.train_weights(x, y)
        for kind, w in perturbed.items():
            assert_on_simplex_within(w, center[kind], eps)
            deviations.append((w - center[kind]).abs().max())
    assert max(deviations) > eps / 2  # the noise is really there, at the scale of eps


@pytest.mark.slow
def test_adversarial_perturbation_stays_within_eps_on_the_simplex_and_raises_the_loss():
    _, model, method = build_method("sdarts", mode="adv")
    method.on_epoch_start(49, 50)
    eps = method.epsilon
    x, y = random_batch(0)
    w_opt = torch.optim.SGD(model.parameters(), lr=0.025)
    method.weight_update((x, y), w_opt)  # BN running statistics away from their init
    model.train()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    center = method.eval_weights()
    perturbed = method.train_weights(x, y)
    assert model.training
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name  # the attack does not move BN statistics
    for kind, w in perturbed.items():
        assert_on_simplex_within(w, center[kind], eps)
    model.eval()
    with torch.no_grad():
        loss_center = F.cross_entropy(model(x, center), y)
        loss_attack = F.cross_entropy(model(x, perturbed), y)
    assert loss_attack > loss_center
    assert any(not torch.allclose(perturbed[k], center[k]) for k in center)


def test_attack_gradient_reaches_ops_whose_weight_is_zero():
    _, model, method = build_method("sdarts", mode="adv")
    x, y = random_batch(0)
    weights = {k: torch.zeros_like(w) for k, w in method.eval_weights().items()}
    for w in weights.values():
        w[:, 4] = 1.0  # every edge one-hot on sep_conv_3x3
        w.requires_grad_(True)
    grads = torch.autograd.grad(method._attack_loss(x, y, weights), list(weights.values()))
    assert all(g[:, 1:4].abs().sum() > 0 for g in grads)  # pools and skip, at weight 0


def test_alpha_step_is_plain_darts():
    _, model, method = build_method("sdarts", mode="adv", order=1)
    _, _, darts = build_method("darts", order=1)
    darts.model.load_state_dict(model.state_dict())
    for k in method.alpha:
        darts.alpha[k].data.copy_(method.alpha[k].data)
    batch_w, batch_a = random_batch(0), random_batch(1)
    got = method.arch_gradient(batch_w, batch_a, None, 0.025)
    want = darts.arch_gradient(batch_w, batch_a, None, 0.025)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_adversarial_perturbation_on_nb201_cells_and_space_check():
    from conftest import SEARCH_SETTINGS
    from pipeline.config import ConfigError
    from pipeline.search.sdarts import SDarts

    SDarts.check_settings({**SEARCH_SETTINGS, "space": "nb201"})
    with pytest.raises(ConfigError, match="search method sdarts needs a cell space"):
        SDarts.check_settings({**SEARCH_SETTINGS, "space": "proxyless"})
    _, _, method = build_method("sdarts", space="nb201", layers=5, mode="adv", pgd_steps=2)
    method.on_epoch_start(40, 50)
    center = method.eval_weights()
    for kind, w in method.train_weights(*random_batch(0)).items():
        assert_on_simplex_within(w, center[kind], method.epsilon)
