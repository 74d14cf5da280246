"""Data-parallel training across processes started by ``torchrun`` (one per GPU).

A stage run as ``torchrun --nproc_per_node N -m pipeline <stage> ...`` finds WORLD_SIZE,
RANK and LOCAL_RANK in its environment; a plain ``python -m pipeline`` run is a world of
one and none of this costs anything. Each rank takes its shard of every global batch, the
model is wrapped in DistributedDataParallel (gradients averaged) and its BatchNorm layers
normalise over the global batch, so N processes follow the one-process trajectory (up to
float rounding; random draws inside the network, such as drop-path masks, come from each
rank's own stream).
Rank 0 alone logs and writes artifacts.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

RANK_SEED_STRIDE = 100_003  # ranks > 0 draw their own drop-path masks


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def all_gather_object(self, value: Any) -> list[Any]:
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def seed(self, seed: int) -> int:
        """This rank's seed of a run seeded ``seed`` (rank 0's is ``seed``)."""
        return seed + RANK_SEED_STRIDE * self.rank


def start(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (if any); returns the world and this rank's
    device (``cuda:LOCAL_RANK`` when the configured device is CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World(), device
    world = World(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return world, device


def stop(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


class CrossProcessBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the global batch for CPU processes (gloo), which torch's
    SyncBatchNorm has no kernel for: the batch mean and variance over all ranks come
    from two autograd-aware all-reduces (a two-pass variance, as exact as one process's).
    In eval mode, or in a world of one, it is a plain BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        local_count = x.new_tensor([x.numel() // x.size(1)])
        totals = dist_nn.all_reduce(torch.cat([x.sum(dims), local_count]))
        count = totals[-1]
        mean = totals[:-1] / count
        centred = x - mean.view(shape)
        var = dist_nn.all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / (count - 1), momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer normalising over the global batch: torch's SyncBatchNorm on
    GPUs, :class:`CrossProcessBatchNorm` on CPUs. Weights and statistics are kept."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if type(module) is nn.BatchNorm2d:
        converted = CrossProcessBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        return converted.train(module.training)
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child, device))
    return module


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The model to train: itself in a world of one, else with global-batch BatchNorm
    inside DDP (which also broadcasts rank 0's initial weights and buffers)."""
    if not world.distributed:
        return model
    model = convert_batchnorm(model, device)
    device_ids = [device.index] if device.type == "cuda" else None
    # BN statistics are global, hence equal on every rank: no buffer sync per forward.
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
