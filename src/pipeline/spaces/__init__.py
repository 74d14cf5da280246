"""Registry of search spaces; each module in this folder registers its spaces by name."""

from __future__ import annotations

from pipeline.registry import Registry, import_submodules

SPACES: Registry = Registry("search space")


def get_space(name: str):
    return SPACES.get(name)


import_submodules(__name__, __path__)
