"""Net2WiderNet widening of partial-channel mixed ops (DrNAS' progressive search).

When a search lowers the partial-channel divisor K (DrNAS: 6 -> 4), every mixed op's
candidate ops grow from C/K to C/K' channels. The grown ops are initialised from the
trained ones as in Net2WiderNet (Chen, Goodfellow and Shlens, ICLR 2016), which the
DrNAS authors' ``net2wider.py`` follows: a map ``m`` (new channel -> old channel, the
identity on old channels plus random duplicates) copies every per-channel tensor
(depthwise filters, pointwise output rows, BN statistics), and a convolution that sums
over channels gets its input columns copied and divided by how often the old channel is
duplicated. Then each op satisfies op'(x[:, m]) == op(x)[:, m]: the widened op computes
the old function on inputs widened the same way. Unlike the reference (which copies the
input columns without the division) this holds exactly. One map per mixed op keeps the
ops' outputs aligned for the weighted sum; on an edge holding a FactorizedReduce (the
stride-2 ``skip_connect``) the map keeps each half of the channels in its half, because
that op's output halves come from different convolutions.

What is not preserved, and cannot be: the supernet's function. A mixed op sends its
first C/K' input channels (real channels, not copies) through the ops and shuffles the
result in K' groups, so after widening other channels reach the ops and land elsewhere;
as in the reference, widening is a warm start of the new ops, not an identity of the
network. SGD momentum buffers are widened with the same maps.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.nets.ops import DilConv, FactorizedReduce, ReLUConvBN, SepConv
from pipeline.nets.supernet import MixedOp


def channel_map(old: int, new: int, generator: torch.Generator, halves: bool = False) -> torch.Tensor:
    """New channel -> old channel: the old channels, then ``new - old`` random duplicates;
    with ``halves`` each half of the new channels maps into the same half of the old."""
    if halves:
        if old % 2 or new % 2:
            raise ValueError(f"cannot widen {old} -> {new} channels by halves")
        half = channel_map(old // 2, new // 2, generator)
        return torch.cat([half, old // 2 + channel_map(old // 2, new // 2, generator)])
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


def _plans(module: nn.Module, prefix: str, m: torch.Tensor, plans: dict) -> None:
    """Per tensor name under ``module``: how to widen it (``("rows", m)``: index dim 0;
    ``("rows_cols", m)``: dim 0 and dim 1, dividing the duplicated input columns)."""
    if isinstance(module, SepConv):
        for index, part in enumerate(module):
            _plans(part, f"{prefix}{index}.", m, plans)
    elif isinstance(module, DilConv):
        # relu, depthwise, pointwise, BN
        plans[f"{prefix}1.weight"] = ("rows", m)
        plans[f"{prefix}2.weight"] = ("rows_cols", m, m)
        _bn_plans(f"{prefix}3.", m, plans)
    elif isinstance(module, ReLUConvBN):
        plans[f"{prefix}1.weight"] = ("rows_cols", m, m)
        _bn_plans(f"{prefix}2.", m, plans)
    elif isinstance(module, FactorizedReduce):
        half = len(m) // 2
        old_half = int(m[:half].max()) + 1
        plans[f"{prefix}conv_1.weight"] = ("rows_cols", m[:half], m)
        plans[f"{prefix}conv_2.weight"] = ("rows_cols", m[half:] - old_half, m)
        _bn_plans(f"{prefix}bn.", m, plans)
    elif isinstance(module, nn.Sequential):  # pool + BN
        for index, part in enumerate(module):
            if isinstance(part, nn.BatchNorm2d):
                _bn_plans(f"{prefix}{index}.", m, plans)
    elif isinstance(module, nn.BatchNorm2d):
        _bn_plans(prefix, m, plans)
    # identity, pools, zero: no tensors


def _bn_plans(prefix: str, m: torch.Tensor, plans: dict) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        plans[f"{prefix}{name}"] = ("rows", m)


def widen_tensor(tensor: torch.Tensor, plan: tuple) -> torch.Tensor:
    if plan[0] == "rows":
        return tensor[plan[1].to(tensor.device)].clone()
    rows, cols = plan[1].to(tensor.device), plan[2].to(tensor.device)
    counts = torch.bincount(cols, minlength=tensor.shape[1]).to(tensor.dtype)
    return tensor[rows][:, cols] / counts[cols].view(1, -1, *[1] * (tensor.ndim - 2))


def edge_plans(old: MixedOp, new: MixedOp, generator: torch.Generator) -> dict[str, tuple]:
    """The widening of every tensor of ``new``'s ops (names relative to the mixed op)."""
    halves = any(isinstance(op, FactorizedReduce) for op in old.ops)
    m = channel_map(old.channels // old.k, new.channels // new.k, generator, halves=halves)
    plans: dict[str, tuple] = {}
    for index, op in enumerate(old.ops):
        _plans(op, f"ops.{index}.", m, plans)
    return plans


def widen_supernet(model: nn.Module, grown: nn.Module, generator: torch.Generator, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Give ``model`` (a SuperNet) the mixed ops of ``grown`` (the same supernet at a lower
    K), initialised from ``model``'s by Net2WiderNet, in place; the optimiser's parameters
    and momentum buffers follow. Everything outside the mixed ops is kept as it is."""
    old_params = dict(model.named_parameters())
    widened: dict[str, tuple] = {}  # parameter name -> plan
    for c, (cell, new_cell) in enumerate(zip(model.cells, grown.cells)):
        for e, (edge, new_edge) in enumerate(zip(cell.edges, new_cell.edges)):
            plans = edge_plans(edge, new_edge, generator)
            old_state = edge.state_dict()
            new_state = {}
            param_names = {name for name, _ in new_edge.named_parameters()}
            for name, _tensor in new_edge.state_dict().items():
                if name in plans:
                    new_state[name] = widen_tensor(old_state[name], plans[name])
                else:  # num_batches_tracked, or a tensor that does not grow
                    new_state[name] = old_state[name].clone()
                if name in param_names:
                    widened[f"cells.{c}.edges.{e}.{name}"] = plans.get(name)
            new_edge.load_state_dict(new_state)
        cell.edges = new_cell.edges
    model.partial_channels = grown.partial_channels
    if optimizer is None:
        return
    new_params = dict(model.named_parameters())
    old_to_name = {id(p): name for name, p in old_params.items()}
    for group in optimizer.param_groups:
        group["params"] = [new_params[old_to_name[id(p)]] for p in group["params"]]
    state = {}
    for name, p in old_params.items():
        if p not in optimizer.state:
            continue
        entry = optimizer.state[p]
        if name in widened:
            plan = widened[name]
            entry = {k: (widen_tensor(v, plan) if plan is not None and torch.is_tensor(v) and v.shape == p.shape else v) for k, v in entry.items()}
        state[new_params[name]] = entry
    optimizer.state.clear()
    optimizer.state.update(state)
