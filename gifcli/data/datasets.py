"""MNIST and CIFAR-10 as in-memory tensors, in torchvision's on-disk layout.

Search order for the data root: ``--data-dir``, ``$GIF_DATA_DIR``, ``./data``, ``../shared/data``,
then torchvision's download into the first of those (``./data`` if none was given).
Normalisation follows appendix C.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataNotFoundError, UsageError

DATASETS = ("mnist", "cifar10")
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}
VALIDATION_SIZE = 5000  # carved from the training set with VALIDATION_SEED
VALIDATION_SEED = 0
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


@dataclass
class RawSplit:
    """uint8 images (N, C, H, W) and int64 labels, before normalisation."""

    images: torch.Tensor
    labels: torch.Tensor


def search_path(data_dir: Optional[str] = None) -> list[Path]:
    candidates = [data_dir, os.environ.get("GIF_DATA_DIR"), "./data", "../shared/data"]
    out: list[Path] = []
    for c in candidates:
        if c and Path(c) not in out:
            out.append(Path(c))
    return out


def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataNotFoundError(f"{path} is not an IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataNotFoundError(f"{path} is truncated")
    return data.reshape(dims)


def _mnist_at(root: Path, split: str) -> Optional[RawSplit]:
    folder = root / "MNIST" / "raw"
    img, lab = (folder / f for f in MNIST_FILES[split])
    if not (img.is_file() and lab.is_file()):
        return None
    images = torch.from_numpy(_read_idx(img).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(lab).astype(np.int64))
    return RawSplit(images, labels)


def _cifar_at(root: Path, split: str) -> Optional[RawSplit]:
    folder = root / CIFAR_DIR
    files = [folder / f for f in CIFAR_FILES[split]]
    if not all(f.is_file() for f in files):
        return None
    images, labels = [], []
    for f in files:
        with open(f, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    return RawSplit(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64))


_READERS = {"mnist": _mnist_at, "cifar10": _cifar_at}


def _download(dataset: str, root: Path) -> None:
    import torchvision

    cls = torchvision.datasets.MNIST if dataset == "mnist" else torchvision.datasets.CIFAR10
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_raw(dataset: str, split: str, data_dir: Optional[str] = None, download: bool = True) -> RawSplit:
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    roots = search_path(data_dir)
    for root in roots:
        found = _READERS[dataset](root, split)
        if found is not None:
            return found
    if download:
        target = roots[0] if data_dir or os.environ.get("GIF_DATA_DIR") else Path("./data")
        try:
            _download(dataset, target)
        except Exception as exc:  # offline, or a failed mirror
            looked = ", ".join(str(r) for r in roots)
            raise DataNotFoundError(
                f"{dataset} not found (looked in {looked}) and the download failed "
                f"({type(exc).__name__}); put torchvision's layout under one of them or pass "
                f"--data-dir / set GIF_DATA_DIR"
            ) from None
        found = _READERS[dataset](target, split)
        if found is not None:
            return found
    looked = ", ".join(str(r) for r in roots)
    raise DataNotFoundError(f"{dataset} not found (looked in {looked}); pass --data-dir or set GIF_DATA_DIR")


def normalise(dataset: str, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    mean, std = NORMALISATION[dataset]
    m = torch.tensor(mean, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype).view(1, -1, 1, 1)
    return (images.to(dtype) / 255.0 - m) / s


@dataclass
class Split:
    """Normalised images and labels, plus the raw images' positions in the training set."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def where(self, mask: torch.Tensor) -> "Split":
        return Split(self.x[mask], self.y[mask])

    def batches(self, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.x[i:i + size], self.y[i:i + size]) for i in range(0, len(self.y), size)]

    def to(self, device: str | torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


def train_validation_indices(n_train: int, size: int = VALIDATION_SIZE, seed: int = VALIDATION_SEED):
    """Fixed split of the training set: (train indices, validation indices)."""
    size = min(size, n_train // 10) if n_train < 10 * size else size
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[size:].sort().values, perm[:size].sort().values


@dataclass
class DatasetSplits:
    dataset: str
    train: Split  # the training set minus the validation split
    validation: Split
    test: Split
    train_indices: torch.Tensor  # positions of `train` in the full training set
    num_classes: int
    input_shape: tuple[int, ...]


def load_splits(dataset: str, data_dir: Optional[str] = None, download: bool = True) -> DatasetSplits:
    raw_train = load_raw(dataset, "train", data_dir, download)
    raw_test = load_raw(dataset, "test", data_dir, download)
    tr_idx, va_idx = train_validation_indices(len(raw_train.labels))
    x = normalise(dataset, raw_train.images)
    return DatasetSplits(
        dataset,
        Split(x[tr_idx], raw_train.labels[tr_idx]),
        Split(x[va_idx], raw_train.labels[va_idx]),
        Split(normalise(dataset, raw_test.images), raw_test.labels),
        tr_idx,
        10,
        tuple(raw_train.images.shape[1:]),
    )
