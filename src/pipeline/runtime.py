"""Device, precision, threads, seeding and progress: one code path for CPU and CUDA."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.lazy import np, torch

T = TypeVar("T")


class RuntimeConfigError(UserError, ValueError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeConfigError(f"config key 'runtime.device': {name!r} requested but CUDA is not available")
    if device.type == "cuda":
        check_kernels(device)
    return device


def check_kernels(device: torch.device) -> None:
    """One line, before any work, when the installed torch has no kernels for this GPU (a
    CUDA 13 build on a V100), instead of a CUDA error at the first convolution."""
    from pipeline.gpus import arch_covers

    capability = torch.cuda.get_device_capability(device)
    arch_list = torch.cuda.get_arch_list()
    if arch_list and not arch_covers(arch_list, capability):
        raise RuntimeConfigError(
            f"config key 'runtime.device': {torch.cuda.get_device_name(device)} (compute capability "
            f"{capability[0]}.{capability[1]}) has no kernels in torch {torch.__version__} (built for "
            f"{' '.join(arch_list)}); see README, 'GPU generations'"
        )


def configure(rt: dict, threads: int, seed: int) -> None:
    """Threads for this process and every RNG seeded; CPU results are then repeatable. The
    job's own ``runtime.threads`` wins over the launch's ``threads`` (a scheduler may give
    fewer cores): the count is part of what a CPU job computes."""
    threads = rt.get("threads") or threads
    if threads > 0:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str):
    """Mixed precision on CUDA only; on CPU everything stays fp32 so results are exact."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp == "fp16")


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def is_main_process() -> bool:
    """False in the ranks other than 0 of a torchrun (DDP) job: they stay quiet."""
    return os.environ.get("RANK", "0") == "0"


def progress(iterable: Iterable[T], desc: str, total: int | None = None, leave: bool = False) -> Iterable[T]:
    """A tqdm bar on a terminal; in a batch log (not a TTY) it stays silent."""
    quiet = not sys.stderr.isatty() or not is_main_process()
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=quiet, dynamic_ncols=True)


def log(message: str) -> None:
    """One line for logs (epoch summaries), written past any progress bar; rank 0 only."""
    if is_main_process():
        tqdm.write(message, file=sys.stderr)
