"""SNAS child network (Xie et al., 2019): per edge the argmax op of the architecture
weights, ``none`` included; edges whose argmax is ``none`` are dropped, with no top-2 rule,
so a node keeps as many inputs as survive. A node left without inputs is dropped too,
with every edge that reads it, and leaves the cell's concat. In NB201 and ProxylessNAS
spaces this is the space's argmax parse with nothing excluded."""

from __future__ import annotations

import torch

from pipeline.ops import ZERO_OPS
from pipeline.select import METHODS
from pipeline.select.base import SelectionContext, SelectionError, SelectionMethod
from pipeline.spaces.cell import CellSpace


def parse_argmax(space, weights: dict[str, torch.Tensor]) -> dict:
    edge_list = space.edges()
    cells = {}
    for kind in space.cell_types:
        w = weights[kind].detach().cpu()
        edges = []
        alive = {0, 1}  # the cell inputs; an intermediate node lives if a live node feeds it
        for e, (node, source) in enumerate(edge_list):  # supernet order: by node, then input
            op = space.candidates(kind)[e][int(w[e].argmax())]
            if op in ZERO_OPS or source not in alive:
                continue
            edges.append({"node": node, "input": source, "op": op})
            alive.add(node)
        concat = sorted(alive - {0, 1})
        if not concat:
            raise SelectionError(f"every edge of the {kind} cell leads to 'none': the child network has no {kind} cell")
        cells[kind] = {"edges": edges, "concat": concat}
    space.validate_genotype(cells)
    return cells


@METHODS.register("snas")
class SnasArgmax(SelectionMethod):
    def select(self, ctx: SelectionContext) -> dict:
        if isinstance(ctx.space, CellSpace):
            return parse_argmax(ctx.space, ctx.arch_weights)
        # NB201 and ProxylessNAS genotypes keep every edge: their argmax parse, none allowed.
        try:
            return ctx.space.parse(ctx.arch_weights, exclude_ops=())
        except ValueError as exc:
            raise SelectionError(str(exc)) from None
