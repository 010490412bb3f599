"""Text that becomes values, and the one way a share is written as text: comma-separated lists and
sizes, read the same way from a command line, a YAML file and a method's arguments
(``arg(parse=...)``), each refusing bad text with one line that names the option; :func:`percent`."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

from .errors import UsageError

SIZE_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def comma_list(text: Any, cast: Callable[[str], Any] = float, what: str = "value", *, auto: bool = False,
               empty: bool = False) -> Optional[list]:
    """``'1, 2.5,1e3'`` -> ``[1.0, 2.5, 1000.0]``; ``auto``: the word 'auto' is None (the default);
    ``empty``: an empty list is allowed. Numbers must be finite."""
    if text is None:
        return None
    text = str(text)
    if auto and text.strip() == "auto":
        return None
    kind = "numbers" if cast in (int, float) else "values"
    try:
        vals = [cast(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--{what} must be {'auto or ' if auto else ''}comma-separated {kind}, got {text!r}") from None
    if not vals and not empty:
        raise UsageError(f"--{what} is empty")
    if cast is float and not all(math.isfinite(v) for v in vals):
        raise UsageError(f"--{what} must be finite numbers, got {text!r}")
    return vals


def parse_scales(text: Any) -> Optional[list[float]]:
    """'auto' -> None (the scale chosen on validation); '1,2,5' -> [1.0, 2.0, 5.0]."""
    return comma_list(text, float, "scale", auto=True)


def parse_size(text: Any, what: str = "memory-budget") -> float:
    """A number of bytes: ``2e9``, ``512MiB``, ``8G``."""
    t = str(text).strip().lower()
    for suffix in sorted(SIZE_UNITS, key=len, reverse=True):
        if t.endswith(suffix) or t.endswith(suffix + "b"):
            num = t[: -len(suffix)] if t.endswith(suffix) else t[: -len(suffix) - 1]
            try:
                return float(num) * SIZE_UNITS[suffix]
            except ValueError:
                break
    try:
        return float(t)
    except ValueError:
        raise UsageError(f"--{what} must be a size such as 2e9, 512MiB or 8G, got {text!r}") from None


def percent(share: Optional[float], missing: str = "-") -> str:
    """0.98765 -> '98.77%' (a missing value: ``missing``)."""
    return missing if share is None else f"{100 * share:.2f}%"
