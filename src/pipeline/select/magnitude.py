"""Magnitude selection: the space's own argmax parse of the op weights (for DARTS-family
cells the DARTS parse: per edge the strongest op not in ``exclude_ops``, per node the two
incoming edges whose strongest op weighs most; for NB201 and ProxylessNAS argmax per edge)."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.lazy import torch
from pipeline.select import METHODS
from pipeline.select.base import DecisionLog, SelectionContext, SelectionError, SelectionMethod
from pipeline.spaces import SPACES

# Every op name of every registered space, so a misspelt exclusion is a config error.
ALL_OPS = sorted({op for name in SPACES.names() for op in SPACES.get(name).primitives})


def parse_magnitude(space, weights: dict[str, torch.Tensor], exclude_ops: Sequence[str] = ("none",)) -> dict:
    try:
        return space.parse(weights, exclude_ops)
    except ValueError as exc:
        raise SelectionError(str(exc)) from None


@METHODS.register("magnitude")
class Magnitude(SelectionMethod):
    OPTIONS = {
        "exclude_ops": {
            "type": "array",
            "items": {"enum": ALL_OPS},
            "uniqueItems": True,
            "default": ["none"],
            "description": "ops never selected (DARTS cells never hold 'none'; add e.g. 'skip_connect' to forbid it)",
        }
    }

    def select(self, ctx: SelectionContext) -> dict:
        cells = parse_magnitude(ctx.space, ctx.arch_weights, self.options["exclude_ops"])
        record_magnitude(ctx.record, ctx.space, ctx.arch_weights, self.options["exclude_ops"], cells)
        return cells


def record_magnitude(record: DecisionLog, space, weights: dict[str, torch.Tensor], exclude_ops: Sequence[str], cells: dict) -> None:
    """The parse that gave ``cells`` as decisions (all at step 0): each edge keeps its op
    (the genotype's; for an edge the topology drops, its largest-weight op other than
    ``none``), then, where the space limits a node's inputs, the node drops its weakest
    edge (by that op's weight) until ``inputs_per_node`` remain."""
    excluded = set(exclude_ops)
    edge_list = space.edges()
    limit = getattr(space, "inputs_per_node", None)
    for kind in space.cell_types:
        w = weights[kind].detach().float().cpu()
        kept = {(e["node"], e["input"]): e["op"] for e in cells[kind]["edges"]}
        best = {}
        for e, names in enumerate(space.candidates(kind)):
            node, source = edge_list[e]
            allowed = [(k, name) for k, name in enumerate(names) if name not in excluded]
            if (node, source) in kept:
                choice = kept[(node, source)]
            else:
                choice = max((item for item in allowed if item[1] != "none"), key=lambda item: (w[e, item[0]].item(), -item[0]))[1]
            best[e] = (w[e, names.index(choice)].item(), choice)
            record.add(
                step=0, cell_type=kind, kind="op", node=node, input=source, edge=e, criterion="weight", action="keep",
                choice=choice, candidates=[(name, source, w[e, k].item(), w[e, k].item()) for k, name in allowed],
            )
        if limit is None:
            continue
        for node in sorted({n for n, _ in edge_list}):
            remaining = [e for e, (n, _) in enumerate(edge_list) if n == node]
            while len(remaining) > limit:
                weakest = min(remaining, key=lambda e: (best[e][0], -edge_list[e][1]))
                record.add(
                    step=0, cell_type=kind, kind="edge", node=node, input=edge_list[weakest][1], edge=weakest,
                    criterion="weight", action="remove", choice=best[weakest][1],
                    candidates=[(best[e][1], edge_list[e][1], best[e][0], best[e][0]) for e in remaining],
                )
                remaining.remove(weakest)
