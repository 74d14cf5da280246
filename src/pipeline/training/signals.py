"""Stop signals (SLURM's time-limit warning or preemption, Ctrl-C) and the exit codes of a
stage stopped by one: the long loops stop at their next checkpoint and raise Preempted,
which the CLI turns into the exit code (pipeline.cli.main)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import torch

from pipeline import runtime

# SIGTERM/SIGUSR1: SLURM's time-limit warning or preemption; SIGINT: Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: rerun (or requeue) to resume
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C: rerun to resume


class Preempted(Exception):
    """A stop signal arrived; the resume checkpoint is written and the stage should exit
    with ``exit_code``."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.exit_code = INTERRUPTED_EXIT if signum == signal.SIGINT else PREEMPTED_EXIT


_stop: dict[str, int | None] = {"signal": None}


def _request_stop(signum, frame) -> None:
    name = signal.Signals(signum).name
    if _stop["signal"] is not None:
        # A second signal (e.g. the scheduler's final SIGTERM, a second Ctrl-C) stops at
        # once; checkpoints are written atomically, so the last complete one is kept.
        runtime.log(f"received {name} again: stopping now; the last checkpoint resumes")
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _stop["signal"] = signum
    again = " (Ctrl-C again: stop now, losing the work since the last checkpoint)" if signum == signal.SIGINT else ""
    runtime.log(f"received {name}: stopping at the next checkpoint{again}")


@contextlib.contextmanager
def stop_on_signal():
    """While active, SIGTERM/SIGUSR1 (SLURM's time-limit warning or preemption) and SIGINT
    (Ctrl-C) ask the long loops to stop at their next checkpoint (``check_stop``) instead
    of dying."""
    previous = {sig: signal.signal(sig, _request_stop) for sig in STOP_SIGNALS}
    _stop["signal"] = None
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop["signal"] = None


def check_stop(done: int, total: int, checkpoint: Path, unit: str = "epoch") -> None:
    """Called right after the resume checkpoint of ``unit`` ``done`` is written (on every
    rank); raises Preempted when a stop signal arrived and work remains."""
    signum = _stop["signal"]
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        # All ranks stop after the same epoch; a rank that went on would wait forever in
        # the next all-reduce. One tiny all-reduce per epoch.
        nccl = torch.distributed.get_backend() == "nccl"
        flag = torch.tensor([signum or 0], device=torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        signum = int(flag.item()) or None
    if signum is not None and done < total:
        raise Preempted(f"stopped by {signal.Signals(signum).name} after {unit} {done}/{total}; {checkpoint} resumes it", signum)
