"""Search stage: registry of search methods (one module each) and the shared training loop."""

from __future__ import annotations

from pipeline.registry import Registry, import_submodules

METHODS: Registry = Registry("search method")

import_submodules(__name__, __path__)
