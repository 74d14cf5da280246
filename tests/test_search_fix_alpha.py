import torch

from conftest import build_method, random_batch


def test_alpha_stays_zero_and_weights_uniform_while_the_network_trains():
    space, model, method = build_method("fix_alpha")
    assert not method.bilevel  # the loop draws no architecture batches
    params_before = [p.detach().clone() for p in model.parameters()]
    w_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        method.train_step(random_batch(step), None, w_opt, 0.1)
    ops = len(space.primitives)
    for kind, alpha in method.alpha.items():
        assert torch.equal(alpha, torch.zeros_like(alpha))
        assert torch.equal(method.eval_weights()[kind], torch.full_like(alpha, 1 / ops))
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), params_before))
