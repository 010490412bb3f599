"""Forget sets: which training samples to forget, as a file a shell pipeline can make.

File (JSON, format ``gif-forget`` version 1)::

    {"format": "gif-forget", "version": 1,
     "dataset": {...the data record: spec, classes, fingerprint...},
     "split": "train",
     "count": k, "indices": [sorted unique positions in the training set's own order],
     "indices_sha256": ..., "made_by": {"how": ..., "seed": ..., "command": ...},
     "files": [...]}            # ImageFolder datasets: the images' paths (class/file)

Indices count in the dataset's own training order, before gif carves out its validation split.
A plain text file of one index per line (what ``shuf -i 0-59999 -n 600`` prints) is accepted
too, and ``-`` reads either form from standard input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..errors import InputFileError, UsageError
from ..io.files import STDIO, parse_json, provenance, read_text, write_json
from .datasets import Data, indices_sha256

FORGET_FORMAT = "gif-forget"
FORGET_STREAM = 0x5EED_F0  # offset of the forget-set draws' seeds
_INT_LINE = re.compile(r"^\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class ForgetSet:
    """Sorted unique training-set positions, and what they were made for and how."""

    indices: torch.Tensor
    dataset: Optional[dict] = None  # None for a plain list of indices
    made_by: dict = field(default_factory=dict)
    files: Optional[list[str]] = None
    source: str = ""

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def sha256(self) -> str:
        return indices_sha256(self.indices.numpy())

    def describe(self) -> dict:
        return {"kind": "samples", "count": len(self), "indices_sha256": self.sha256, "source": self.source,
                "made_by": self.made_by}

    def document(self) -> dict:
        doc = {"format": FORGET_FORMAT, "version": 1, "dataset": self.dataset, "split": "train", "count": len(self),
               "indices_sha256": self.sha256, "made_by": self.made_by, "indices": self.indices.tolist()}
        if self.files is not None:
            doc["files"] = self.files
        return doc


def _sorted_unique(values: Sequence[int], where: str) -> torch.Tensor:
    arr = np.asarray(values, dtype=np.int64)
    if arr.ndim != 1:
        raise InputFileError(f"{where}: indices must be a flat list")
    if arr.size and int(arr.min()) < 0:
        raise InputFileError(f"{where}: negative index {int(arr.min())}")
    return torch.from_numpy(np.unique(arr))


def parse_forget(text: str, where: str) -> ForgetSet:
    """A forget set from a gif-forget JSON document or a plain one-index-per-line list."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        doc = parse_json(text, where, "forget set")
        if not isinstance(doc, dict) or doc.get("format") != FORGET_FORMAT:
            raise InputFileError(f"{where} is not a gif forget-set file (format {FORGET_FORMAT!r})")
        if doc.get("version") != 1 or doc.get("split", "train") != "train":
            raise InputFileError(f"{where}: unsupported forget-set version or split")
        raw = doc.get("indices")
        if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
            raise InputFileError(f"{where}: 'indices' must be a list of integers")
        idx = _sorted_unique(raw, where)
        if len(idx) != len(raw):
            raise InputFileError(f"{where}: indices must be unique")
        if indices_sha256(idx.numpy()) != doc.get("indices_sha256"):
            raise InputFileError(f"{where}: indices do not match their recorded sha256 (edited or corrupted)")
        files = doc.get("files")
        if files is not None and (not isinstance(files, list) or len(files) != len(idx)):
            raise InputFileError(f"{where}: 'files' must list one path per index")
        return ForgetSet(idx, doc.get("dataset"), doc.get("made_by") or {}, files, where)
    values = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _INT_LINE.match(line)
        if m is None:
            raise InputFileError(f"{where}, line {n}: {line.strip()[:40]!r} is not an integer index")
        values.append(int(m.group(1)))
    idx = _sorted_unique(values, where)
    return ForgetSet(idx, None, {"how": "index list", "source": where}, None, where)


def read_forget(path: str | Path) -> ForgetSet:
    where = "standard input" if str(path) == STDIO else str(path)
    return parse_forget(read_text(path, "forget set"), where)


@dataclass(frozen=True)
class ResolvedForget:
    """A forget set checked against the data: the positions to forget and those left out."""

    forget: ForgetSet
    in_fit: torch.Tensor  # training positions that were trained on (not in the validation split)
    in_validation: torch.Tensor  # positions in gif's validation split: never trained on, left out


