"""UNAS derivation (Vahdat et al., 2020): per node and branch, the argmax input and the
argmax op of the branch's logits (``none`` never chosen, as no node may lose a branch).

Reads the logits from the supernet checkpoint's method state (``method.alpha``):
``<cell>_ops`` (nodes, 2, ops) and ``<cell>_inputs<node>`` (2, node) for node = 2, 3, ...
If both branches of a node pick the same (input, op), the second takes its most likely
other pair, p(input) * p(op), since one pair cannot be an edge twice.
"""

from __future__ import annotations

from pipeline.lazy import torch
from pipeline.select import METHODS
from pipeline.select.base import DecisionLog, SelectionContext, SelectionError, SelectionMethod


def parse_branches(space, logits: dict[str, torch.Tensor], record: DecisionLog | None = None) -> dict:
    from pipeline.nets.ops import ZERO_OPS

    """The genotype; ``record`` gets one decision per branch: every (input, op) pair with its
    log-probability log p(input) + log p(op), and the pair chosen."""
    cells = {}
    for kind in space.cell_types:
        ops_logits = logits[f"{kind}_ops"].detach().cpu().float()
        names = list(space.primitives)
        allowed = torch.tensor([name not in ZERO_OPS for name in names])
        if not allowed.any():
            raise SelectionError(f"space {space.name!r} has only zero ops")
        edges = []
        for n in range(space.steps):
            node = n + 2
            log_inputs = torch.log_softmax(logits[f"{kind}_inputs{node}"].detach().cpu().float(), -1)  # (2, node)
            log_ops = torch.log_softmax(ops_logits[n], -1).masked_fill(~allowed, float("-inf"))  # (2, ops)
            chosen = []
            for branch in range(2):
                joint = log_inputs[branch][:, None] + log_ops[branch][None, :]  # (node, ops)
                for source, op in chosen:
                    joint[source, op] = float("-inf")
                flat = int(joint.flatten().argmax())
                chosen.append(divmod(flat, len(names)))
                if record is not None:
                    source, op = chosen[-1]
                    record.add(
                        step=0, cell_type=kind, kind="branch", node=node, input=source, criterion="log_prob", action="keep",
                        choice=names[op], candidates=[(names[k], i, joint[i, k].item(), float("nan")) for i in range(node) for k in range(len(names))],
                    )
            for source, op in sorted(chosen):
                edges.append({"node": node, "input": source, "op": names[op]})
        cells[kind] = {"edges": edges, "concat": list(range(2, space.steps + 2))}
    space.validate_genotype(cells)
    return cells


@METHODS.register("unas")
class UnasArgmax(SelectionMethod):
    SEARCH_ALGORITHMS = ("unas",)

    def select(self, ctx: SelectionContext) -> dict:
        return parse_branches(ctx.space, ctx.checkpoint["method"]["alpha"], ctx.record)
