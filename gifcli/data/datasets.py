"""Datasets as specs that are recorded, loaded, and walked in batches through a DataLoader.

A dataset is named by a spec string (``--dataset``):

* ``mnist``, ``cifar10``: torchvision's on-disk layout, found in ``--data-dir``,
  ``$GIF_DATA_DIR``, ``./data``, then downloaded by torchvision into the first
  of those (``./data`` if none was given). Normalised as the paper's appendix C says.
* ``imagefolder:DIR``: ``torchvision.datasets.ImageFolder`` over ``DIR/train/<class>/...`` and
  ``DIR/test/<class>/...``, decoded lazily (a dataset larger than memory streams).
* ``tensors:FILE``: a safetensors or ``.npz`` file holding ``train_x, train_y, test_x, test_y``.

The transform (channels, image size, mean/std) is part of the spec. What a checkpoint records
(:meth:`Data.record`) adds the class names and a fingerprint of the data (sizes, and for
ImageFolder the sorted file list, for tensors the file's sha256), so that class ids and sample
indices cannot silently shift between the model, forget sets and reports.

The training set's own order is the order indices refer to. A fixed validation split (seeded,
5 000 images or a tenth of a small training set) is held out from training and used only to
choose hyper-parameters such as the scale.
"""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataNotFoundError, InputFileError, UsageError
from ..registry import Registry
from ..io.files import indices_sha256

