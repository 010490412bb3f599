"""One way to plug things in: a name -> object table per kind of thing.

Built-in architectures, dataset kinds, unlearning methods and scale criteria register here
exactly as a user's own would (``ARCHITECTURES.register("mynet")(build_mynet)``). Looking up an
unknown name is a usage error that lists the names there are.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, Optional, TypeVar

from .errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names them in error messages)."""

    def __init__(self, kind: str, load: Optional[Callable[[], None]] = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._load = load  # imports the built-in entries, the first time the table is read
        self._listeners: list[Callable[[str, T], None]] = []

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None
            load()
        return self._entries

    def listen(self, fn: Callable[[str, T], None]) -> None:
        """Call ``fn(name, entry)`` for every registration from now on (the CLI regenerates its options)."""
        self._listeners.append(fn)

    def register(self, name: str, entry: T | None = None, *, replace: bool = False):
        """``register(name, entry)`` or, as a decorator, ``@register(name)``."""

        def add(obj: T) -> T:
            if not replace and name in self._loaded():
                raise ValueError(f"{self.kind} {name!r} is registered already")
            self._entries[name] = obj
            for fn in self._listeners:
                fn(name, obj)
            return obj

        return add(entry) if entry is not None else add

    def get(self, name: str) -> T:
        entries = self._loaded()
        try:
            return entries[name]
        except KeyError:
            raise UsageError(f"unknown {self.kind} {name!r}; choose from {', '.join(entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._loaded()))

    def names(self) -> tuple[str, ...]:
        return tuple(self._loaded())

    def items(self) -> list[tuple[str, T]]:
        return list(self._loaded().items())

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's own plug-in, when the test is done)."""
        if self._entries.pop(name, None) is not None:
            for fn in self._listeners:
                fn(name, None)


Builder = Callable[..., object]
