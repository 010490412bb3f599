"""gif backdoor: poison -> train -> recover (relabel GIF) -> evaluate, as in section 5.3.

Recovery is the unlearning core with the backdoor task: g = grad[L(poisoned, backdoor label)
- L(poisoned, true labels)] scaled by 1/|Hessian pool|, the Hessian of the clean training
images, the scale chosen on the poisoned and clean validation images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


from ..config import TrainConfig
from ..core.args import Runtime
from ..data.backdoor import POISON_FORMAT, TRIGGER_VALUE, BackdoorData, choose_poisoned, poison
from ..data.datasets import Data, DatasetSpec, indices_sha256, load_data
from ..errors import InputFileError, UsageError
from ..io.files import provenance, read_json
from ..models.specs import ArchSpec
from ..models.train import TrainProgress
from ..core.checkpoints import Loaded
from .train import TrainReport, train_and_save


def make_poison_doc(dataset: str, fraction: float, target_label: int, seed: int, data_dir: Optional[str]) -> dict:
    spec = DatasetSpec.parse(dataset)
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--fraction must be in (0, 1), got {fraction}")
    data = load_data(spec, data_dir)
    data.check_label(target_label, "--target-label")
    n = data.train_size
    idx = choose_poisoned(n, fraction, seed)
    if len(idx) == 0:
        raise UsageError(f"--fraction {fraction} of {n} training images poisons none")
    return {
        "format": POISON_FORMAT, "version": 1, "dataset": spec.name, "split": "train", "train_size": n,
        "fraction": fraction, "target_label": target_label, "seed": seed,
        "selection": "numpy.random.RandomState(seed).choice(train_size, int(fraction * train_size), replace=False), sorted",
        "trigger": {"kind": "checkerboard", "value": TRIGGER_VALUE, "pattern": "p[::2, 1::2] = value; p[1::2, ::2] = value",
                    "added_to": "uint8 pixels", "clip": [0, 255]},
        "count": int(len(idx)), "indices_sha256": indices_sha256(idx), "indices": idx.tolist(),
        "provenance": provenance(kind="backdoor poison"),
    }


def read_poison(path: str | Path) -> dict:
    doc = read_json(path, "poison")
    if not isinstance(doc, dict) or doc.get("format") != POISON_FORMAT:
        raise InputFileError(f"{path} is not a gif poison file (format {POISON_FORMAT!r})")
    try:
        raw = doc["indices"]
        if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
            raise ValueError("indices must be integers")
        idx = np.asarray(raw, dtype=np.int64)
        n, target = int(doc["train_size"]), int(doc["target_label"])
        value = int(doc["trigger"]["value"])
        DatasetSpec.parse(str(doc["dataset"]))
    except (KeyError, TypeError, ValueError, UsageError) as exc:
        raise InputFileError(f"{path}: malformed poison file ({type(exc).__name__}: {exc})") from None
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= n or np.any(np.diff(idx) <= 0):
        raise InputFileError(f"{path}: indices must be sorted, unique and within 0..{n - 1}")
    if indices_sha256(idx) != doc.get("indices_sha256"):
        raise InputFileError(f"{path}: indices do not match their recorded sha256 (edited or corrupted)")
    if target < 0 or not 0 < value < 256:
        raise InputFileError(f"{path}: target label or trigger value out of range")
    return doc


def load_backdoor(doc: dict, data_dir: Optional[str], data: Optional[Data] = None) -> BackdoorData:
    data = data or load_data(DatasetSpec.parse(doc["dataset"]), data_dir)
    return poison(data, doc)


def check_model_poison(loaded: Loaded, doc: dict) -> None:
    """The model must be of the poison file's dataset and, if it records one, trained on that file."""
    ds = loaded.meta.get("dataset")
    name = ds if isinstance(ds, str) else (ds or {}).get("name", (ds or {}).get("kind"))
    if name != doc["dataset"]:
        raise InputFileError(f"model {loaded.path} is a {name} model, the poison file is for {doc['dataset']}")
    recorded = (loaded.meta.get("backdoor") or {}).get("poison_sha256")
    if recorded is not None and recorded != doc["indices_sha256"]:
        raise InputFileError(f"model {loaded.path} was trained on another poison file")


def train_backdoor(cfg: TrainConfig, poison_path: str | Path, out: str | Path, rt: Runtime, data_dir: Optional[str],
                   true_labels: bool, progress: TrainProgress = None) -> TrainReport:
    doc = read_poison(poison_path)
    if cfg.dataset != doc["dataset"]:
        raise UsageError(f"config dataset {cfg.dataset!r} differs from the poison file's {doc['dataset']!r}")
    bd = load_backdoor(doc, data_dir, load_data(cfg.dataset_spec(), data_dir))
    train = bd.fit(true_labels=true_labels)
    extra = {"backdoor": {"poison": str(poison_path), "poison_sha256": doc["indices_sha256"],
                          "labels": "true" if true_labels else "backdoor", "target_label": doc["target_label"]}}
    return train_and_save(cfg, ArchSpec.parse(cfg.model, cfg.arch_kwargs), bd.data, train, bd.data.test_split, out,
                          rt, extra, progress, "clean test images")


def evaluate_backdoor(loaded: Loaded, poison_path: str | Path, rt: Runtime, data_dir: Optional[str]) -> dict:
    from ..core.tasks import BackdoorRecovery

    doc = read_poison(poison_path)
    check_model_poison(loaded, doc)
    bd = load_backdoor(doc, data_dir)
    metrics = BackdoorRecovery(bd).report(loaded.model, bd.data, rt)
    return {"format": "gif-backdoor-report", "version": 1, "model": loaded.path, "model_sha256": loaded.sha,
            "poison": str(poison_path), "poison_sha256": doc["indices_sha256"], **metrics,
            "provenance": provenance(kind="backdoor evaluate")}