def resolve(fs: ForgetSet, data: Data) -> ResolvedForget:
    """Check a forget set against the data it is used with; split off validation positions."""
    n = data.train_size
    if len(fs) == 0:
        raise InputFileError(f"{fs.source}: the forget set is empty")
    if int(fs.indices.max()) >= n:
        raise InputFileError(f"{fs.source}: index {int(fs.indices.max())} is outside the training set (0..{n - 1})")
    if fs.dataset is not None:
        data.check_record(fs.dataset, f"forget set {fs.source}")
    if fs.files is not None:
        from .imagefolder import train_files

        try:
            names = train_files(data)
        except AttributeError:
            raise InputFileError(f"{fs.source} names image files, but {data.spec.name} is not an image folder") from None
        wrong = [i for i, f in zip(fs.indices.tolist(), fs.files) if names[i] != f]
        if wrong:
            raise InputFileError(f"{fs.source}: index {wrong[0]} is {names[wrong[0]]} in the dataset, not the recorded file")
    is_val = torch.isin(fs.indices, data.validation_indices)
    in_fit, in_val = fs.indices[~is_val], fs.indices[is_val]
    if in_fit.numel() == 0:
        raise InputFileError(f"{fs.source}: every index falls in gif's validation split, which was never trained on")
    if in_fit.numel() >= data.fit_indices.numel():
        raise InputFileError(f"{fs.source}: the forget set is the whole training set; nothing would remain")
    return ResolvedForget(fs, in_fit, in_val)


def make_forget_set(data: Data, how: str, *, fraction: Optional[float] = None, count: Optional[int] = None,
                    seed: int = 0, stratified: bool = False, label: Optional[int] = None,
                    files: Optional[list[str]] = None, indices: Optional[ForgetSet] = None) -> ForgetSet:
    """A forget set over ``data``'s training set.

    ``how``: ``random`` (``fraction`` or ``count`` of the training set, ``stratified`` keeps each
    class's share), ``label`` (the class ``label``, or a seeded ``fraction`` of it),
    ``files`` (ImageFolder paths), ``indices`` (a list to check and record).
    """
    n = data.train_size
    # a stream of its own: seeded like the validation split, the same seed would draw the same first
    # indices, and a random forget set would start with exactly the validation images
    gen = torch.Generator().manual_seed(FORGET_STREAM + seed)
    made: dict[str, Any] = {"how": how, "seed": seed, "stream": f"torch.Generator seeded {FORGET_STREAM} + seed"}
    labels = data.train_labels
    if how == "random":
        k = _count(n, fraction, count)
        made.update({"fraction": fraction, "count": k, "stratified": stratified})
        if stratified:
            parts = []
            for c in range(data.num_classes):
                members = torch.nonzero(labels == c).reshape(-1)
                take = int(round(k * len(members) / n))
                parts.append(members[torch.randperm(len(members), generator=gen)[:take]])
            idx = torch.cat(parts)
        else:
            idx = torch.randperm(n, generator=gen)[:k]
    elif how == "label":
        data.check_label(label, "--label")
        members = torch.nonzero(labels == label).reshape(-1)
        k = _count(len(members), fraction if fraction is not None else 1.0, None)
        made.update({"label": label, "fraction": fraction if fraction is not None else 1.0, "count": k})
        idx = members if k == len(members) else members[torch.randperm(len(members), generator=gen)[:k]]
    elif how == "files":
        from .imagefolder import train_files

        if not files:
            raise UsageError("--files lists no image")
        names = train_files(data)
        where = {name: i for i, name in enumerate(names)}
        missing = [f for f in files if f not in where]
        if missing:
            raise InputFileError(f"{missing[0]} is not a training image of {data.spec.name} (paths are class/file)")
        idx = torch.tensor([where[f] for f in files])
        made.update({"count": len(files)})
    elif how == "indices":
        if indices is None:
            raise UsageError("--indices needs a file")
        idx = indices.indices
        made.update({"count": len(indices), "source": indices.source})
    else:
        raise UsageError(f"unknown way to make a forget set: {how!r}")
    idx = torch.unique(idx)
    if idx.numel() and int(idx.max()) >= n:
        raise InputFileError(f"index {int(idx.max())} is outside the training set (0..{n - 1})")
    if idx.numel() == 0:
        raise UsageError("the forget set would be empty")
    made["command"] = provenance()["command"]
    file_list = None
    if data.spec.kind == "imagefolder":
        from .imagefolder import train_files

        names = train_files(data)
        file_list = [names[i] for i in idx.tolist()]
    return ForgetSet(idx, data.record(), made, file_list, "new")


def _count(n: int, fraction: Optional[float], count: Optional[int]) -> int:
    if (fraction is None) == (count is None):
        raise UsageError("give exactly one of a fraction and a count")
    if count is not None:
        if not 0 < count < n:
            raise UsageError(f"count must be in 1..{n - 1}, got {count}")
        return int(count)
    if not 0.0 < fraction <= 1.0:  # type: ignore[operator]
        raise UsageError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, int(round(fraction * n)))  # type: ignore[operator]


def write_forget(path: str | Path, fs: ForgetSet) -> None:
    write_json(path, fs.document())
