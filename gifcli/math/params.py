"""Flat views of named parameters and index sets J over them.

The flat order is the order of ``named_parameters()``; a flat index ``i`` names one scalar
parameter. An index set J is a sorted 1-D ``int64`` tensor of flat indices (eq. 3: theta_J).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ParamSpace:
    """Names, shapes and flat offsets of a list of parameters."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @staticmethod
    def of(named: dict[str, torch.Tensor] | list[tuple[str, torch.Tensor]]) -> "ParamSpace":
        items = list(named.items()) if isinstance(named, dict) else list(named)
        return ParamSpace(tuple(n for n, _ in items), tuple(tuple(t.shape) for _, t in items))

    @property
    def numels(self) -> tuple[int, ...]:
        out = []
        for s in self.shapes:
            n = 1
            for d in s:
                n *= d
            out.append(n)
        return tuple(out)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Flat index of each tensor's first element."""
        offs, acc = [], 0
        for n in self.numels:
            offs.append(acc)
            acc += n
        return tuple(offs)

    @property
    def size(self) -> int:
        return sum(self.numels)

    def flatten(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        return [c.view(s) for c, s in zip(torch.split(vector, self.numels), self.shapes)]


@dataclass(frozen=True)
class IndexSet:
    """A set J of flat parameter indices inside a ``ParamSpace``."""

    space: ParamSpace
    indices: torch.Tensor  # sorted, unique, int64, on CPU
    # copies of `indices` per device: gather/scatter run twice per GIF product, so on a GPU the
    # indices are copied over once rather than on every call
    _on_device: dict = field(default_factory=dict, compare=False, repr=False)

    def _indices_on(self, device: torch.device) -> torch.Tensor:
        if device.type == "cpu":
            return self.indices
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self.indices.to(device)
        return self._on_device[key]

    @staticmethod
    def from_indices(space: ParamSpace, indices: torch.Tensor) -> "IndexSet":
        idx = torch.unique(torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu())
        if idx.numel() and (idx[0] < 0 or idx[-1] >= space.size):
            raise ValueError(f"index outside the parameter space of size {space.size}")
        return IndexSet(space, idx)

    @staticmethod
    def everything(space: ParamSpace) -> "IndexSet":
        return IndexSet(space, torch.arange(space.size, dtype=torch.int64))

    @staticmethod
    def from_masks(space: ParamSpace, masks: dict[str, torch.Tensor]) -> "IndexSet":
        parts = []
        for name, off in zip(space.names, space.offsets):
            if name in masks:
                parts.append(torch.nonzero(masks[name].reshape(-1).cpu(), as_tuple=False).reshape(-1) + off)
        idx = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        return IndexSet.from_indices(space, idx)

    @property
    def size(self) -> int:
        return int(self.indices.numel())

    def masks(self) -> dict[str, torch.Tensor]:
        """Per-tensor boolean masks (True = selected)."""
        flat = torch.zeros(self.space.size, dtype=torch.bool)
        flat[self.indices] = True
        return {n: m for n, m in zip(self.space.names, self.space.unflatten(flat))}

    def counts(self) -> dict[str, int]:
        return {n: int(m.sum()) for n, m in self.masks().items()}

    def gather(self, full: torch.Tensor) -> torch.Tensor:
        """theta -> theta_J."""
        return full[self._indices_on(full.device)]

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """theta_J -> [theta_J; 0] in the full space (eq. 4)."""
        full = torch.zeros(self.space.size, dtype=values.dtype, device=values.device)
        full[self._indices_on(values.device)] = values
        return full
