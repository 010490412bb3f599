"""Where a run's seconds go: named phases, timed as they run and summed by name."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class Phases:
    """Seconds per named phase (``with phases("solve"): ...``); a phase entered twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}
