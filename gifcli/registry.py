"""One way to plug things in: a name -> object table per kind of thing.

Built-in architectures, dataset kinds, unlearning methods and scale criteria register here
exactly as a user's own would (``ARCHITECTURES.register("mynet")(build_mynet)``). Looking up an
unknown name is a usage error that lists the names there are.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names them in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, replace: bool = False):
        """``register(name, entry)`` or, as a decorator, ``@register(name)``."""

        def add(obj: T) -> T:
            if not replace and name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered already")
            self._entries[name] = obj
            return obj

        return add(entry) if entry is not None else add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(f"unknown {self.kind} {name!r}; choose from {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())


Builder = Callable[..., object]
