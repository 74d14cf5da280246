"""Pictures of genotypes: cells as graphs and layer sequences as strips.

A genotype's cells become :class:`CellGraph` objects (nodes with a role, edges with an
op); the picture is drawn from that structure, by graphviz's ``dot`` where the binary is on
PATH and by matplotlib otherwise, so a picture renders on every machine
(``renderer="auto"``; force one with ``"graphviz"`` or ``"matplotlib"``).

How a cell's JSON is read (every space's genotype uses ``{"edges": [{"node", "input",
"op"}], "concat"?}`` per cell type):

- Nodes below the smallest ``node`` that has incoming edges are the cell's inputs.
- With ``concat`` (DARTS-style cells) the concatenated nodes feed an output node; inputs are
  labelled ``c_{k-2}, c_{k-1}`` and intermediate nodes ``0, 1, ...`` as in the DARTS paper.
- Without ``concat`` (NAS-Bench-201) the last node is the output; nodes keep their numbers
  and ``none`` edges are left out (``none`` removes the edge).
- Edges forming a chain (node i reads node i - 1 only, ProxylessNAS layers) become a
  strip: one box per layer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts import write_bytes_atomic
from pipeline.errors import UserError

RENDERERS = ("auto", "graphviz", "matplotlib")
FORMATS = ("svg", "png", "pdf")

ROLE_COLORS = {"input": "#b4e0b4", "intermediate": "#b9d7f0", "output": "#f3e3a0", "layer": "#dddddd"}
# Op families share a hue so cells of different spaces read alike.
OP_COLORS = {
    "none": "#bbbbbb",
    "skip_connect": "#555555",
    "max_pool_3x3": "#8c564b",
    "avg_pool_3x3": "#c49c94",
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#17becf",
    "sep_conv_7x7": "#0b4f7a",
    "dil_conv_3x3": "#d62728",
    "dil_conv_5x5": "#ff7f0e",
    "nor_conv_1x1": "#9467bd",
    "nor_conv_3x3": "#2ca02c",
    "noise": "#e377c2",
    "mbconv3_k3": "#c6dbef",
    "mbconv3_k5": "#9ecae1",
    "mbconv3_k7": "#6baed6",
    "mbconv6_k3": "#fdae6b",
    "mbconv6_k5": "#fd8d3c",
    "mbconv6_k7": "#e6550d",
}
_PALETTE = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


class PictureError(UserError, ValueError):
    """A genotype that cannot be drawn or a picture that cannot be written; names the culprit."""


def op_color(op: str) -> str:
    """A fixed colour per op name; unknown ops get a stable colour from their name."""
    return OP_COLORS.get(op) or _PALETTE[zlib.crc32(op.encode()) % len(_PALETTE)]


# ---------------------------------------------------------------- graph structure


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    role: str  # input | intermediate | output | layer
    op: str | None = None  # strips: the layer's op


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    op: str | None  # None: an unlabelled connection (concat into the output, strip order)


@dataclass
class CellGraph:
    name: str
    nodes: list[Node]
    edges: list[Edge]
    strip: bool = False
    notes: list[str] = field(default_factory=list)

    def caption(self) -> str:
        if self.strip:
            text = f"{self.name} ({len(self.nodes)} layers)"
        else:
            text = self.name if self.name.endswith("cell") else f"{self.name} cell"
        return text + "".join(f"; {note}" for note in self.notes)

    def node(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.id == node_id)

    def edge_list(self) -> list[tuple[str, str, str | None]]:
        """(source label, target label, op) of every edge, in drawing order."""
        labels = {node.id: node.label for node in self.nodes}
        return [(labels[e.source], labels[e.target], e.op) for e in self.edges]


def _edges_of(name: str, cell: Any) -> list[dict]:
    edges = cell.get("edges") if isinstance(cell, Mapping) else None
    if not isinstance(edges, list) or not edges:
        raise PictureError(f"cell {name!r}: field 'edges' must be a non-empty list")
    for index, edge in enumerate(edges):
        if not isinstance(edge, Mapping) or not {"node", "input", "op"} <= set(edge):
            raise PictureError(f"cell {name!r}: edges[{index}] must have node, input and op")
        if not all(isinstance(edge[key], int) for key in ("node", "input")) or not isinstance(edge["op"], str):
            raise PictureError(f"cell {name!r}: edges[{index}] needs integer node and input and a string op")
    return edges


def _is_chain(edges: Sequence[Mapping]) -> bool:
    nodes = sorted(edge["node"] for edge in edges)
    return (
        len(edges) > 1
        and all(edge["node"] == edge["input"] + 1 for edge in edges)
        and nodes == list(range(nodes[0], nodes[0] + len(nodes)))
    )


def strip_graph(name: str, ops: Sequence[str]) -> CellGraph:
    """A layer strip: one node per layer carrying its op, linked in order."""
    if not ops or not all(isinstance(op, str) for op in ops):
        raise PictureError(f"cell {name!r}: a layer strip needs a non-empty list of op names")
    nodes = [Node(str(i + 1), op, "layer", op) for i, op in enumerate(ops)]
    edges = [Edge(str(i), str(i + 1), None) for i in range(1, len(ops))]
    return CellGraph(name, nodes, edges, strip=True)


def cell_graph(name: str, cell: Any) -> CellGraph:
    """The graph of one cell type's JSON (see the module docstring for the rules)."""
    edges = _edges_of(name, cell)
    concat = cell.get("concat")
    if concat is None and _is_chain(edges):
        return strip_graph(name, [edge["op"] for edge in sorted(edges, key=lambda e: e["node"])])
    targets = sorted({edge["node"] for edge in edges})
    first, last = targets[0], targets[-1]
    if first < 1:
        raise PictureError(f"cell {name!r}: node 0 is an input and cannot have incoming edges")
    if concat is not None:
        if not isinstance(concat, list) or not all(isinstance(n, int) and 0 <= n <= last for n in concat):
            raise PictureError(f"cell {name!r}: field 'concat' must list nodes of the cell")
        labels = {n: f"c_{{k-{first - n}}}" for n in range(first)}
        labels.update({n: str(n - first) for n in range(first, last + 1)})
    else:
        labels = {n: str(n) for n in range(last + 1)}
    nodes = []
    for n in range(last + 1):
        role = "input" if n < first else "output" if (concat is None and n == last) else "intermediate"
        nodes.append(Node(str(n), labels[n], role))
    live = sorted((edge for edge in edges if edge["op"] != "none"), key=lambda e: (e["node"], e["input"]))
    graph_edges = [Edge(str(edge["input"]), str(edge["node"]), edge["op"]) for edge in live]
    graph = CellGraph(name, nodes, graph_edges)
    if concat is not None:
        graph.nodes.append(Node("out", "c_{k}", "output"))
        graph.edges.extend(Edge(str(n), "out", None) for n in concat)
    dropped = len(edges) - len(live)
    if dropped:
        graph.notes.append(f"{dropped} edge{'s' if dropped > 1 else ''} with op none left out")
    return graph


