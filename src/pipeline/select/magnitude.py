"""Magnitude selection: the space's own argmax parse of the op weights (for DARTS-family
cells the DARTS parse: per edge the strongest op not in ``exclude_ops``, per node the two
incoming edges whose strongest op weighs most; for NB201 and ProxylessNAS argmax per edge)."""

from __future__ import annotations

from typing import Sequence

import torch

from pipeline.select import METHODS
from pipeline.select.base import SelectionContext, SelectionError, SelectionMethod
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
        return parse_magnitude(ctx.space, ctx.arch_weights, self.options["exclude_ops"])
