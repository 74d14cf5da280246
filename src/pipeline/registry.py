"""Name -> implementation registries for search spaces, search and selection methods.

Adding a method is one module that calls ``REGISTRY.register("name")`` on its class; the
package's ``__init__`` imports every module in its folder, so nothing else is edited.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from pipeline.errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; a plain line reads better
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def registries(*names: str) -> tuple[Any, ...]:
    """The modules ``pipeline.<name>`` (search, select, spaces, benchmarks.latency), imported on use.

    Config checks look methods up by name through this, so that the code dependencies
    derived from imports (``codedeps``) do not make every stage depend on every method:
    what the lookups decide reaches a job through its parameters file.
    """
    return tuple(importlib.import_module(f"pipeline.{name}") for name in names)


def import_submodules(package_name: str, package_path: Any) -> None:
    """Import every module of a package that registers something, so that its ``register``
    calls run. Modules that register nothing (a stage's entry, shared helpers) are left to
    whoever uses them: a name lookup then loads only declarations (no torch)."""
    for info in pkgutil.iter_modules(package_path):
        if info.name.startswith("_"):
            continue
        spec = info.module_finder.find_spec(f"{package_name}.{info.name}", None)
        source = Path(spec.origin).read_text() if spec is not None and spec.origin else ""
        if ".register(" in source:
            importlib.import_module(f"{package_name}.{info.name}")
