"""Depthwise convolution with the same weights and results as ``nn.Conv2d(groups=C)``,
computed through CPU kernels that are fast.

On CPU (oneDNN, torch 2.14) a depthwise convolution's backward is fast only for 3x3
kernels without dilation: a 5x5 weight gradient takes about 20x the 3x3 one, a dilated
convolution's input gradient about 8x. The DARTS ops are mostly 5x5 and dilated, so on CPU:

- a dilation-d convolution at stride 1 is d*d undilated ones, one per polyphase component
  (pixels (i, j) with the same (i mod d, j mod d)), run as one batch; at stride d it is one
  undilated convolution of the (0, 0) component;
- the weight gradient of a kernel larger than 3x3 is assembled from 3x3 weight gradients
  over shifted windows of the padded input.

Each is the same sum of products as the direct convolution, so results agree to fp32
rounding. CUDA keeps the plain cuDNN call: there these rewrites only add kernel launches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import get_gradient_edge

_BLOCK = 3  # the kernel size whose CPU weight gradient is fast
# The engine query torch's own multi-grad hooks use; private, so absent means "compute".
_WILL_ENGINE_EXECUTE = getattr(torch._C, "_will_engine_execute_node", None)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel, stride, padding, dilation, groups=channels,
    bias=False)`` with square kernel, stride, padding and dilation."""

    def __init__(self, channels: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__(channels, channels, kernel, stride, padding, dilation=dilation, groups=channels, bias=False)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.device.type != "cpu":
            return super()._conv_forward(x, weight, bias)
        return depthwise_conv2d(x, weight, self.stride[0], self.padding[0], self.dilation[0])


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """``F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=C)``."""
    kernel = weight.shape[-1]
    same = 2 * padding == dilation * (kernel - 1)
    if dilation > 1 and same and padding % dilation == 0:
        height, width = x.shape[-2:]
        if stride == dilation:  # only the (0, 0) component reaches the output
            return _undilated(_first_phase(x, dilation), weight, 1, padding // dilation)
        if stride == 1 and height % dilation == 0 and width % dilation == 0:
            phases = _split_phases(x, dilation)
            return _merge_phases(_undilated(phases, weight, 1, padding // dilation), dilation)
    if dilation == 1:
        return _undilated(x, weight, stride, padding)
    return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])


def _undilated(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    if weight.shape[-1] > _BLOCK:
        # Through a view, the weight has a graph node the backward can ask the engine about.
        return _BlockwiseWeightGrad.apply(x, weight.view_as(weight), stride, padding)
    return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _split_phases(x: torch.Tensor, d: int) -> torch.Tensor:
    """(n, c, h, w) -> (d*d*n, c, h/d, w/d): component (a, b) is x[..., a::d, b::d], batch
    index (a*d + b)*n + i. Keeps the memory format, also of the gradient (a channels_last
    tensor is rearranged through its NHWC view)."""
    n, c, h, w = x.shape
    if _channels_last(x):
        grid = x.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c)
        return grid.permute(2, 4, 0, 1, 3, 5).reshape(d * d * n, h // d, w // d, c).permute(0, 3, 1, 2)
    grid = x.reshape(n, c, h // d, d, w // d, d)
    return grid.permute(3, 5, 0, 1, 2, 4).reshape(d * d * n, c, h // d, w // d)


def _merge_phases(y: torch.Tensor, d: int) -> torch.Tensor:
    """The inverse of ``_split_phases``."""
    dn, c, h, w = y.shape
    n = dn // (d * d)
    if _channels_last(y):
        grid = y.permute(0, 2, 3, 1).reshape(d, d, n, h, w, c).permute(2, 3, 0, 4, 1, 5)
        return grid.reshape(n, h * d, w * d, c).permute(0, 3, 1, 2)
    return y.reshape(d, d, n, c, h, w).permute(2, 3, 4, 0, 5, 1).reshape(n, c, h * d, w * d)


def _first_phase(x: torch.Tensor, d: int) -> torch.Tensor:
    """x[..., ::d, ::d] in x's memory format, also for the gradient."""
    if _channels_last(x):
        return x.permute(0, 2, 3, 1)[:, ::d, ::d].contiguous().permute(0, 3, 1, 2)
    return x[:, :, ::d, ::d]


def _block_offsets(kernel: int) -> list[int]:
    """Start rows (and columns) of 3-wide blocks that cover a kernel: 5 -> [0, 2], 7 -> [0, 3, 4]."""
    return sorted(set(range(0, kernel - _BLOCK, _BLOCK)) | {kernel - _BLOCK})


class _BlockwiseWeightGrad(torch.autograd.Function):
    """An undilated depthwise convolution whose weight gradient is computed 3x3 block by
    3x3 block: block (r, c) of the kernel sees the padded input from row r, column c on.
    Written with differentiable ops, so double backward works. The weight gradient is
    skipped in a backward pass that does not reach the weight (an architecture-only pass),
    and so is the input gradient when the pass does not reach the input, as the native
    convolution's backward does."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        ctx.nodes = [get_gradient_edge(t).node if t.grad_fn else None for t in (x, weight)]
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        grad_x = grad_weight = None
        if _wanted(ctx, 0):
            grad_x = _conv_backward(grad, x, weight, stride, padding, input_grad=True)
        if _wanted(ctx, 1):
            out_h, out_w = grad.shape[-2:]
            span_h, span_w = stride * (out_h - 1) + _BLOCK, stride * (out_w - 1) + _BLOCK
            block = weight.new_zeros(*weight.shape[:2], _BLOCK, _BLOCK)  # only its shape is read
            offsets = _block_offsets(weight.shape[-1])
            blocks = [
                [_conv_backward(grad, _window(x, padding, r, c, span_h, span_w), block, stride, 0, input_grad=False) for c in offsets]
                for r in offsets
            ]
            grad_weight = _assemble(blocks, offsets)
        return grad_x, grad_weight, None, None


def _window(x: torch.Tensor, padding: int, row: int, col: int, height: int, width: int) -> torch.Tensor:
    """``F.pad(x, (padding,) * 4)[..., row : row + height, col : col + width]`` in one copy
    (a negative pad crops)."""
    h, w = x.shape[-2:]
    top, left = padding - row, padding - col
    return F.pad(x, (left, width - left - w, top, height - top - h))


def _wanted(ctx, index: int) -> bool:
    """Whether the running backward pass uses the gradient of input ``index`` (True when
    unknown). Custom Functions' ``needs_input_grad`` only says that the input requires grad."""
    node = ctx.nodes[index]
    return ctx.needs_input_grad[index] and (node is None or _WILL_ENGINE_EXECUTE is None or _WILL_ENGINE_EXECUTE(node))


def _conv_backward(grad, x, weight, stride: int, padding: int, input_grad: bool) -> torch.Tensor:
    """The input gradient (``input_grad``) or the weight gradient of an undilated depthwise
    convolution, through the differentiable aten op."""
    mask = [input_grad, not input_grad, False]
    grads = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [stride, stride], [padding, padding], [1, 1], False, [0, 0], x.shape[1], mask
    )
    return grads[0] if input_grad else grads[1]


def _assemble(blocks: list[list[torch.Tensor]], offsets: list[int]) -> torch.Tensor:
    """The kernel-sized gradient from overlapping 3x3 blocks: each kernel row and column is
    taken from the first block that covers it."""
    owned = []  # per block: the slice of its rows (columns) not covered by an earlier block
    covered = 0
    for offset in offsets:
        owned.append(slice(covered - offset, _BLOCK))
        covered = offset + _BLOCK
    rows = [torch.cat([block[..., owned[i], owned[j]] for j, block in enumerate(row)], dim=-1) for i, row in enumerate(blocks)]
    return torch.cat(rows, dim=-2)
