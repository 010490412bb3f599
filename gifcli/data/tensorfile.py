"""``tensors:FILE``: arrays a user already has, in a safetensors or ``.npz`` file.

The file holds ``train_x, train_y, test_x, test_y``. Images are uint8 ``(N, C, H, W)`` (or
``(N, H, W)``, one channel), scaled to [0, 1] and normalised with mean/std (computed per channel
from ``train_x`` when not given); float inputs of any shape ``(N, ...)`` are used as they are
unless ``--mean``/``--std`` are given. Labels are integers from 0. Class names come from the
safetensors metadata key ``classes`` (a JSON list) if present, else ``0..K-1``. The whole file
is held in memory; the file's sha256 is recorded.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataNotFoundError, InputFileError
from ..io.files import sha256_file
from .datasets import DATASET_KINDS, Data, DatasetKind, DatasetSpec, ImageTensors, RawSplit

KEYS = ("train_x", "train_y", "test_x", "test_y")


def uint8_channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation of uint8 images ``(N, C, H, W)`` scaled to
    [0, 1], computed exactly from integer counts of each pixel value: the same bits whatever the
    thread count (a float reduction's order, and so its last digits, depends on it, and the result
    is recorded in every checkpoint and forget set made from the data)."""
    values = torch.arange(256, dtype=torch.int64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1).to(torch.int64), minlength=256)
        n, s1, s2 = int(counts.sum()), int((counts * values).sum()), int((counts * values * values).sum())
        means.append(s1 / (255 * n))
        var = (n * s2 - s1 * s1) / (n * (n - 1) * 255 * 255) if n > 1 else 0.0  # exact integers, one rounding
        stds.append(max(var ** 0.5, 1e-6))
    return torch.tensor(means, dtype=torch.float64), torch.tensor(stds, dtype=torch.float64)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], Optional[list[str]]]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: torch.from_numpy(np.ascontiguousarray(npz[k])) for k in npz.files}
            return arrays, None
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}
        classes = json.loads(meta["classes"]) if "classes" in meta else None
        return arrays, classes
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path} is not a readable tensors file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:100] if str(exc) else ''})") from None
    except Exception as exc:  # safetensors' own error type
        raise InputFileError(f"{path} is not a readable tensors file ({str(exc).splitlines()[0][:100]})") from None


def _check(arrays: dict[str, torch.Tensor], path: Path) -> None:
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise InputFileError(f"{path} lacks {', '.join(missing)} (needs {', '.join(KEYS)})")
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise InputFileError(f"{path}: {part}_y must be a 1-D integer array, got {y.dtype} {tuple(y.shape)}")
        if len(x) != len(y) or len(y) == 0:
            raise InputFileError(f"{path}: {part}_x has {len(x)} rows, {part}_y {len(y)} (must match, non-empty)")
        if int(y.min()) < 0:
            raise InputFileError(f"{path}: {part}_y has negative labels")
        if x.dtype == torch.uint8 and x.dim() not in (3, 4):
            raise InputFileError(f"{path}: uint8 {part}_x must be (N, C, H, W) or (N, H, W), got {tuple(x.shape)}")
        if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
            raise InputFileError(f"{path}: {part}_x must be uint8 images or floats, got {x.dtype}")
        if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
            raise InputFileError(f"{path}: {part}_x holds NaN or infinite values")
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise InputFileError(f"{path}: train_x and test_x have different sample shapes")


def load_tensors(spec: DatasetSpec, data_dir: Optional[str] = None, download: bool = True) -> Data:
    path = Path(spec.location or "")
    if not path.is_file():
        raise DataNotFoundError(f"tensors file {path} not found")
    arrays, classes = _read(path)
    _check(arrays, path)
    tx, ty, sx, sy = (arrays[k] for k in KEYS)
    if tx.dtype == torch.uint8 and tx.dim() == 3:
        tx, sx = tx.unsqueeze(1), sx.unsqueeze(1)
    n_classes = int(max(int(ty.max()), int(sy.max()))) + 1
    if classes is not None:
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise InputFileError(f"{path}: metadata 'classes' must be a JSON list of class names")
        for part, y in (("train", ty), ("test", sy)):  # a label the names do not cover is the labels' fault
            bad = torch.nonzero(y >= len(classes)).reshape(-1)
            if bad.numel():
                i = int(bad[0])
                raise InputFileError(f"{path}: {part}_y[{i}] = {int(y[i])} is outside the {len(classes)} classes "
                                     f"the metadata names (labels 0..{len(classes) - 1}; {bad.numel()} such labels)")
    classes = classes or [str(i) for i in range(n_classes)]
    own = tx.shape[1] if tx.dim() == 4 else None
    channels = spec.channels or own
    mean, std = spec.mean, spec.std
    if tx.dtype == torch.uint8 and (mean is None or std is None):
        m, s = uint8_channel_stats(tx)
        if channels and own and channels != own:
            m, s = m.repeat(channels // own), s.repeat(channels // own)
        mean, std = mean or tuple(m.tolist()), std or tuple(s.tolist())
    mean, std = mean or (0.0,), std or (1.0,)
    train = ImageTensors(tx, ty.to(torch.int64), mean, std, channels)
    test = ImageTensors(sx, sy.to(torch.int64), mean, std, channels)
    resolved = replace(spec, channels=channels, mean=tuple(mean), std=tuple(std))
    fingerprint = {"train_count": len(ty), "test_count": len(sy), "sha256": sha256_file(path)}
    raw = (RawSplit(tx, ty.to(torch.int64)), RawSplit(sx, sy.to(torch.int64))) if tx.dtype == torch.uint8 else (None, None)
    return Data(resolved, train, test, tuple(classes), train.input_shape, fingerprint,
                raw_train=raw[0], raw_test=raw[1])


def write_tensors(path: str | Path, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                  test_y: torch.Tensor, classes: Optional[list[str]] = None) -> None:
    """Write a ``tensors:`` dataset file (safetensors), atomically."""
    from safetensors.torch import save_file

    from ..io.files import atomic_path

    meta = {"classes": json.dumps(classes)} if classes else None
    tensors = {"train_x": train_x.contiguous(), "train_y": train_y.to(torch.int64).contiguous(),
               "test_x": test_x.contiguous(), "test_y": test_y.to(torch.int64).contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


DATASET_KINDS.register("tensors", DatasetKind(load_tensors, needs_location=True,
                                              help="tensors:FILE with train_x, train_y, test_x, test_y"))
