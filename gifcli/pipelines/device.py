from __future__ import annotations

import torch

from ..errors import UsageError


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; an explicit cuda without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda asked for, but no CUDA GPU is available (use --device cpu or auto)")
        return torch.device(name)
    raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda")
