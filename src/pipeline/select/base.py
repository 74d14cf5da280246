"""What a selection method receives and must return."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError
from pipeline.lazy import torch

if TYPE_CHECKING:
    from pipeline import artifacts

# Where a resumable method keeps its resume point, relative to ctx.work_dir.
RESUME_FILE = Path("checkpoint") / "last.pt"


class SelectionError(UserError, ValueError):
    """A selection that cannot be made as configured; the message says why."""


class DecisionLog:
    """The decision record a method fills while it selects (written as decisions.h5).

    A decision is one choice (an edge's op, an edge to drop, an architecture among
    samples); its candidates are what was compared, each with a ``score`` (what
    ``criterion`` names: validation accuracy or loss with the candidate removed, an
    architecture weight, a proxy value) and, where it has one, its architecture weight.
    """

    def __init__(self) -> None:
        self.decisions: list[dict[str, Any]] = []
        self.candidates: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}

    def add(
        self,
        *,
        step: int,
        cell_type: str,
        kind: str,
        criterion: str,
        action: str,
        choice: str,
        candidates: Sequence[tuple[str, int, float, float]],
        node: int = -1,
        input: int = -1,
        edge: int = -1,
    ) -> int:
        """Append a decision; ``candidates`` are (name, input node or -1, score, weight or nan)."""
        index = len(self.decisions)
        self.decisions.append(
            {
                "step": step,
                "cell_type": cell_type,
                "kind": kind,
                "node": node,
                "input": input,
                "edge": edge,
                "criterion": criterion,
                "action": action,
                "choice": choice,
                "valid_acc_after": math.nan,
                "valid_loss_after": math.nan,
            }
        )
        for name, source, score, weight in candidates:
            self.candidates.append(
                {"decision": index, "name": name, "input": int(source), "score": float(score), "weight": float(weight)}
            )
        return index

    def after_step(self, step: int, valid_acc: float, valid_loss: float) -> None:
        """The supernet's validation accuracy and loss once ``step``'s decisions are made (and tuned)."""
        for row in self.decisions:
            if row["step"] == step:
                row["valid_acc_after"], row["valid_loss_after"] = float(valid_acc), float(valid_loss)

    # -- resume (one JSON string: pickling thousands of small objects is slow)
    def state(self) -> str:
        return json.dumps({"decisions": self.decisions, "candidates": self.candidates, "summary": self.summary})

    def load_state(self, state: str) -> None:
        loaded = json.loads(state)
        self.decisions, self.candidates, self.summary = loaded["decisions"], loaded["candidates"], loaded["summary"]

    def to_artifact(self, method: str, algorithm: str, provenance: dict[str, Any]) -> artifacts.Decisions:
        from pipeline import artifacts

        def table(rows: list[dict], columns: dict[str, str]) -> dict[str, list]:
            return {name: [row[name] for row in rows] for name in columns}

        return artifacts.Decisions(
            method=method,
            algorithm=algorithm,
            decisions=table(self.decisions, artifacts.DECISION_COLUMNS),
            candidates=table(self.candidates, artifacts.CANDIDATE_COLUMNS),
            summary=dict(self.summary),
            provenance=provenance,
        )


@dataclass
class SelectionContext:
    space: Any
    checkpoint: dict[str, Any]  # the validated supernet checkpoint
    arch_weights: dict[str, torch.Tensor]  # per cell type (edges, ops), the method's op weights
    data_path: Path
    device: torch.device
    seed: int
    runtime: dict[str, Any] = field(default_factory=lambda: {"amp": "none", "channels_last": False})
    supernet_path: Path | None = None  # named in error messages
    work_dir: Path | None = None  # where a long selection keeps its resume point
    resume_key: dict[str, Any] | None = None  # what a resume point must match
    record: DecisionLog = field(default_factory=DecisionLog)

    @property
    def search_params(self) -> dict[str, Any]:
        return self.checkpoint["provenance"]["params"]

    @property
    def amp(self) -> str:
        return self.runtime.get("amp", "none")


class SelectionMethod(ABC):
    OPTIONS: dict[str, dict[str, Any]] = {}
    # True when selecting trains or evaluates the supernet on data (e.g. perturbation-based
    # selection): on a cluster its jobs then go to the GPU partition (pipeline.planning.cluster).
    runs_network = False
    # Search algorithms whose supernets this method can read; None: any. The workflow
    # pairs a search and a selection only when the selection accepts the search.
    SEARCH_ALGORITHMS: tuple[str, ...] | None = None

    @classmethod
    def accepts(cls, search_algorithm: str) -> bool:
        return cls.SEARCH_ALGORITHMS is None or search_algorithm in cls.SEARCH_ALGORITHMS
    resumable = False  # keeps a resume point in ctx.work_dir (then run_select gives it ctx.resume_key)

    def __init__(self, options: dict[str, Any]):
        self.options = options

    @abstractmethod
    def select(self, ctx: SelectionContext) -> dict[str, Any]:
        """Return the genotype's cells in the space's JSON form; explain the choices in ``ctx.record``."""
