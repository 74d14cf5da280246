"""Where each registered search method runs at tiny scale, derived from the method's own
declarations (shared by the contract tests over the search and selection registries).

The space: the first in ``SPACES.names()`` order that the method's ``check_settings``
accepts; the depth: the smallest (from 3) that space builds a supernet with.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from conftest import SEARCH_SETTINGS
from pipeline.config import method_options
from pipeline.errors import ConfigError
from pipeline.search import METHODS
from pipeline.spaces import SPACES, get_space

CHANNELS = 4
BATCH = 8
PIXELS = 8
EPOCHS = 2  # resume equality crosses one epoch boundary
MIN_LAYERS, MAX_LAYERS = 3, 32


@dataclass(frozen=True)
class SearchCase:
    algorithm: str
    space: str
    layers: int

    @property
    def settings(self) -> dict:
        return {**SEARCH_SETTINGS, "space": self.space, "init_channels": CHANNELS, "layers": self.layers, "epochs": EPOCHS}

    def options(self, **given) -> dict:
        """The schema's defaults; a warm-up that would freeze the architecture through the
        tiny run is set to 0, so that the steps train it."""
        block = {"algorithm": self.algorithm, **given}
        if "warmup_epochs" in METHODS.get(self.algorithm).OPTIONS:
            block.setdefault("warmup_epochs", 0)
        return method_options(METHODS, block, f"search.methods.{self.algorithm}")


@functools.cache
def smallest_depth(space_name: str) -> int | None:
    """The fewest layers (from MIN_LAYERS) the space builds a supernet with (None: none)."""
    space = get_space(space_name)
    for layers in range(MIN_LAYERS, MAX_LAYERS + 1):
        try:
            space.build_supernet(2, layers, 10)
        except ValueError:
            continue
        return layers
    return None


def search_case(algorithm: str) -> SearchCase:
    """Where ``algorithm`` runs: the first space its own ``check_settings`` accepts."""
    method_cls = METHODS.get(algorithm)
    refusals = []
    for name in SPACES.names():
        try:
            method_cls.check_settings({**SEARCH_SETTINGS, "space": name})
        except ConfigError as exc:
            refusals.append(str(exc))
            continue
        layers = smallest_depth(name)
        if layers is not None:
            return SearchCase(algorithm, name, layers)
    raise AssertionError(f"search method {algorithm} accepts no registered space: {refusals}")


def search_cases() -> list[SearchCase]:
    """The parametrisation: one case per registered search method."""
    return [search_case(name) for name in METHODS.names()]
