"""DARTS-family cell spaces: 2 input nodes, 4 intermediate nodes, every earlier node feeds
every later one (14 edges per cell type), output = concat of the intermediates.

A genotype's cells are JSON: ``{"normal": {"edges": [{"node": 2, "input": 0, "op": ...}],
"concat": [2, 3, 4, 5]}, "reduce": {...}}``; nodes 0 and 1 are the cell inputs. A node
sums any number of incoming edges (DARTS keeps two, SNAS every edge whose op is not
``none``); one (node, input) pair may carry two different ops (UNAS' two branches). The
edges are listed node by node; within a node in the order they were given (the DARTS
parse: strongest first, as the original prints them; texts in input order read as well).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from pipeline.spaces import SPACES
from pipeline.spaces.base import Space

if TYPE_CHECKING:
    import torch

    from pipeline.nets.supernet import SuperNet

CELL_TYPES = ("normal", "reduce")

DARTS_PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class CellSpace(Space):
    steps = 4
    cell_types = CELL_TYPES
    cell_graph = True
    darts_cells = True

    def __init__(
        self,
        name: str,
        primitives: Sequence[str],
        inputs_per_node: int = 2,
        edge_candidates: dict[str, Sequence[Sequence[str]]] | None = None,
    ):
        """``edge_candidates``: per cell type, each edge's own ops (RobustDARTS S1); otherwise
        every edge offers all ``primitives``."""
        self.name = name
        self.primitives = tuple(primitives)
        self.inputs_per_node = inputs_per_node
        self.edge_candidates = edge_candidates
        if edge_candidates is not None:
            for kind in self.cell_types:
                rows = edge_candidates[kind]
                if len(rows) != len(self.edges()) or len({len(row) for row in rows}) != 1:
                    raise ValueError(f"space {name!r}: {kind} needs {len(self.edges())} edges with equally many ops")

    # -- topology
    def edges(self) -> list[tuple[int, int]]:
        """(node, input) of every edge in supernet order: node 2's inputs, then node 3's, ..."""
        return [(node + 2, source) for node in range(self.steps) for source in range(node + 2)]

    def candidates(self, cell_type: str) -> list[list[str]]:
        if self.edge_candidates is not None:
            return [list(row) for row in self.edge_candidates[cell_type]]
        return [list(self.primitives) for _ in self.edges()]

    def arch_shape(self) -> tuple[int, int]:
        return len(self.edges()), len(self.candidates(self.cell_types[0])[0])

    # -- builders
    def build_supernet(self, channels: int, layers: int, num_classes: int, partial_channels: int = 1) -> SuperNet:
        """``partial_channels`` K > 1: PC-DARTS mixed ops (1/K of the channels through the ops)."""
        from pipeline.nets.supernet import SuperNet

        candidates = {kind: self.candidates(kind) for kind in self.cell_types}
        return SuperNet(candidates, channels, num_classes, layers, steps=self.steps, partial_channels=partial_channels)

    def build_network(self, cells: dict, channels: int, layers: int, num_classes: int, auxiliary: bool, setting: str = "cifar"):
        """The evaluation network: ``setting`` 'cifar' (32x32 stem) or 'imagenet' (stride-8 stem)."""
        self.validate_genotype(cells)
        specs = {
            kind: {
                "edges": [(e["node"], e["input"], e["op"]) for e in cells[kind]["edges"]],
                "concat": cells[kind]["concat"],
            }
            for kind in self.cell_types
        }
        from pipeline.nets.cifar import NetworkCIFAR
        from pipeline.nets.imagenet import NetworkImageNet

        networks = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}
        if setting not in networks:
            raise ValueError(f"unknown network setting {setting!r}; known: {', '.join(networks)}")
        return networks[setting](specs, channels, num_classes, layers, auxiliary)

    # -- genotypes
    def parse(self, weights: dict[str, torch.Tensor], exclude_ops: Sequence[str] = ("none",)) -> dict:
        """The DARTS parse: per edge the strongest op not excluded (never ``none``; ties: the
        earlier op); per node the ``inputs_per_node`` incoming edges whose strongest op weighs
        most, listed strongest first (ties: the lower input) as DARTS' genotype() lists them,
        so ``to_text`` prints what the original prints for the same weights."""
        excluded = set(exclude_ops) | {"none"}
        edge_list = self.edges()
        cells = {}
        for kind in self.cell_types:
            w = weights[kind].detach().cpu()
            best = []  # per edge: (weight, op) of its strongest allowed op
            for e, names in enumerate(self.candidates(kind)):
                allowed = [(w[e, k].item(), name) for k, name in enumerate(names) if name not in excluded]
                if not allowed:
                    raise ValueError(f"exclude_ops {sorted(excluded)} leaves no op on edge {edge_list[e]} of the {kind} cell")
                best.append(max(allowed, key=lambda item: item[0]))
            by_node: dict[int, list[int]] = {}
            for e, (node, _) in enumerate(edge_list):
                by_node.setdefault(node, []).append(e)
            edges = []
            for node, edge_ids in sorted(by_node.items()):
                strongest = sorted(edge_ids, key=lambda e: -best[e][0])[: self.inputs_per_node]
                for e in strongest:
                    edges.append({"node": node, "input": edge_list[e][1], "op": best[e][1]})
            cells[kind] = {"edges": edges, "concat": sorted(by_node)}
        self.validate_genotype(cells)
        return cells

    def validate_genotype(self, cells: Any) -> None:
        if not isinstance(cells, dict) or set(cells) != set(self.cell_types):
            raise ValueError(f"field 'cells' must have exactly the cell types {list(self.cell_types)}")
        valid_edges = set(self.edges())
        for kind in self.cell_types:
            cell = cells[kind]
            if not isinstance(cell, dict) or not isinstance(cell.get("edges"), list):
                raise ValueError(f"field 'cells.{kind}.edges' must be a list")
            allowed = {(node, source): set(ops) for (node, source), ops in zip(self.edges(), self.candidates(kind))}
            seen, keys = set(), set()
            for index, edge in enumerate(cell["edges"]):
                where = f"cells.{kind}.edges[{index}]"
                if not isinstance(edge, dict) or set(edge) != {"node", "input", "op"}:
                    raise ValueError(f"field '{where}' must be an object with node, input, op")
                if not all(isinstance(edge[k], int) and not isinstance(edge[k], bool) for k in ("node", "input")):
                    raise ValueError(f"field '{where}': node and input must be integers")
                key = (edge["node"], edge["input"])
                if key not in valid_edges:
                    raise ValueError(f"field '{where}': no edge from node {key[1]} to node {key[0]} in this cell")
                if not isinstance(edge["op"], str) or edge["op"] not in allowed[key] or edge["op"] == "none":
                    raise ValueError(f"field '{where}': op {edge['op']!r} is not a candidate of space {self.name!r}")
                if (*key, edge["op"]) in seen:
                    raise ValueError(f"field '{where}': edge from node {key[1]} to node {key[0]} with op {edge['op']!r} appears twice")
                seen.add((*key, edge["op"]))
                keys.add(key)
            nodes = {edge["node"] for edge in cell["edges"]}
            for node, source in keys:
                if source >= 2 and source not in nodes:
                    raise ValueError(f"field 'cells.{kind}.edges': node {node} reads node {source}, which has no inputs")
            concat = cell.get("concat")
            if not isinstance(concat, list) or not concat or not set(concat) <= nodes | {0, 1}:
                raise ValueError(f"field 'cells.{kind}.concat' must list nodes that have incoming edges")

    def cells_from_pairs(self, pairs: dict[str, Sequence[tuple[str, int]]], concat: dict[str, Sequence[int]]):
        """DARTS' (op, input) pair lists, ``inputs_per_node`` pairs per node in node order."""
        cells = {}
        for kind in self.cell_types:
            edges = [
                {"node": 2 + index // self.inputs_per_node, "input": int(source), "op": op}
                for index, (op, source) in enumerate(pairs[kind])
            ]
            cells[kind] = {"edges": edges, "concat": [int(i) for i in concat[kind]]}
        self.validate_genotype(cells)
        return cells

    def _regular(self, edges: list[dict]) -> bool:
        """``inputs_per_node`` edges per node, in node order: what DARTS' pair lists encode."""
        expected = [2 + index // self.inputs_per_node for index in range(self.steps * self.inputs_per_node)]
        return [e["node"] for e in edges] == expected

    def to_text(self, cells: dict) -> str:
        """The DARTS ``Genotype(...)`` form: (op, input) pairs when every node has
        ``inputs_per_node`` edges listed in node order, else (op, input, node) triples."""
        regular = all(self._regular(cells[kind]["edges"]) for kind in self.cell_types)
        parts = []
        for kind in self.cell_types:
            if regular:
                items = ", ".join(f"({e['op']!r}, {e['input']})" for e in cells[kind]["edges"])
            else:
                items = ", ".join(f"({e['op']!r}, {e['input']}, {e['node']})" for e in cells[kind]["edges"])
            parts.append(f"{kind}=[{items}], {kind}_concat={cells[kind]['concat']}")
        return f"Genotype({', '.join(parts)})"

    def from_text(self, text: str) -> dict:
        """Parse a pasted ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)``
        or the (op, input, node) triple form that ``to_text`` writes for irregular cells."""
        expected = "Genotype(normal=[('op', input) or ('op', input, node), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[...])"
        try:
            call = ast.parse(text.strip(), mode="eval").body
            if not isinstance(call, ast.Call):
                raise ValueError
            fields = {kw.arg: _literal(kw.value) for kw in call.keywords}
            items = {kind: [tuple(item) for item in fields[kind]] for kind in self.cell_types}
            concat = {kind: [int(i) for i in fields[f"{kind}_concat"]] for kind in self.cell_types}
            lengths = {len(item) for kind in self.cell_types for item in items[kind]}
            if lengths <= {2}:
                pairs = {kind: [(str(op), int(src)) for op, src in items[kind]] for kind in self.cell_types}
            elif lengths == {3}:
                pairs = None
                edges = {kind: [{"node": int(n), "input": int(src), "op": str(op)} for op, src, n in items[kind]] for kind in self.cell_types}
            else:
                raise ValueError
        except (SyntaxError, ValueError, KeyError, TypeError):
            raise ValueError(f"not a DARTS genotype string; expected {expected}") from None
        if pairs is not None:
            return self.cells_from_pairs(pairs, concat)
        cells = {kind: {"edges": edges[kind], "concat": concat[kind]} for kind in self.cell_types}
        self.validate_genotype(cells)
        return cells


def _literal(node: ast.expr) -> Any:
    """A literal, or ``range(a, b)`` as DARTS' own genotypes write concat."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        return list(range(*[ast.literal_eval(arg) for arg in node.args]))
    return ast.literal_eval(node)


SPACES.register("darts")(CellSpace("darts", DARTS_PRIMITIVES))
# DARTS-PT's "s5": the DARTS ops without `none`.
SPACES.register("darts_nonone")(CellSpace("darts_nonone", DARTS_PRIMITIVES[1:]))
# UNAS (Vahdat et al., 2020): no `none`, with sep_conv_7x7; its ImageNet search uses the first five.
UNAS_PRIMITIVES = (
    "skip_connect",
    "sep_conv_3x3",
    "max_pool_3x3",
    "dil_conv_3x3",
    "sep_conv_5x5",
    "avg_pool_3x3",
    "sep_conv_7x7",
)
SPACES.register("unas")(CellSpace("unas", UNAS_PRIMITIVES))
SPACES.register("unas_imagenet")(CellSpace("unas_imagenet", UNAS_PRIMITIVES[:5]))

def _s1_table() -> dict[str, list[list[str]]]:
    """S1's per-edge op pairs, vendored as data with its source (spaces/data/robustdarts_s1.json)."""
    table = json.loads((resources.files("pipeline") / "spaces" / "data" / "robustdarts_s1.json").read_text())
    return {kind: table[kind] for kind in CELL_TYPES}


_S1 = _s1_table()
SPACES.register("s1")(
    CellSpace("s1", sorted({op for rows in _S1.values() for row in rows for op in row}), edge_candidates=_S1)
)
# RobustDARTS (Zela et al., 2020) S2-S4; S4's `noise` returns N(0, 1) whatever its input.
SPACES.register("s2")(CellSpace("s2", ("skip_connect", "sep_conv_3x3")))
SPACES.register("s3")(CellSpace("s3", ("none", "skip_connect", "sep_conv_3x3")))
SPACES.register("s4")(CellSpace("s4", ("noise", "sep_conv_3x3")))
