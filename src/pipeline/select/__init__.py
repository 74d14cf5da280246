"""Selection stage: registry of methods that turn a trained supernet into a genotype."""

from __future__ import annotations

from pipeline.registry import Registry, import_submodules

METHODS: Registry = Registry("selection method")

import_submodules(__name__, __path__)
