"""The NAS-Bench-201 space: one cell type shared by all cells, 4 nodes, 6 edges, 5 ops.

Genotype cells: ``{"cell": {"edges": [{"node": 1, "input": 0, "op": ...}, ...]}}`` with all
6 edges (``none`` allowed: it removes the edge). Text form: the benchmark's string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``. ``layers`` counts cells and the two reduction
blocks, 3N + 2 (17 for the benchmark's N = 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.benchmarks import nb201
from pipeline.spaces import SPACES
from pipeline.spaces.base import Space

if TYPE_CHECKING:
    import torch

    from pipeline.nets.nb201 import NB201SuperNet

NB201_NODES = 4  # the cell's nodes: node 0 is its input, node 3 its output


def cells_per_stage(layers: int) -> int:
    if layers < 5 or (layers - 2) % 3:
        raise ValueError(
            f"the nb201 space needs layers = 3N + 2 (N cells per stage plus 2 reduction blocks), e.g. 17; got {layers}"
        )
    return (layers - 2) // 3


class NB201Space(Space):
    name = "nb201"
    cell_types = ("cell",)
    primitives = nb201.NB201_OPS
    inputs_per_node = None  # every edge stays; 'none' is how a cell drops one
    cell_graph = True
    benchmark = "nb201"

    def edges(self) -> list[tuple[int, int]]:
        return [(node, source) for node in range(1, NB201_NODES) for source in range(node)]

    def candidates(self, cell_type: str) -> list[list[str]]:
        return [list(self.primitives) for _ in self.edges()]

    def arch_shape(self) -> tuple[int, int]:
        return len(self.edges()), len(self.primitives)

    def build_supernet(self, channels: int, layers: int, num_classes: int) -> NB201SuperNet:
        from pipeline.nets.nb201 import NB201SuperNet

        candidates = {"cell": self.candidates("cell")}
        return NB201SuperNet(candidates, channels, cells_per_stage(layers), num_classes)

    def build_network(self, cells: dict, channels: int, layers: int, num_classes: int, auxiliary: bool, setting: str = "cifar"):
        """NB201 networks have no auxiliary head; ``auxiliary`` is accepted and ignored."""
        if setting != "cifar":
            raise ValueError(f"the nb201 space has only the CIFAR-style network, not {setting!r}")
        from pipeline.nets.nb201 import NB201Network

        self.validate_genotype(cells)
        edges = [(e["node"], e["input"], e["op"]) for e in cells["cell"]["edges"]]
        return NB201Network(edges, channels, cells_per_stage(layers), num_classes)

    def parse(self, weights: dict[str, torch.Tensor], exclude_ops: Sequence[str]) -> dict:
        """Argmax per edge over the ops not excluded (all 6 edges kept)."""
        w = weights["cell"].detach().cpu()
        edges = []
        for e, (node, source) in enumerate(self.edges()):
            allowed = [k for k, name in enumerate(self.primitives) if name not in set(exclude_ops)]
            if not allowed:
                raise ValueError(f"exclude_ops {sorted(exclude_ops)} leaves no op on nb201 edge {source}->{node}")
            best = max(allowed, key=lambda k: w[e, k].item())
            edges.append({"node": node, "input": source, "op": self.primitives[best]})
        cells = {"cell": {"edges": edges}}
        self.validate_genotype(cells)
        return cells

    def validate_genotype(self, cells: Any) -> None:
        if not isinstance(cells, dict) or set(cells) != {"cell"}:
            raise ValueError("field 'cells' must have exactly the cell type ['cell'] (nb201)")
        cell = cells["cell"]
        if not isinstance(cell, dict) or not isinstance(cell.get("edges"), list):
            raise ValueError("field 'cells.cell.edges' must be a list")
        found = {}
        for index, edge in enumerate(cell["edges"]):
            where = f"cells.cell.edges[{index}]"
            if not isinstance(edge, dict) or set(edge) != {"node", "input", "op"}:
                raise ValueError(f"field '{where}' must be an object with node, input, op")
            key = (edge["node"], edge["input"])
            if key not in self.edges():
                raise ValueError(f"field '{where}': no edge from node {key[1]} to node {key[0]} in the nb201 cell")
            if edge["op"] not in self.primitives:
                raise ValueError(f"field '{where}': op {edge['op']!r} is not one of {list(self.primitives)}")
            if key in found:
                raise ValueError(f"field '{where}': edge from node {key[1]} to node {key[0]} appears twice")
            found[key] = edge["op"]
        if len(found) != len(self.edges()):
            raise ValueError(f"field 'cells.cell.edges' must list all {len(self.edges())} edges of the nb201 cell")

    def to_text(self, cells: dict) -> str:
        return nb201.format_arch([(e["op"], e["input"], e["node"]) for e in cells["cell"]["edges"]])

    def ground_truth(self, cells: dict, dataset: str) -> dict[str, float] | None:
        """The benchmark's record of ``cells`` trained on ``dataset`` (vendored table):
        ``benchmark_index`` and ``benchmark_test_acc`` (200-epoch test accuracy, percent),
        or None when NAS-Bench-201 has no results for ``dataset``."""
        if dataset not in nb201.DATASETS:
            return None
        result = nb201.lookup(self.to_text(cells))
        return {"benchmark_index": int(result.index), "benchmark_test_acc": float(getattr(result, nb201.DATASETS[dataset][1]))}

    def from_text(self, text: str) -> dict:
        """Parse a pasted NAS-Bench-201 string; malformed ones raise with the expected form."""
        edges = [{"node": node, "input": source, "op": op} for op, source, node in nb201.parse_arch(text)]
        cells = {"cell": {"edges": edges}}
        self.validate_genotype(cells)
        return cells


SPACES.register("nb201")(NB201Space())
