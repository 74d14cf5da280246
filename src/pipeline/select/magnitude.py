"""Magnitude selection (the DARTS parse): per edge the strongest op not in ``exclude_ops``;
per node the ``inputs_per_node`` incoming edges whose strongest op weighs most."""

from __future__ import annotations

from typing import Sequence

import torch

from pipeline.ops import OPS
from pipeline.select import METHODS
from pipeline.select.base import SelectionContext, SelectionError, SelectionMethod


def parse_magnitude(space, weights: dict[str, torch.Tensor], exclude_ops: Sequence[str] = ("none",)) -> dict:
    excluded = set(exclude_ops) | {"none"}  # a derived cell never holds 'none'
    edge_list = space.edges()
    cells = {}
    for kind in space.cell_types:
        w = weights[kind].detach().cpu()
        best = []  # per edge: (weight, op) of its strongest allowed op
        for e, names in enumerate(space.candidates(kind)):
            allowed = [(w[e, k].item(), name) for k, name in enumerate(names) if name not in excluded]
            if not allowed:
                raise SelectionError(f"exclude_ops {sorted(excluded)} leaves no op on edge {edge_list[e]} of the {kind} cell")
            best.append(max(allowed, key=lambda item: item[0]))
        by_node: dict[int, list[int]] = {}
        for e, (node, _) in enumerate(edge_list):
            by_node.setdefault(node, []).append(e)
        edges = []
        for node, edge_ids in sorted(by_node.items()):
            strongest = sorted(edge_ids, key=lambda e: -best[e][0])[: space.inputs_per_node]
            for e in sorted(strongest, key=lambda e: edge_list[e][1]):
                edges.append({"node": node, "input": edge_list[e][1], "op": best[e][1]})
        cells[kind] = {"edges": edges, "concat": sorted(by_node)}
    space.validate_genotype(cells)
    return cells


@METHODS.register("magnitude")
class Magnitude(SelectionMethod):
    OPTIONS = {
        "exclude_ops": {
            "type": "array",
            "items": {"enum": sorted(OPS)},
            "uniqueItems": True,
            "default": ["none"],
            "description": "ops never selected (DARTS excludes 'none'; add e.g. 'skip_connect' to forbid it)",
        }
    }

    def select(self, ctx: SelectionContext) -> dict:
        return parse_magnitude(ctx.space, ctx.arch_weights, self.options["exclude_ops"])
