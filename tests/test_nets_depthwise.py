"""The CPU depthwise convolution equals nn.Conv2d(groups=C): values, gradients, double
backward and memory format."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nets.depthwise import DepthwiseConv2d, _block_offsets, depthwise_conv2d

CASES = list(itertools.product((3, 5, 7), (1, 2), (1, 2), ((8, 10), (7, 9)), (True, False)))


@pytest.mark.parametrize("kernel, dilation, stride, size, channels_last", CASES)
def test_matches_grouped_conv2d_with_gradients(kernel, dilation, stride, size, channels_last):
    torch.manual_seed(0)
    padding = dilation * (kernel - 1) // 2
    x = torch.randn(3, 4, *size, dtype=torch.double)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(4, 1, kernel, kernel, dtype=torch.double, requires_grad=True)
    expected = F.conv2d(x, weight, None, stride, padding, dilation, 4)
    out = depthwise_conv2d(x, weight, stride, padding, dilation)
    grad = torch.randn_like(expected)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for mine, reference in zip(torch.autograd.grad(out, [x, weight], grad), torch.autograd.grad(expected, [x, weight], grad)):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, dilation, stride", [(5, 1, 1), (7, 1, 2), (3, 2, 1), (5, 2, 2)])
def test_double_backward(kernel, dilation, stride):
    """GraSP and the 2nd-order DARTS reference differentiate through the backward pass."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.double, requires_grad=True)
    weight = torch.randn(3, 1, kernel, kernel, dtype=torch.double, requires_grad=True)
    padding = dilation * (kernel - 1) // 2
    assert torch.autograd.gradgradcheck(lambda x, w: depthwise_conv2d(x, w, stride, padding, dilation), (x, weight))


@pytest.mark.parametrize("kernel, dilation, stride", [(5, 1, 1), (3, 2, 1), (5, 2, 2), (3, 1, 2)])
def test_channels_last_in_channels_last_out_also_for_the_input_gradient(kernel, dilation, stride):
    """A layout change here makes the next ReLU's backward several times slower."""
    x = torch.randn(2, 8, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = torch.randn(8, 1, kernel, kernel, requires_grad=True)
    out = depthwise_conv2d(x, weight, stride, dilation * (kernel - 1) // 2, dilation)
    (grad_x,) = torch.autograd.grad(out, x, torch.randn_like(out))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert grad_x.is_contiguous(memory_format=torch.channels_last)


def test_module_has_the_state_of_a_grouped_conv2d():
    """Checkpoints written before (and by nn.Conv2d) load unchanged; hooks see a Conv2d."""
    torch.manual_seed(0)
    plain = nn.Conv2d(6, 6, 5, 2, 4, dilation=2, groups=6, bias=False)
    mine = DepthwiseConv2d(6, 5, stride=2, padding=4, dilation=2)
    mine.load_state_dict(plain.state_dict())
    assert isinstance(mine, nn.Conv2d) and mine.weight.shape == (6, 1, 5, 5)
    x = torch.randn(2, 6, 12, 12)
    torch.testing.assert_close(mine(x), plain(x), rtol=1e-5, atol=1e-6)
    other = torch.randn_like(plain.weight)
    torch.testing.assert_close(
        torch.func.functional_call(mine, {"weight": other}, (x,)), F.conv2d(x, other, None, 2, 4, 2, 6), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("kernel, offsets", [(3, [0]), (5, [0, 2]), (7, [0, 3, 4]), (9, [0, 3, 6])])
def test_blocks_cover_the_kernel(kernel, offsets):
    assert _block_offsets(kernel) == offsets
    assert set().union(*(range(o, o + 3) for o in offsets)) == set(range(kernel))


def test_a_backward_pass_computes_only_the_gradients_it_reaches(monkeypatch):
    """An architecture-only pass (gradient w.r.t. a scale before the convolution) must not
    pay for the blockwise weight gradient; a weight-only pass skips the input gradient."""
    import pipeline.nets.depthwise as depthwise

    computed = []
    real = depthwise._conv_backward

    def counting(*args, input_grad):
        computed.append("input" if input_grad else "weight block")
        return real(*args, input_grad=input_grad)

    monkeypatch.setattr(depthwise, "_conv_backward", counting)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8, dtype=torch.double)
    scale = torch.tensor(1.5, dtype=torch.double, requires_grad=True)
    weight = torch.randn(4, 1, 5, 5, dtype=torch.double, requires_grad=True)

    def losses():
        mine = depthwise_conv2d(x * scale, weight, 1, 2, 1).square().sum()
        return mine, F.conv2d(x * scale, weight, None, 1, 2, 1, 4).square().sum()

    for wrt, expected in (([scale], ["input"]), ([weight], ["weight block"] * 4), ([scale, weight], ["input"] + ["weight block"] * 4)):
        computed.clear()
        mine, reference = losses()
        for got, want in zip(torch.autograd.grad(mine, wrt), torch.autograd.grad(reference, wrt)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert computed == expected
    computed.clear()
    losses()[0].backward()
    assert computed == ["input"] + ["weight block"] * 4