def genotype_graphs(genotype: Mapping) -> list[CellGraph]:
    """One graph per cell type of a genotype record (``{"space", "cells": {...}}``, the
    genotype JSON of docs/artifacts.md)."""
    cells = genotype.get("cells")
    if not isinstance(cells, Mapping) or not cells:
        raise PictureError("genotype: field 'cells' must map cell types to cells")
    return [cell_graph(str(name), cell) for name, cell in cells.items()]


# ---------------------------------------------------------------- graphviz


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_id(graph: CellGraph, node_id: str) -> str:
    return _quote(f"{re.sub(r'[^A-Za-z0-9_]', '_', graph.name)}_{node_id}")


def dot_source(graphs: Sequence[CellGraph], title: str | None = None) -> str:
    """The DOT text of the picture: one cluster per cell, left to right."""
    lines = [
        "digraph genotype {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=16, nodesep=0.3, ranksep=0.6'
        + (f", label={_quote(title)}, labelloc=t" if title else "")
        + "];",
        '  node [shape=box, style="filled,rounded", fontname="Helvetica", fontsize=14, penwidth=1.2];',
        '  edge [fontname="Helvetica", fontsize=11, penwidth=1.4, arrowsize=0.7];',
    ]
    # dot stacks clusters of a left-to-right graph bottom-up: emit the last cell first.
    for index, graph in reversed(list(enumerate(graphs))):
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f"    label={_quote(graph.caption())}; style=rounded; color=\"#999999\";")
        for node in graph.nodes:
            fill = op_color(node.op) if node.op else ROLE_COLORS[node.role]
            font = "white" if node.op and _is_dark(fill) else "black"
            lines.append(f"    {_dot_id(graph, node.id)} [label={_quote(node.label)}, fillcolor={_quote(fill)}, fontcolor={_quote(font)}];")
        for edge in graph.edges:
            attrs = "color=\"#888888\"" if edge.op is None else (
                f"label={_quote(edge.op)}, color={_quote(op_color(edge.op))}, fontcolor={_quote(op_color(edge.op))}"
            )
            lines.append(f"    {_dot_id(graph, edge.source)} -> {_dot_id(graph, edge.target)} [{attrs}];")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _is_dark(color: str) -> bool:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b < 140


