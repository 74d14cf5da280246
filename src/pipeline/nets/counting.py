"""Parameter and multiply-add counts, the one counting function every stage uses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, exclude: Sequence[str] = ("auxiliary_head",)) -> int:
    """Trainable parameters, leaving out sub-modules whose name starts with ``exclude``
    (the papers report CIFAR networks without the auxiliary head)."""
    return sum(
        p.numel() for name, p in model.named_parameters() if not any(name.startswith(prefix) for prefix in exclude)
    )


def count_multiply_adds(model: nn.Module, input_shape: Sequence[int], **forward_kwargs) -> int:
    """Multiply-adds of one inference forward pass (FLOPs / 2, as torch counts a MAC as 2)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(*input_shape, device=device), **forward_kwargs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
