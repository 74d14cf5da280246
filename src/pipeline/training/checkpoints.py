"""Resume state of the long loops: the key a checkpoint must match, reading it back (a
corrupt one set aside), the fields every network-training checkpoint holds, and dropping
the resume point once the final artifacts exist. Formats are pipeline.artifacts'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import artifacts, runtime
from pipeline.training.distributed import World, unwrap


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


def load_resume_state(path: Path, kind: str, key: dict[str, Any], unit: str = "epoch") -> dict[str, Any] | None:
    """The last checkpoint if it was made with the same parameters and inputs, else None
    (its ``unit`` field counts the completed units)."""
    state = read_resume_checkpoint(path, kind)
    if state is None:
        return None
    if state["provenance"].get("resume_key") != key:
        runtime.log(f"{path} was made with other parameters or inputs; starting afresh")
        return None
    runtime.log(f"resuming from {path} after {unit} {state[unit]}")
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


def finish(resume_path: Path) -> None:
    """Drop the resume point once the final artifacts exist, so a forced rerun trains anew."""
    resume_path.unlink(missing_ok=True)
    try:
        resume_path.parent.rmdir()
    except OSError:
        pass