def _render_dot(source: str, fmt: str) -> bytes:
    dot = shutil.which("dot")
    if dot is None:
        raise PictureError("renderer 'graphviz': the dot binary is not on PATH (install graphviz or use renderer 'matplotlib')")
    result = subprocess.run([dot, f"-T{fmt}"], input=source.encode(), capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise PictureError(f"dot failed: {message[0] if message else 'exit status ' + str(result.returncode)}")
    return result.stdout


# ---------------------------------------------------------------- matplotlib


COLUMN_GAP, ROW_GAP = 4.5, 1.6


def layout(graph: CellGraph) -> dict[str, tuple[float, float]]:
    """Node positions: columns by longest path from the inputs, rows spread evenly."""
    if graph.strip:
        return {node.id: (float(i), 0.0) for i, node in enumerate(graph.nodes)}
    incoming: dict[str, list[str]] = {node.id: [] for node in graph.nodes}
    for edge in graph.edges:
        incoming[edge.target].append(edge.source)
    depth: dict[str, int] = {}

    def column(node_id: str) -> int:
        if node_id not in depth:
            node = graph.node(node_id)
            sources = incoming[node_id]
            depth[node_id] = 0 if node.role == "input" else 1 + max((column(s) for s in sources), default=0)
        return depth[node_id]

    for node in graph.nodes:
        column(node.id)
    columns: dict[int, list[str]] = {}
    for node in graph.nodes:
        columns.setdefault(depth[node.id], []).append(node.id)
    positions: dict[str, tuple[float, float]] = {}
    tallest = max(len(ids) for ids in columns.values())
    for x in sorted(columns):
        ids = columns[x]
        if x > 0:  # order by the mean height of the inputs: fewer crossings
            ids.sort(key=lambda i: -sum(positions[s][1] for s in incoming[i]) / max(1, len(incoming[i])))
        # Every column spans the height of the fullest one, so edges fan out evenly.
        gap = ROW_GAP * (tallest - 1) / (len(ids) - 1) if len(ids) > 1 else 0.0
        for row, node_id in enumerate(ids):
            positions[node_id] = (COLUMN_GAP * x, gap * ((len(ids) - 1) / 2 - row))
    return positions


def _draw_cell(ax, graph: CellGraph, positions: dict[str, tuple[float, float]]) -> None:
    from matplotlib.patches import FancyArrowPatch

    placed: list[tuple[float, float, float, float]] = [  # label boxes so far, nodes first
        (x - 0.6, y - 0.3, x + 0.6, y + 0.3) for x, y in positions.values()
    ]
    for index, edge in enumerate(graph.edges):
        (x1, y1), (x2, y2) = positions[edge.source], positions[edge.target]
        # Edges that skip a column bow outwards, away from the nodes in between.
        outward = -1 if y1 + y2 > 1e-9 or (abs(y1 + y2) <= 1e-9 and index % 2 == 0) else 1
        rad = 0.0 if x2 - x1 <= COLUMN_GAP + 1e-9 else 0.15 * outward
        color = "#888888" if edge.op is None else op_color(edge.op)
        ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                     mutation_scale=12, color=color, lw=1.4, shrinkA=18, shrinkB=18))
        if edge.op is not None:
            cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)  # arc3's control point
            half_w, half_h = 0.06 * len(edge.op) + 0.1, 0.16

            def point(t: float, x1=x1, y1=y1, x2=x2, y2=y2, cx=cx, cy=cy) -> tuple[float, float]:
                a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t**2
                return a * x1 + b * cx + c * x2, a * y1 + b * cy + c * y2

            def overlap(t: float, half_w=half_w, half_h=half_h) -> float:
                px, py = point(t)
                return sum(
                    max(0.0, min(px + half_w, bx2) - max(px - half_w, bx1)) * max(0.0, min(py + half_h, by2) - max(py - half_h, by1))
                    for bx1, by1, bx2, by2 in placed
                )

            # The spot along the edge where the label covers the least of what is drawn.
            t = min((0.5, 0.4, 0.6, 0.3, 0.7, 0.25, 0.75), key=overlap)
            mx, my = point(t)
            placed.append((mx - half_w, my - half_h, mx + half_w, my + half_h))
            ax.text(mx, my, edge.op, fontsize=7, color=color, ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85})
    for node in graph.nodes:
        x, y = positions[node.id]
        ax.text(x, y, node.label, fontsize=9, ha="center", va="center", zorder=3,
                bbox={"boxstyle": "round,pad=0.35", "fc": ROLE_COLORS[node.role], "ec": "#444444"})


