"""What every search space declares and provides.

A space's declaration (name, cell types, ops, capability flags) is plain data, readable
without torch: config checks and the workflow's planning ask a space what it is through
these flags instead of testing its class. Building networks imports the network modules
(and torch) only when called.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any


class Space(ABC):
    name: str
    cell_types: tuple[str, ...]  # the genotype's cells ("normal", "reduce"; "cell"; "layers")
    primitives: tuple[str, ...]  # every op any edge may choose
    inputs_per_node: int | None = None  # edges a node keeps after selection; None: no topology to select

    # -- capability flags
    cell_graph = False  # a cell DAG whose every edge chooses one op (DARTS family, nb201): per-edge sampling works
    darts_cells = False  # DARTS-family normal and reduce cells (partial channels, progressive search)
    benchmark: str | None = None  # a tabular benchmark that scores every cell of the space, by name

    @property
    def uniform_edges(self) -> bool:
        """Every edge offers the same ops (``primitives``)."""
        return all(row == list(self.primitives) for kind in self.cell_types for row in self.candidates(kind))

    # -- topology
    @abstractmethod
    def edges(self) -> list[tuple[int, int]]:
        """(node, input) of every edge (or layer) in supernet order."""

    @abstractmethod
    def candidates(self, cell_type: str) -> list[list[str]]:
        """Per edge, the ops it may choose."""

    @abstractmethod
    def arch_shape(self) -> tuple[int, int]:
        """(edges, ops) of one cell type's architecture weights."""

    # -- builders (import torch)
    @abstractmethod
    def build_supernet(self, channels: int, layers: int, num_classes: int, **options: Any):
        """The weight-sharing supernet the search trains."""

    @abstractmethod
    def build_network(self, cells: dict, channels: int, layers: int, num_classes: int, auxiliary: bool, setting: str = "cifar"):
        """The evaluation network of a genotype's ``cells``."""

    # -- genotypes
    @abstractmethod
    def parse(self, weights: dict, exclude_ops: Sequence[str]) -> dict:
        """The genotype's cells that per-cell-type op weights select."""

    @abstractmethod
    def validate_genotype(self, cells: Any) -> None:
        """Raise ValueError naming the field when ``cells`` is not a genotype of this space."""

    @abstractmethod
    def to_text(self, cells: dict) -> str:
        """The space's usual text form of a genotype."""

    @abstractmethod
    def from_text(self, text: str) -> dict:
        """Parse the text form; malformed text raises ValueError with the expected form."""
