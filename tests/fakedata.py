"""Tiny synthetic datasets in torchvision's on-disk layout (MNIST IDX, CIFAR-10 pickles)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _images(n: int, channels: int, size: int, rng: np.random.Generator, noise: int = 60):
    labels = rng.integers(0, 10, n)
    imgs = rng.integers(0, noise, (n, channels, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):  # a bright block whose position encodes the class
        r, c = divmod(int(k), 4)
        imgs[i, :, 2 + 6 * r: 6 + 6 * r, 2 + 6 * c: 6 + 6 * c] = 250
    return imgs, labels


def _idx(path: Path, arr: np.ndarray, code: int) -> None:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def write_fake_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0, noise: int = 60) -> Path:
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs, labels = _images(n, 1, 28, rng, noise)
        _idx(raw / f"{split}-images-idx3-ubyte", imgs[:, 0], 0x08)
        _idx(raw / f"{split}-labels-idx1-ubyte", labels, 0x08)
    return root


def write_fake_cifar(root: Path, per_batch: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        imgs, labels = _images(per_batch, 3, 32, rng)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": imgs.reshape(per_batch, -1), "labels": labels.tolist()}, fh)
    return root
