"""bench/search_step.py compares our DARTS step with a re-implementation of the original;
the comparison means something only if both compute the same step."""

import sys
from pathlib import Path

import pytest
import torch

from conftest import build_method

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import darts_reference as ref  # noqa: E402


@pytest.fixture
def twins():
    """Our DARTS method and the reference network with the same weights and alpha, in fp64."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the reference builds its unrolled copy in the default dtype
    try:
        torch.manual_seed(0)
        reference = ref.Network(4, 10, 3)
        _, model, method = build_method("darts", order=2, hvp_epsilon=0.01)  # the reference's r
        assert model.state_dict().keys() == reference.state_dict().keys()
        model.load_state_dict(reference.state_dict())
        with torch.no_grad():
            for ours, theirs in zip(method.alpha.values(), reference.arch_parameters()):
                theirs.normal_(0, 0.5)
                ours.copy_(theirs)
        g = torch.Generator().manual_seed(1)
        batches = [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
        yield model, method, reference, batches
    finally:
        torch.set_default_dtype(default)


@pytest.mark.slow
def test_reference_and_ours_take_the_same_darts_step(twins):
    model, method, reference, ((xw, yw), (xa, ya)) = twins
    lr = 0.05
    ours_opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=3e-4)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=lr, momentum=0.9, weight_decay=3e-4)
    method.weight_update((xw, yw), ours_opt)
    ref.weight_step(reference, xw, yw, ref_opt)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=name)  # our loss is fp32 (AMP-safe)

    for order in (1, 2):
        method.options = {**method.options, "order": order}
        ours = method.arch_gradient((xw, yw), (xa, ya), ours_opt, lr)
        architect = ref.Architect(reference)
        architect.optimizer.zero_grad()
        if order == 1:
            grads = torch.autograd.grad(reference.loss(xa, ya), reference.arch_parameters())
        else:
            architect._backward_step_unrolled(xw, yw, xa, ya, lr, ref_opt)
            grads = [a.grad for a in reference.arch_parameters()]
        for a, b in zip(ours, grads):
            torch.testing.assert_close(a, b, rtol=1e-4 if order == 2 else 1e-6, atol=1e-7)
        assert ours[0].abs().max() > 1e-4  # a real gradient


@pytest.mark.slow
def test_bench_rows_run_for_every_kind_of_step():
    import search_step

    assert search_step.method_steps("darts") == ["weight", "arch1", "arch2"]
    assert search_step.method_steps("fix_alpha") == ["weight"]
    assert {"sdarts_rs", "sdarts_adv", "balenas", "sgas"} <= set(search_step.method_variants())
    common = dict(channels=2, layers=3, batch=2, device="cpu", threads=1, min_time=0, clock="cpu", amp="none")
    for impl, method, step in (("original", "darts", "arch2"), ("ours", "darts", "arch2"), ("ours", "fix_alpha", "weight")):
        row = search_step.run_job({**common, "impl": impl, "method": method, "step": step, "channels_last": impl == "ours"})
        assert row["seconds"] > 0 and row["peak_mib"] >= 0
