"""Pieces shared by the training loops (search, retrain, transfer): seeds, epochs,
evaluation, resume."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import artifacts, runtime
from pipeline.training.data import BatchLoader
from pipeline.training.distributed import World, unwrap

# criterion(logits, logits_aux or None, labels) -> loss summed over the batch
Criterion = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Seed of one epoch's data stream: a resumed run replays exactly the same batches."""
    return (seed * 1_000_003 + epoch) * 4 + stream


def correct_topk(logits: torch.Tensor, labels: torch.Tensor, topk: Sequence[int]) -> list[torch.Tensor]:
    """Per k, how many labels are among the k highest logits (on the logits' device)."""
    ranked = logits.topk(min(max(topk), logits.size(1)), dim=1).indices
    hits = ranked == labels.view(-1, 1)
    return [hits[:, :k].sum() for k in topk]


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    global_sizes: Sequence[int],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    criterion: Criterion,
    grad_clip: float,
    device: torch.device,
    amp: str,
    world: World = World(),
    after_step: Callable[[], None] | None = None,
    topk: Sequence[int] = (1,),
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``batches`` (this rank's shards of global batches of ``global_sizes``);
    returns the mean loss and top-k accuracies (percent) over all ranks' samples.

    The running sums stay on the device and are read once at the end, so a step never
    waits for the GPU."""
    sums = torch.zeros(1 + len(topk), device=device, dtype=torch.float64)
    count = 0
    steps = zip(batches, global_sizes)
    for (x, y), global_size in runtime.progress(steps, desc=desc, total=len(global_sizes)):
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast(device, amp):
            logits, logits_aux = model(x)
            loss_sum = criterion(logits.float(), None if logits_aux is None else logits_aux.float(), y)
        # DDP averages gradients over ranks; this scale makes the result the gradient of
        # the global batch's mean loss, also when shards differ in size.
        scaler.scale(loss_sum * (world.world_size / global_size)).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            after_step()
        with torch.no_grad():
            sums += torch.stack([loss_sum.detach(), *correct_topk(logits, y, topk)]).double()
        count += len(y)
    return _means(sums, count, world, "train", topk)


@torch.no_grad()
def evaluate_sharded(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp: str,
    world: World = World(),
    topk: Sequence[int] = (1,),
) -> dict[str, float]:
    """Mean cross-entropy and top-k accuracies (percent) over every rank's ``batches``, with
    BN running statistics; ``model`` may be the DDP wrapper (its module is used)."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    sums = torch.zeros(1 + len(topk), device=device, dtype=torch.float64)
    count = 0
    try:
        for x, y in batches:
            with runtime.autocast(device, amp):
                logits = net(x)
            logits = (logits[0] if isinstance(logits, tuple) else logits).float()
            loss = F.cross_entropy(logits, y, reduction="sum")
            sums += torch.stack([loss, *correct_topk(logits, y, topk)]).double()
            count += len(y)
    finally:
        net.train(was_training)
    return _means(sums, count, world, "test", topk)


def _means(sums: torch.Tensor, count: int, world: World, prefix: str, topk: Sequence[int]) -> dict[str, float]:
    """Means over every rank's samples from this rank's device sums and sample count."""
    totals = world.all_reduce_sum(torch.cat([sums, sums.new_tensor([count])])).tolist()
    means = {f"{prefix}_loss": totals[0] / totals[-1]}
    means.update({f"{prefix}_top{k}": 100.0 * v / totals[-1] for k, v in zip(topk, totals[1:-1])})
    return means


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
    sums = torch.zeros(2, device=device, dtype=torch.float64)
    try:
        for x, y in runtime.progress(loader.epoch(seed=0), desc="evaluate", total=len(loader)):
            with runtime.autocast(device, amp):
                logits = model(x, **forward_kwargs)
            logits = (logits[0] if isinstance(logits, tuple) else logits).float()
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(dim=1) == y).sum()]).double()
    finally:
        for name, buffer in model.named_buffers():
            if name in saved:
                buffer.copy_(saved[name])
        model.train(was_training)
    total_loss, correct = sums.tolist()
    return total_loss / loader.num_samples, 100.0 * correct / loader.num_samples


