"""Pieces shared by the training loops (search, retrain): seeds, evaluation, resume."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline import artifacts, runtime
from pipeline.data import BatchLoader


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Seed of one epoch's data stream: a resumed run replays exactly the same batches."""
    return (seed * 1_000_003 + epoch) * 4 + stream


@torch.no_grad()
def evaluate(model, loader: BatchLoader, forward_kwargs: dict, device, amp: str, bn: str = "running") -> tuple[float, float]:
    """Mean loss and accuracy (percent) over the loader under no_grad.

    ``bn="running"`` evaluates in eval mode (BN running statistics, as DARTS does);
    ``bn="batch"`` normalises with each batch's statistics (as DARTS-PT's reference does),
    which is meaningful before the running statistics settle; the model's buffers are
    left exactly as they were.
    """
    was_training = model.training
    saved = {name: b.clone() for name, b in model.named_buffers()} if bn == "batch" else {}
    model.train(bn == "batch")
    total_loss, correct = 0.0, 0
    try:
        for x, y in runtime.progress(loader.epoch(seed=0), desc="evaluate", total=len(loader)):
            with runtime.autocast(device, amp):
                logits = model(x, **forward_kwargs)
            logits = logits[0] if isinstance(logits, tuple) else logits
            total_loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
            correct += (logits.argmax(dim=1) == y).sum().item()
    finally:
        for name, buffer in model.named_buffers():
            if name in saved:
                buffer.copy_(saved[name])
        model.train(was_training)
    return total_loss / loader.num_samples, 100.0 * correct / loader.num_samples


def resume_key(params: dict[str, Any], data_path: str | Path, **inputs: Any) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the parameters and the exact inputs."""
    return {"params": params, "data_sha256": artifacts.sha256_file(data_path), **inputs}


def load_resume_state(path: Path, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The last checkpoint if it was made with the same parameters and inputs, else None."""
    if not path.exists():
        return None
    state = artifacts.load_checkpoint(path, kind, map_location="cpu")
    if state["provenance"].get("resume_key") != key:
        runtime.log(f"{path} was made with other parameters or inputs; starting afresh")
        return None
    runtime.log(f"resuming from {path} after epoch {state['epoch']}")
    return state


def training_state(epoch: int, model, optimizer, scheduler, scaler, history: dict) -> dict[str, Any]:
    """The checkpoint fields every training loop saves (kinds add their own)."""
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": artifacts.rng_state(),
        "history": history,
    }


def restore_training_state(state: dict[str, Any], model, optimizer, scheduler, scaler) -> tuple[dict, int]:
    """Load what ``training_state`` saved; returns (history, completed epochs)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    artifacts.set_rng_state(state["rng"])
    return state["history"], state["epoch"]


def finish(resume_path: Path) -> None:
    """Drop the resume point once the final artifacts exist, so a forced rerun trains anew."""
    resume_path.unlink(missing_ok=True)
    try:
        resume_path.parent.rmdir()
    except OSError:
        pass


# ------------------------------------------------------------------ stop signals (SLURM)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: rerun (or requeue) to resume


class Preempted(Exception):
    """A stop signal arrived; the resume checkpoint is written and the stage should exit."""


_stop: dict[str, int | None] = {"signal": None}


def _request_stop(signum, frame) -> None:
    if _stop["signal"] is not None:
        # A second signal (e.g. the scheduler's final SIGTERM) stops at once; checkpoints
        # are written atomically, so the last complete one is kept.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _stop["signal"] = signum
    runtime.log(f"received {signal.Signals(signum).name}: stopping after this epoch's checkpoint")


@contextlib.contextmanager
def stop_on_signal():
    """While active, SIGTERM/SIGUSR1 (SLURM's time-limit warning or preemption) ask the
    training loops to stop at their next checkpoint (``check_stop``) instead of dying."""
    previous = {sig: signal.signal(sig, _request_stop) for sig in STOP_SIGNALS}
    _stop["signal"] = None
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop["signal"] = None


def check_stop(done: int, total: int, checkpoint: Path) -> None:
    """Called right after the resume checkpoint of epoch ``done`` is written."""
    signum = _stop["signal"]
    if signum is not None and done < total:
        raise Preempted(f"stopped by {signal.Signals(signum).name} after epoch {done}/{total}; {checkpoint} resumes it")
