"""Heavy modules bound at import, loaded on first use.

Method modules declare their options, flags and config checks at import; only what
computes needs torch. Binding ``torch`` (and ``nn``, ``F``, ``np``) here lets config
validation and the workflow's planning read those declarations without loading torch
(about 1.5 s), while the code that computes reads as ordinary torch code.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")


class LazyModule:
    """Stands for a module; the first attribute read imports it."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (loaded)' if self._module is not None else ''}>"


torch: Any = LazyModule("torch")
nn: Any = LazyModule("torch.nn")
F: Any = LazyModule("torch.nn.functional")
np: Any = LazyModule("numpy")
pd: Any = LazyModule("pandas")


def no_grad(function: Callable[..., T]) -> Callable[..., T]:
    """``@torch.no_grad()`` for a module-level function, without importing torch to define it."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with torch.no_grad():
            return function(*args, **kwargs)

    return wrapper