def resume_key(params: dict[str, Any], data_path: str | Path, **inputs: Any) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the parameters and the exact inputs."""
    return {"params": params, "data_sha256": artifacts.sha256_file(data_path), **inputs}


def read_resume_checkpoint(path: Path, kind: str) -> dict[str, Any] | None:
    """The resume checkpoint at ``path``, or None when there is none. One that cannot be read
    (truncated, corrupt, another format) is set aside as ``<name>.corrupt[-N]`` with a
    one-line warning, so the stage starts afresh instead of failing on every rerun."""
    if not path.exists():
        return None
    try:
        return artifacts.load_checkpoint(path, kind, map_location="cpu")
    except artifacts.ArtifactError as exc:
        aside = path.with_name(f"{path.name}.corrupt")
        number = 1
        while aside.exists():
            number += 1
            aside = path.with_name(f"{path.name}.corrupt-{number}")
        path.rename(aside)
        runtime.log(f"warning: {exc}; set aside as {aside.name}, starting afresh")
        return None


def load_resume_state(path: Path, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The last checkpoint if it was made with the same parameters and inputs, else None."""
    state = read_resume_checkpoint(path, kind)
    if state is None:
        return None
    if state["provenance"].get("resume_key") != key:
        runtime.log(f"{path} was made with other parameters or inputs; starting afresh")
        return None
    runtime.log(f"resuming from {path} after epoch {state['epoch']}")
    return state


def training_state(epoch: int, model, optimizer, scheduler, scaler, history: dict, world: World = World()) -> dict[str, Any]:
    """The checkpoint fields every training loop saves (kinds add their own). Collective
    under DDP (every rank's RNG state is gathered): call it on every rank."""
    rng = artifacts.rng_state()
    state = {
        "epoch": epoch,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "history": history,
    }
    if world.distributed:
        state["rng_ranks"] = world.all_gather_object(rng)
    return state


def restore_training_state(state: dict[str, Any], model, optimizer, scheduler, scaler, world: World = World()) -> tuple[dict, int]:
    """Load what ``training_state`` saved; returns (history, completed epochs). Each rank
    gets its own RNG state back when the checkpoint was made by as many ranks."""
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) == world.world_size:
        artifacts.set_rng_state(ranks[world.rank])
    elif world.is_main:
        artifacts.set_rng_state(state["rng"])
        runtime.log(f"checkpoint made by {len(ranks)} process(es), resumed by {world.world_size}: random streams differ from an uninterrupted run")
    return state["history"], state["epoch"]


def record_epoch(kind: str, history: dict[str, list], row: dict[str, Any], state_after: Callable[[], dict], resume_path: Path, world: World) -> None:
    """Append the epoch's row to ``history``, then checkpoint the state that holds it
    (``state_after`` runs on every rank; rank 0 writes)."""
    for key, value in row.items():
        history.setdefault(key, []).append(value)
    state = state_after()
    if world.is_main:
        artifacts.save_checkpoint(resume_path, kind, state)
    world.barrier()


def genotype_origin(genotype: dict, genotype_path: Path) -> dict[str, Any]:
    """What a trained network's summary says of the genotype and the search behind it."""
    gp = genotype["provenance"]
    return {
        "search_method": gp["search_method"],
        "selection_method": gp["selection_method"],
        "search_seconds": gp["search_seconds"],
        "select_seconds": gp["select_seconds"],
        "search_device": gp["search_device"],
        "genotype_sha256": artifacts.sha256_file(genotype_path),
    }


def write_results(kind: str, out_dir: Path, history: dict[str, list], summary: dict, provenance: dict, final_state: dict,
                  resume_path: Path, world: World) -> None:
    """Rank 0 writes ``metrics.h5`` and ``model.pt`` and drops the resume point."""
    if world.is_main:
        series = {name: np.asarray(values) for name, values in history.items()}
        artifacts.write_metrics(out_dir / "metrics.h5", artifacts.Metrics(kind, series, summary, provenance))
        artifacts.save_checkpoint(out_dir / "model.pt", kind, final_state)
        finish(resume_path)
    world.barrier()


def finish(resume_path: Path) -> None:
    """Drop the resume point once the final artifacts exist, so a forced rerun trains anew."""
    resume_path.unlink(missing_ok=True)
    try:
        resume_path.parent.rmdir()
    except OSError:
        pass


# ------------------------------------------------------------------ stop signals (SLURM, Ctrl-C)

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
