"""Name -> class registries: the only way the CLI and configs find attacks, architectures and data sets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from modelsec.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of plugins of one kind.

    >>> r: Registry[type] = Registry("widget")
    >>> @r.register("box")
    ... class Box: ...
    >>> r.get("box").__name__
    'Box'
    >>> r.names()
    ['box']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (lower-case, unique)."""

        def decorator(obj: T) -> T:
            key = name.lower()
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The plugin called ``name``; a :class:`ConfigError` listing the known names otherwise."""
        try:
            return self._items[name.lower()]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
