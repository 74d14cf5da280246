"""SNAS child network (Xie et al., 2019): per edge the argmax op of the architecture
weights, ``none`` included; edges whose argmax is ``none`` are dropped, with no top-2 rule,
so a node keeps as many inputs as survive. A node left without inputs is dropped too,
with every edge that reads it, and leaves the cell's concat. In NB201 and ProxylessNAS
spaces this is the space's argmax parse with nothing excluded."""

from __future__ import annotations

from pipeline.lazy import torch
from pipeline.select import METHODS
from pipeline.select.base import DecisionLog, SelectionContext, SelectionError, SelectionMethod
from pipeline.select.magnitude import record_magnitude


def parse_argmax(space, weights: dict[str, torch.Tensor]) -> dict:
    from pipeline.nets.ops import ZERO_OPS

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


def record_argmax(record: DecisionLog, space, weights: dict[str, torch.Tensor], cells: dict) -> None:
    """Each edge's argmax among all its ops (``none`` included): ``keep`` if the child network
    has the edge, ``drop`` if the op is ``none`` or the edge reads a dropped node."""
    edge_list = space.edges()
    for kind in space.cell_types:
        w = weights[kind].detach().float().cpu()
        kept = {(e["node"], e["input"]) for e in cells[kind]["edges"]}
        for e, names in enumerate(space.candidates(kind)):
            node, source = edge_list[e]
            record.add(
                step=0, cell_type=kind, kind="op", node=node, input=source, edge=e, criterion="weight",
                action="keep" if (node, source) in kept else "drop", choice=names[int(w[e].argmax())],
                candidates=[(name, source, w[e, k].item(), w[e, k].item()) for k, name in enumerate(names)],
            )


@METHODS.register("snas")
class SnasArgmax(SelectionMethod):
    def select(self, ctx: SelectionContext) -> dict:
        if ctx.space.darts_cells:
            cells = parse_argmax(ctx.space, ctx.arch_weights)
            record_argmax(ctx.record, ctx.space, ctx.arch_weights, cells)
            return cells
        # NB201 and ProxylessNAS genotypes keep every edge: their argmax parse, none allowed.
        try:
            cells = ctx.space.parse(ctx.arch_weights, exclude_ops=())
        except ValueError as exc:
            raise SelectionError(str(exc)) from None
        record_magnitude(ctx.record, ctx.space, ctx.arch_weights, (), cells)
        return cells