VALIDATION_SIZE = 5000  # carved from the training set with VALIDATION_SEED
VALIDATION_SEED = 0
BATCH = 512
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---------------------------------------------------------------------------------------------
# specs
@dataclass(frozen=True)
class DatasetSpec:
    """What ``--dataset`` names, plus the transform that turns its images into model inputs."""

    kind: str
    location: Optional[str] = None  # DIR for imagefolder, FILE for tensors
    channels: Optional[int] = None  # 1 or 3; None = the data's own
    size: Optional[int] = None  # imagefolder: images are resized to size x size
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.location}" if self.location else self.kind

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("mean", "std"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d

    @staticmethod
    def parse(text: str, channels: Optional[int] = None, size: Optional[int] = None,
              mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> "DatasetSpec":
        """``mnist``, ``imagefolder:DIR``, ``tensors:FILE`` (plus transform options)."""
        text = text.strip()
        kind, _, location = text.partition(":")
        if kind not in DATASET_KINDS:
            raise UsageError(f"unknown dataset {text!r}; use {', '.join(DATASET_KINDS.names())}, "
                             "imagefolder:DIR or tensors:FILE")
        needs_location = DATASET_KINDS.get(kind).needs_location
        if needs_location and not location:
            raise UsageError(f"dataset {kind} needs a location: {kind}:PATH")
        if not needs_location and location:
            raise UsageError(f"dataset {kind} takes no location (got {text!r}); use --data-dir for its root")
        if channels is not None and channels not in (1, 3):
            raise UsageError(f"--channels must be 1 or 3, got {channels}")
        if size is not None and (kind != "imagefolder" or size <= 0):
            raise UsageError("--image-size applies to imagefolder datasets and must be positive")
        for name, v in (("mean", mean), ("std", std)):
            if v is not None and (not v or not all(math.isfinite(x) for x in v)):
                raise UsageError(f"--{name} must be finite numbers")
        if std is not None and any(x <= 0 for x in std):
            raise UsageError("--std must be positive")
        if location and kind == "imagefolder":
            location = str(Path(location).expanduser().resolve())
        elif location:
            location = str(Path(location).expanduser().resolve())
        return DatasetSpec(kind, location or None, channels, size,
                           tuple(float(x) for x in mean) if mean is not None else None,
                           tuple(float(x) for x in std) if std is not None else None)

    @staticmethod
    def from_record(record: Any) -> "DatasetSpec":
        """A spec from a checkpoint's ``dataset`` entry (a dict, or a plain name in older files)."""
        if isinstance(record, str):
            return DatasetSpec.parse(record)
        if not isinstance(record, dict) or "kind" not in record:
            raise InputFileError(f"unreadable dataset record {record!r}")
        return DatasetSpec(record["kind"], record.get("location"), record.get("channels"), record.get("size"),
                           tuple(record["mean"]) if record.get("mean") is not None else None,
                           tuple(record["std"]) if record.get("std") is not None else None)


# ---------------------------------------------------------------------------------------------
# datasets
class ImageTensors(Dataset):
    """Images held in memory (uint8 (N, C, H, W), or floats of any shape), normalised as they are read.

    uint8 images are divided by 255, ``channels`` repeats a grey channel (1 -> 3), then
    ``(x - mean) / std`` per channel (``mean``/``std`` already have one entry per final channel, or
    one for all). ``dataset[list_of_indices]`` returns a whole batch ``(x, y)``: one indexing
    operation instead of one per sample, which is what :func:`batches` asks for.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float] = (0.0,),
                 std: Sequence[float] = (1.0,), channels: Optional[int] = None) -> None:
        self.images = images
        self.targets = torch.as_tensor(labels, dtype=torch.int64)
        own = images.shape[1] if images.dim() == 4 else None
        self.repeat = channels // own if (channels and own and channels != own) else 1
        shape = (1, -1, 1, 1) if images.dim() == 4 else ()
        if images.dim() != 4 and (len(mean) != 1 or len(std) != 1):
            raise UsageError("per-channel mean/std need images shaped (N, C, H, W)")
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(shape)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(shape)
        self.scale = 255.0 if images.dtype == torch.uint8 else 1.0

    def __len__(self) -> int:
        return len(self.targets)

    def inputs(self, index) -> torch.Tensor:
        x = self.images[index]
        x = x if x.is_floating_point() else x.to(torch.float32)  # float64 data stays float64
        if self.scale != 1.0:
            x = x / self.scale
        if self.repeat > 1:
            x = x.repeat_interleave(self.repeat, dim=-3)
        return (x - self.mean) / self.std

    def __getitem__(self, index):
        if isinstance(index, int):  # one sample, shaped as one (mean/std carry a batch dimension)
            return self.inputs([index])[0], int(self.targets[index])
        index = torch.as_tensor(index, dtype=torch.int64)
        return self.inputs(index), self.targets[index]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs(torch.tensor([0])).shape[1:]) if len(self) else ()


class Batched(Dataset):
    """A per-sample dataset asked for whole batches: ``dataset[list] -> (stacked x, labels)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index):
        if isinstance(index, int):
            return self.dataset[index]
        items = [self.dataset[int(i)] for i in index]
        return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def batch_dataset(dataset: Dataset) -> Dataset:
    """``dataset`` if it already answers batch indexing, else wrapped in :class:`Batched`."""
    return dataset if isinstance(dataset, (ImageTensors, Batched)) else Batched(dataset)


# ---------------------------------------------------------------------------------------------
# splits and batches
@dataclass(frozen=True)
class Split:
    """Some samples of a dataset, with the label each is yielded with.

    ``labels`` defaults to the dataset's own; a relabelled split (a backdoor's true labels, a
    forget set's wrong ones) carries other labels for the same images.
    """

    dataset: Dataset
    indices: torch.Tensor  # int64 positions in `dataset`
    labels: torch.Tensor  # int64, one per index

    @staticmethod
    def of(dataset: Dataset, indices: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None) -> "Split":
        dataset = batch_dataset(dataset)
        if indices is None:
            indices = torch.arange(len(dataset))  # type: ignore[arg-type]
        indices = torch.as_tensor(indices, dtype=torch.int64)
        if labels is None:
            labels = dataset_labels(dataset)[indices]
        return Split(dataset, indices, torch.as_tensor(labels, dtype=torch.int64))

    def __len__(self) -> int:
        return int(self.indices.numel())

    def where(self, keep: torch.Tensor) -> "Split":
        """The samples at ``keep`` (a boolean mask or positions within this split)."""
        return Split(self.dataset, self.indices[keep], self.labels[keep])

    def relabel(self, labels: torch.Tensor) -> "Split":
        return Split(self.dataset, self.indices, torch.as_tensor(labels, dtype=torch.int64))

    def sample(self, count: int, seed: int) -> "Split":
        """``count`` samples drawn without replacement under ``seed``, kept in split order."""
        n = min(count, len(self))
        pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return self.where(pick)


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Every label of a map-style dataset: its ``targets`` when it has them (a Subset's through its
    parent), else read sample by sample."""
    from torch.utils.data import Subset

    if isinstance(dataset, Batched):
        dataset = dataset.dataset
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.int64)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)  # type: ignore


def concat(a: Split, b: Split) -> Split:
    """The samples of ``a`` then those of ``b`` (over one dataset, or a ConcatDataset of the two)."""
    if a.dataset is b.dataset:
        return Split(a.dataset, torch.cat([a.indices, b.indices]), torch.cat([a.labels, b.labels]))
    from torch.utils.data import ConcatDataset

    joined = Batched(ConcatDataset([a.dataset, b.dataset]))
    offset = len(a.dataset)  # type: ignore[arg-type]
    return Split(joined, torch.cat([a.indices, b.indices + offset]), torch.cat([a.labels, b.labels]))


Batch = tuple[torch.Tensor, torch.Tensor]


def batches(split: Split, batch_size: int = BATCH, workers: int = 0, positions: Optional[torch.Tensor] = None,
            ) -> Iterator[Batch]:
    """Walk ``split`` (or the given positions of it) in order, one ``(x, y)`` batch at a time.

    Every walk over data goes through a DataLoader (``workers`` processes decode in parallel);
    memory stays bounded by a batch.
    """
    pos = torch.arange(len(split)) if positions is None else positions
    if pos.numel() == 0:
        return iter(())
    chunks = [pos[i:i + batch_size] for i in range(0, int(pos.numel()), batch_size)]
    sampler = [split.indices[c].tolist() for c in chunks]
    labels = [split.labels[c] for c in chunks]
    loader = DataLoader(split.dataset, batch_size=None, sampler=sampler, num_workers=workers,
                        persistent_workers=False)
    return ((x, y) for (x, _), y in zip(_checked(loader), labels))


def _checked(loader: DataLoader):
    """Re-raise a worker's gif error with its own one-line message (DataLoader adds a traceback)."""
    try:
        yield from loader
    except InputFileError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise InputFileError(lines[-1] if lines else "cannot read a sample") from None


def materialise(split: Split, batch_size: int = BATCH, workers: int = 0) -> Split:
    """The same samples decoded and normalised once, in memory (for a split walked many times)."""
    xs = [x for x, _ in batches(split, batch_size, workers)]
    if not xs:
        return split
    return Split(ImageTensors(torch.cat(xs), split.labels.clone()), torch.arange(len(split)), split.labels.clone())


# ---------------------------------------------------------------------------------------------
# readers of the built-in kinds
def search_path(data_dir: Optional[str] = None) -> list[Path]:
    candidates = [data_dir, os.environ.get("GIF_DATA_DIR"), "./data"]
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


@dataclass
class RawSplit:
    """uint8 images (N, C, H, W) and int64 labels, before normalisation."""

    images: torch.Tensor
    labels: torch.Tensor


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
            entry = pickle.load(fh, encoding="latin1")  # torchvision's own format for CIFAR-10
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
    """uint8 images and labels of a built-in dataset, searched for and downloaded if absent."""
    if dataset not in _READERS:
        raise UsageError(f"unknown dataset {dataset!r}; choose from {', '.join(_READERS)}")
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


# ---------------------------------------------------------------------------------------------
# loaded data
def train_validation_indices(n_train: int, size: int = VALIDATION_SIZE, seed: int = VALIDATION_SEED):
    """Fixed split of the training set: (fit indices, validation indices), both sorted."""
    size = min(size, n_train // 10) if n_train < 10 * size else size
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[size:].sort().values, perm[:size].sort().values



def check_label(label: Any, num_classes: int, what: str = "label", error: type = UsageError) -> int:
    """``label`` as one of ``num_classes`` classes, or one line naming it and the classes there are."""
    if label is None or isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise error(f"{what} {label} is outside the classes 0..{num_classes - 1}")
    return label


@dataclass
class Data:
    """A loaded dataset: training set (its own order), test set, classes, and the fixed splits."""

    spec: DatasetSpec  # with every transform field resolved
    train: Dataset
    test: Dataset
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    fingerprint: dict = field(default_factory=dict)
    train_labels: torch.Tensor = field(default=None)  # type: ignore[assignment]
    test_labels: torch.Tensor = field(default=None)  # type: ignore[assignment]
    raw_train: Optional[RawSplit] = None  # uint8 images, for in-memory kinds (backdoor poisoning)
    raw_test: Optional[RawSplit] = None

    def __post_init__(self) -> None:
        self.train = batch_dataset(self.train)
        self.test = batch_dataset(self.test)
        if self.train_labels is None:
            self.train_labels = dataset_labels(self.train)
        if self.test_labels is None:
            self.test_labels = dataset_labels(self.test)
        self.fit_indices, self.validation_indices = train_validation_indices(len(self.train_labels))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def check_label(self, label: Any, what: str = "label", error: type = UsageError) -> int:
        """``label`` as a class of this data, or one line naming it and the classes there are."""
        return check_label(label, self.num_classes, what, error)

    @property
    def train_size(self) -> int:
        return len(self.train_labels)

    @property
    def fit(self) -> Split:
        """The training set minus the validation split: what models are trained on."""
        return Split(self.train, self.fit_indices, self.train_labels[self.fit_indices])

    @property
    def validation(self) -> Split:
        return Split(self.train, self.validation_indices, self.train_labels[self.validation_indices])

    @property
    def test_split(self) -> Split:
        return Split(self.test, torch.arange(len(self.test_labels)), self.test_labels)

    def validation_record(self) -> dict:
        return {"size": int(self.validation_indices.numel()), "seed": VALIDATION_SEED,
                "indices_sha256": indices_sha256(self.validation_indices.numpy())}

    def record(self) -> dict:
        """What checkpoints, forget sets and reports store about the data."""
        return {**self.spec.as_dict(), "name": self.spec.name, "classes": list(self.classes),
                "input_shape": list(self.input_shape), "fingerprint": self.fingerprint,
                "validation": self.validation_record()}

    def check_record(self, recorded: Any, what: str) -> None:
        """Refuse data that is not the data ``recorded`` describes (class names, sizes, files)."""
        if isinstance(recorded, str):  # older checkpoints: a plain built-in name
            if recorded != self.spec.kind:
                raise UsageError(f"{what} was made on dataset {recorded!r}, not {self.spec.name!r}")
            return
        if recorded.get("kind") != self.spec.kind:
            raise UsageError(f"{what} was made on dataset {recorded.get('name', recorded.get('kind'))!r}, "
                             f"not {self.spec.name!r}")
        classes = recorded.get("classes")
        if classes is not None and list(classes) != list(self.classes):
            raise InputFileError(f"{what} was made on classes {classes}, the dataset at {self.spec.name} has "
                                 f"{list(self.classes)}: class ids would shift")
        fp = recorded.get("fingerprint") or {}
        for key, value in fp.items():
            if key in self.fingerprint and self.fingerprint[key] != value:
                raise InputFileError(f"{what} was made on another version of {self.spec.name} "
                                     f"({key} {str(value)[:16]} recorded, {str(self.fingerprint[key])[:16]} found)")
        for key in ("channels", "size", "mean", "std"):
            mine = getattr(self.spec, key)
            theirs = recorded.get(key)
            if theirs is not None and mine is not None and not _same_setting(mine, theirs, key):
                raise UsageError(f"{what} was made with {key} {theirs}, the dataset given has {key} {mine}")


def _same_setting(mine: Any, theirs: Any, key: str) -> bool:
    """A recorded data setting matches; mean and std computed from the data match to rel. 1e-9 (a
    float reduction's last digits depend on the machine and its thread count)."""
    mine = list(mine) if isinstance(mine, tuple) else mine
    if key not in ("mean", "std") or not isinstance(theirs, list) or not isinstance(mine, list):
        return mine == theirs
    return len(mine) == len(theirs) and all(math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
                                            for a, b in zip(mine, theirs))


# ---------------------------------------------------------------------------------------------
# kinds
@dataclass(frozen=True)
class DatasetKind:
    """How one kind of dataset is loaded: ``load(spec, data_dir, download) -> Data``."""

    load: Callable[[DatasetSpec, Optional[str], bool], Data]
    needs_location: bool = False
    help: str = ""


DATASET_KINDS: Registry[DatasetKind] = Registry("dataset")


def _builtin(kind: str):
    def load(spec: DatasetSpec, data_dir: Optional[str], download: bool) -> Data:
        train, test = load_raw(kind, "train", data_dir, download), load_raw(kind, "test", data_dir, download)
        mean, std = NORMALISATION[kind]
        own = train.images.shape[1]
        channels = spec.channels or own
        if channels % own:
            raise UsageError(f"{kind} has {own} channel(s); --channels {channels} cannot be made from them")
        mean_v = spec.mean or tuple(mean) * (channels // own)
        std_v = spec.std or tuple(std) * (channels // own)
        resolved = replace(spec, channels=channels, mean=tuple(mean_v), std=tuple(std_v))
        classes = CIFAR_CLASSES if kind == "cifar10" else tuple(str(i) for i in range(10))
        tr = ImageTensors(train.images, train.labels, mean_v, std_v, channels)
        te = ImageTensors(test.images, test.labels, mean_v, std_v, channels)
        return Data(resolved, tr, te, classes, tr.input_shape, {"train_count": len(train.labels),
                                                                "test_count": len(test.labels)},
                    raw_train=train, raw_test=test)

    return load


DATASET_KINDS.register("mnist", DatasetKind(_builtin("mnist"), help="MNIST (torchvision layout)"))
DATASET_KINDS.register("cifar10", DatasetKind(_builtin("cifar10"), help="CIFAR-10 (torchvision layout)"))


def load_data(spec: DatasetSpec, data_dir: Optional[str] = None, download: bool = True) -> Data:
    """Load the dataset a spec names (user errors are one-line GifErrors)."""
    return DATASET_KINDS.get(spec.kind).load(spec, data_dir, download)


def channel_stats(dataset: Dataset, batch_size: int = BATCH, workers: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a dataset's un-normalised inputs (one pass)."""
    split = Split.of(dataset)
    total = sq = None
    count = 0
    for x, _ in batches(split, batch_size, workers):
        x = x.double()
        dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 1 else [0]
        s, q = x.sum(dims), (x * x).sum(dims)
        total = s if total is None else total + s
        sq = q if sq is None else sq + q
        count += x.numel() // (x.shape[1] if x.dim() > 1 else 1)
    if total is None:
        raise InputFileError("cannot compute mean/std: the training set is empty")
    mean = total / count
    std = (sq / count - mean ** 2).clamp(min=1e-12).sqrt()
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
