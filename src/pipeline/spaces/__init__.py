"""Registry of search spaces; each module in this folder registers its spaces by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.registry import Registry, import_submodules

if TYPE_CHECKING:
    from pipeline.spaces.base import Space

SPACES: Registry[Space] = Registry("search space")


def get_space(name: str) -> Space:
    """The registered space; its declaration (flags, ops) needs no torch, its builders do."""
    return SPACES.get(name)


import_submodules(__name__, __path__)