def _draw_strip(ax, graph: CellGraph, positions: dict[str, tuple[float, float]]) -> None:
    from matplotlib.patches import FancyBboxPatch

    for node in graph.nodes:
        x, _ = positions[node.id]
        kernel = re.search(r"k(\d+)", node.op or "")
        height = 0.35 + 0.08 * int(kernel.group(1)) if kernel else 0.3
        fill = op_color(node.op or "")
        ax.add_patch(FancyBboxPatch((x - 0.4, -height / 2), 0.8, height, boxstyle="round,pad=0.02", fc=fill, ec="#444444"))
        ax.text(x, -0.75, node.op, rotation=90, ha="center", va="top", fontsize=7)
        ax.text(x, 0.7, node.id, ha="center", va="bottom", fontsize=7, color="#555555")


def draw_matplotlib(graphs: Sequence[CellGraph], title: str | None = None):
    """A matplotlib figure with one panel per cell (or strip), stacked, at a common scale."""
    from pipeline.views.figures import new_figure

    inch = 0.4  # per layout unit
    panels = []
    for graph in graphs:
        positions = layout(graph)
        xs, ys = [p[0] for p in positions.values()], [p[1] for p in positions.values()]
        if graph.strip:
            box = (min(xs) - 0.8, max(xs) + 0.8, -2.6, 1.1)
        else:
            box = (min(xs) - 1.0, max(xs) + 1.0, min(ys) - 1.0, max(ys) + 1.0)
        panels.append((graph, positions, box))
    width = max(box[1] - box[0] for _, _, box in panels) * inch
    heights = [(box[3] - box[2]) * inch + 0.35 for _, _, box in panels]
    fig = new_figure(figsize=(max(width, 4.0), sum(heights) + (0.4 if title else 0.0)))
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (graph, positions, box) in zip(axes, panels):
        (_draw_strip if graph.strip else _draw_cell)(ax, graph, positions)
        ax.set_xlim(box[0], box[1])
        ax.set_ylim(box[2], box[3])
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(graph.caption(), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# ---------------------------------------------------------------- entry point


def resolve_renderer(renderer: str, graphs: Sequence[CellGraph] = ()) -> str:
    """'auto': dot for cells where it is installed; matplotlib for layer strips (boxes sized
    by kernel, readable at 21 layers, where dot draws one very long row) or without dot."""
    if renderer not in RENDERERS:
        raise PictureError(f"renderer {renderer!r} is not one of {', '.join(RENDERERS)}")
    if renderer == "auto":
        strips_only = bool(graphs) and all(graph.strip for graph in graphs)
        return "graphviz" if shutil.which("dot") and not strips_only else "matplotlib"
    return renderer


def picture_title(genotype: Mapping) -> str:
    prov = genotype.get("provenance") or {}
    parts = [str(genotype.get("space", ""))]
    methods = [prov.get(key) for key in ("search_method", "selection_method") if prov.get(key)]
    if methods:
        parts.append(" + ".join(methods))
    if prov.get("seed") is not None:
        parts.append(f"seed {prov['seed']}")
    return ", ".join(part for part in parts if part)


def render_genotype(genotype: Mapping, out: str | Path, renderer: str = "auto", title: str | None = None) -> str:
    """Draw every cell of ``genotype`` into ``out`` (.svg, .png or .pdf); returns the renderer used."""
    fmt = Path(out).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise PictureError(f"{out}: picture format must be one of {', '.join(FORMATS)} (from the file suffix)")
    graphs = genotype_graphs(genotype)
    title = picture_title(genotype) if title is None else title
    used = resolve_renderer(renderer, graphs)
    if used == "graphviz":
        data = _render_dot(dot_source(graphs, title), fmt)
    else:
        from pipeline.views.figures import figure_bytes

        data = figure_bytes(draw_matplotlib(graphs, title), fmt)
    write_bytes_atomic(out, data)
    return used
