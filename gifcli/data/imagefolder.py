"""``imagefolder:DIR``: torchvision's ImageFolder over ``DIR/train/<class>/`` and ``DIR/test/<class>/``.

Images are decoded lazily, one batch at a time, so a folder larger than memory streams. Class
ids are the sorted class-folder names (ImageFolder's rule) and are recorded. The transform:
convert to grey (1 channel) or RGB (3 channels; a grey PNG is repeated into three), resize to
size x size, scale to [0, 1], then normalise per channel with mean/std (computed from the
training images in one pass when not given). Without ``--channels``/``--image-size`` the first
training image decides them.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataNotFoundError, InputFileError
from .datasets import DATASET_KINDS, Data, DatasetKind, DatasetSpec, channel_stats


def _open_image(path: str, mode: str) -> Image.Image:
    try:
        with open(path, "rb") as fh:
            img = Image.open(fh)
            img.load()
            return img.convert(mode)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InputFileError(f"cannot decode image {path} ({type(exc).__name__})") from None


class _ToInput:
    """PIL image -> normalised float tensor (C, size, size). A class, so DataLoader workers can pickle it."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = x.view(img.size[1], img.size[0], len(img.getbands())).permute(2, 0, 1).to(torch.float32) / 255.0
        return (x - self.mean) / self.std


def _classes(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir())


def check_links(folder: Path) -> None:
    """Refuse a folder link that points back into the data's own tree (torchvision's walk follows links:
    a class folder that links to itself would count its images some forty times, silently). Links to
    folders outside the tree are followed, each once."""
    top = folder.resolve()
    seen: set[Path] = set()
    for current, dirs, _ in os.walk(folder, followlinks=True):
        here = Path(current).resolve()
        if here in seen:
            raise InputFileError(f"{current} is a folder reached twice through links (a loop): remove the link")
        seen.add(here)
        for d in dirs:
            link = Path(current) / d
            if link.is_symlink():
                target = link.resolve()
                if target == top or top in target.parents:
                    raise InputFileError(f"{link} links back into the data's own folder ({target}): a loop or a "
                                         "second copy of the same images; remove the link")


def _folder(root: Path, part: str, mode: str, transform: _ToInput):
    from torchvision.datasets import ImageFolder

    try:
        check_links(root / part)
        return ImageFolder(str(root / part), transform=transform, loader=functools.partial(_open_image, mode=mode))
    except (FileNotFoundError, OSError) as exc:
        raise InputFileError(f"{root / part}: {str(exc).splitlines()[0]}") from None


def files_sha256(samples: list[tuple[str, int]], root: Path) -> str:
    """Fingerprint of a folder's sample list: sorted relative paths and their class ids."""
    h = hashlib.sha256()
    for path, label in samples:
        h.update(f"{Path(path).relative_to(root).as_posix()}\t{label}\n".encode())
    return h.hexdigest()


def load_imagefolder(spec: DatasetSpec, data_dir: Optional[str] = None, download: bool = True,
                     compute_stats: bool = True) -> Data:
    root = Path(spec.location or "")
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {root} not found")
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise InputFileError(f"{root} has no {part}/ folder (expected {root}/train/<class>/... and "
                                 f"{root}/test/<class>/...)")
    train_classes, test_classes = _classes(root / "train"), _classes(root / "test")
    if not train_classes:
        raise InputFileError(f"{root}/train has no class folders")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise InputFileError(f"{root}: the test classes differ from the train classes (only in train: {only_train}, "
                             f"only in test: {only_test})")
    probe = _folder(root, "train", "RGB", None)  # file list only; nothing decoded yet
    first = probe.samples[0][0]
    with Image.open(first) as img:
        own_channels = 1 if img.mode in ("1", "L", "I", "I;16", "F") else 3
        own_size = img.size[0] if img.size[0] == img.size[1] else max(img.size)
    channels = spec.channels or own_channels
    size = spec.size or own_size
    mode = "L" if channels == 1 else "RGB"
    mean, std = spec.mean, spec.std
    if compute_stats and (mean is None or std is None):
        raw = _folder(root, "train", mode, _ToInput(size, [0.0] * channels, [1.0] * channels))
        m, s = channel_stats(raw)
        mean, std = mean or m, std or s
    for name, v in (("mean", mean), ("std", std)):
        if v is not None and len(v) not in (1, channels):
            raise InputFileError(f"--{name} has {len(v)} values for {channels} channel(s)")
    if mean is not None and len(mean) == 1:
        mean = tuple(mean) * channels
    if std is not None and len(std) == 1:
        std = tuple(std) * channels
    transform = _ToInput(size, mean or [0.0] * channels, std or [1.0] * channels)
    train, test = _folder(root, "train", mode, transform), _folder(root, "test", mode, transform)
    resolved = replace(spec, channels=channels, size=size, mean=tuple(mean) if mean else None,
                       std=tuple(std) if std else None)
    fingerprint = {"train_count": len(train.samples), "test_count": len(test.samples),
                   "train_files_sha256": files_sha256(train.samples, root / "train")}
    return Data(resolved, train, test, tuple(train.classes), (channels, size, size), fingerprint,
                torch.as_tensor(train.targets, dtype=torch.int64), torch.as_tensor(test.targets, dtype=torch.int64))


def train_files(data: Data) -> list[str]:
    """Relative paths (``class/file``) of the training images, in the dataset's order."""
    inner = getattr(data.train, "dataset", data.train)
    root = Path(inner.root)
    return [Path(p).relative_to(root).as_posix() for p, _ in inner.samples]


DATASET_KINDS.register("imagefolder", DatasetKind(load_imagefolder, needs_location=True,
                                                  help="imagefolder:DIR with DIR/train/<class>/, DIR/test/<class>/"))
