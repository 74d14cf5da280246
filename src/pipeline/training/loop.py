"""The one resumable loop of the long stages: search, retrain, transfer (``EpochLoop``) and
PT selection with its fine-tuning (``ResumableLoop`` over decision steps).

``ResumableLoop`` owns what they share: resuming from ``<out dir>/checkpoint/last.pt``
when its resume key matches, a checkpoint after every unit (epoch or step; atomic,
pipeline.artifacts), stopping at that checkpoint on a stop signal
(pipeline.training.signals), the progress display and the log line. ``EpochLoop`` adds
what every network-training stage saves and restores (network, optimiser, scheduler,
scaler, RNG state, history) and writes the final metrics file and model checkpoint.
What one unit does, what a checkpoint holds beyond that and what the log line says are
collaborators given to the constructor. Each epoch's data order comes from (seed, epoch)
alone (``training.steps.epoch_seed``), so a resumed run ends exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import artifacts, runtime
from pipeline.training.checkpoints import finish, load_resume_state, restore_training_state, training_state
from pipeline.training.distributed import World
from pipeline.training.signals import check_stop

RESUME_FILE = Path("checkpoint") / "last.pt"
METRICS_FILE = "metrics.h5"


@dataclass
class Trained:
    """What an epoch changes and a checkpoint saves of every trained network."""

    model: torch.nn.Module  # may be the DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler


def history_series(history: dict[str, list]) -> dict[str, np.ndarray]:
    """The metrics file's per-epoch series of a history of numbers."""
    return {name: np.asarray(values) for name, values in history.items()}


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


_READ = object()  # the loop reads its resume state itself


class ResumableLoop:
    """``total`` units (``unit``: "epoch", "step") of ``run_unit(index) -> row``,
    checkpointed after each and resumable after a kill.

    - ``name`` begins the progress bar (``"<name> <unit>s"``) and each unit's log line
      (``"<name> <unit> i/n: " + describe(row)``); ``kind`` is the checkpoint kind
      (pipeline.artifacts).
    - ``state(done)``: the checkpoint after ``done`` units (collective under DDP: every rank
      calls it; rank 0 writes); ``restore(state)`` loads one and returns its completed units.
    - ``resume_path`` None: no checkpoints, no resuming, no stop at a signal (a selection
      run without a work folder).
    - ``resumed``: a resume state the caller already read with ``load_resume_state`` (the
      search builds the supernet of the stage its checkpoint is in); by default the loop
      reads it.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        total: int,
        run_unit: Callable[[int], dict[str, Any]],
        state: Callable[[int], dict[str, Any]],
        restore: Callable[[dict[str, Any]], int],
        resume_path: Path | None,
        resume_key: dict[str, Any] | None,
        describe: Callable[[dict[str, Any]], str] = lambda row: "",
        unit: str = "epoch",
        world: World = World(),
        resumed: dict[str, Any] | None | object = _READ,
    ):
        self.name, self.kind, self.total, self.unit = name, kind, total, unit
        self.run_unit, self.state, self.restore, self.describe = run_unit, state, restore, describe
        self.resume_path, self.resume_key, self.world = resume_path, resume_key, world
        self._resumed = resumed
        self.start = 0

    def resume(self) -> int:
        """Load the matching resume checkpoint, if any; returns the units it completed."""
        state = self._resumed
        if state is _READ:
            state = None if self.resume_path is None else load_resume_state(self.resume_path, self.kind, self.resume_key, self.unit)
        self._resumed = None
        if state is not None:
            self.start = self.restore(state)
        return self.start

    def record(self, row: dict[str, Any]) -> None:
        """Keep a finished unit's row (before its checkpoint)."""

    def run(self) -> None:
        """Run the units after ``start`` (call ``resume`` first to continue a checkpoint),
        checkpointing after each. Raises Preempted at a checkpoint when a stop signal
        arrived and units remain."""
        total, unit = self.total, self.unit
        for index in runtime.progress(range(self.start, total), desc=f"{self.name} {unit}s", total=total - self.start, leave=True):
            row = self.run_unit(index)
            self.record(row)
            if self.resume_path is not None:
                state = self.state(index + 1)
                if self.world.is_main:
                    artifacts.save_checkpoint(self.resume_path, self.kind, state)
                self.world.barrier()
            runtime.log(f"{self.name} {unit} {index + 1}/{total}: {self.describe(row)}")
            if self.resume_path is not None:
                check_stop(index + 1, total, self.resume_path, unit=unit)


class EpochLoop(ResumableLoop):
    """``epochs`` epochs of ``run_epoch(epoch) -> row`` training ``trained``: checkpoints hold
    ``training_state`` (network, optimiser, scheduler, scaler, RNG, history) and
    ``fields(epoch)`` (what a stage adds: method state, network description, provenance),
    which ``restore(state)`` loads back. ``stored(value)`` is how a row's value is kept in
    the history (the search keeps tensors). Under DDP every rank runs the loop; rank 0
    writes the checkpoints and results."""

    def __init__(
        self,
        name: str,
        kind: str,
        epochs: int,
        trained: Trained,
        run_epoch: Callable[[int], dict[str, Any]],
        resume_path: Path,
        resume_key: dict[str, Any],
        fields: Callable[[int], dict[str, Any]] = lambda epoch: {},
        restore: Callable[[dict[str, Any]], None] | None = None,
        describe: Callable[[dict[str, Any]], str] = lambda row: "",
        stored: Callable[[Any], Any] = lambda value: value,
        world: World = World(),
        resumed: dict[str, Any] | None | object = _READ,
    ):
        super().__init__(name, kind, epochs, run_epoch, self.checkpoint, self._restore, resume_path, resume_key, describe,
                         "epoch", world, resumed)
        self.trained, self.fields, self.restore_fields, self.stored = trained, fields, restore, stored
        self.history: dict[str, list] = {}

    def _restore(self, state: dict[str, Any]) -> int:
        t = self.trained
        self.history, epoch = restore_training_state(state, t.model, t.optimizer, t.scheduler, t.scaler, self.world)
        if self.restore_fields is not None:
            self.restore_fields(state)
        return epoch

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        """The state after ``epoch`` epochs. Collective under DDP: call it on every rank."""
        t = self.trained
        return {**training_state(epoch, t.model, t.optimizer, t.scheduler, t.scaler, self.history, self.world), **self.fields(epoch)}

    def record(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            self.history.setdefault(key, []).append(self.stored(value))

    def run(self) -> dict[str, list]:
        """Resume, then train the remaining epochs; returns the history."""
        self.resume()
        super().run()
        return self.history

    def write_results(self, out_dir: Path, metrics: artifacts.Metrics, model_file: str = "model.pt") -> None:
        """The declared outputs, once the loop is complete: rank 0 writes ``metrics.h5`` and
        the final checkpoint ``model_file``, then drops the resume point."""
        final = self.checkpoint(self.total)
        if self.world.is_main:
            artifacts.write_metrics(out_dir / METRICS_FILE, metrics)
            artifacts.save_checkpoint(out_dir / model_file, self.kind, final)
            finish(self.resume_path)
        self.world.barrier()
