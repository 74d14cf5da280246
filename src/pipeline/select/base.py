"""What a selection method receives and must return."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class SelectionError(ValueError):
    """A selection that cannot be made as configured; the message says why."""


@dataclass
class SelectionContext:
    space: Any
    checkpoint: dict[str, Any]  # the validated supernet checkpoint
    arch_weights: dict[str, torch.Tensor]  # per cell type (edges, ops), the method's op weights
    data_path: Path
    device: torch.device
    seed: int


class SelectionMethod(ABC):
    OPTIONS: dict[str, dict[str, Any]] = {}
    # True when selecting trains or evaluates the supernet on data (e.g. perturbation-based
    # selection): on a cluster its jobs then go to the GPU partition (pipeline.cluster).
    runs_network = False
    # Search algorithms whose supernets this method can read; None: any. The workflow
    # pairs a search and a selection only when the selection accepts the search.
    SEARCH_ALGORITHMS: tuple[str, ...] | None = None

    @classmethod
    def accepts(cls, search_algorithm: str) -> bool:
        return cls.SEARCH_ALGORITHMS is None or search_algorithm in cls.SEARCH_ALGORITHMS

    def __init__(self, options: dict[str, Any]):
        self.options = options

    @abstractmethod
    def select(self, ctx: SelectionContext) -> dict[str, Any]:
        """Return the genotype's cells in the space's JSON form."""
