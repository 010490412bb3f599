"""gif backdoor: poison -> train -> recover (relabel GIF) -> evaluate, as in section 5.3.

Recovery reuses remove-class's pieces (select_step, influence_step, scale_and_apply); only
the target differs: g = grad[L(poisoned, backdoor label) - L(poisoned, true labels)] scaled by
|poisoned| / |clean|, with the Hessian sample drawn from the clean training images.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data.backdoor import (POISON_FORMAT, TRIGGER_VALUE, add_trigger, choose_poisoned, indices_sha256,
                             poison_images)
from ..data.datasets import DATASETS, Split, load_raw, normalise, train_validation_indices
from ..errors import InputFileError, UsageError
from ..io.files import make_folder, provenance, read_json, write_json
from ..math.influence import SolverOptions
from ..math.solvers import Progress
from ..models.train import TrainProgress, predictions
from .steps import Loaded, influence_step, load_model, scale_and_apply, select_step
from .train import TrainReport, train_and_save
from .unlearn import Target, f1_score, parse_scales

NUM_CLASSES = 10


def make_poison_doc(dataset: str, fraction: float, target_label: int, seed: int, data_dir: Optional[str]) -> dict:
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--fraction must be in (0, 1), got {fraction}")
    if not 0 <= target_label < NUM_CLASSES:
        raise UsageError(f"--target-label {target_label} is outside the classes 0..{NUM_CLASSES - 1}")
    n = len(load_raw(dataset, "train", data_dir).labels)
    idx = choose_poisoned(n, fraction, seed)
    return {
        "format": POISON_FORMAT, "version": 1, "dataset": dataset, "split": "train", "train_size": n,
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
        idx = np.asarray(doc["indices"], dtype=np.int64)
        n, target = int(doc["train_size"]), int(doc["target_label"])
        value = int(doc["trigger"]["value"])
        dataset = doc["dataset"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(f"{path}: malformed poison file ({type(exc).__name__}: {exc})") from None
    if dataset not in DATASETS:
        raise InputFileError(f"{path}: unknown dataset {dataset!r}")
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= n or np.any(np.diff(idx) <= 0):
        raise InputFileError(f"{path}: indices must be sorted, unique and within 0..{n - 1}")
    if indices_sha256(idx) != doc.get("indices_sha256"):
        raise InputFileError(f"{path}: indices do not match their recorded sha256 (edited or corrupted)")
    if not 0 <= target < NUM_CLASSES or not 0 < value < 256:
        raise InputFileError(f"{path}: target label or trigger value out of range")
    return doc


@dataclass
class BackdoorData:
    doc: dict
    train_backdoor: Split  # the training split as the backdoored model saw it
    train_true: Split  # the same images with their true labels (retraining baseline)
    target: Target  # poisoned training-split images: backdoor label and true labels
    clean_train: Split  # training-split images that were not poisoned
    val_poisoned: Split  # validation images that were poisoned, with true labels
    val_clean: Split
    bd_x: torch.Tensor  # every poisoned training image (Table 3's "BD data")
    bd_true_y: torch.Tensor
    test: Split
    triggered_test: Split  # test images whose true label is not the target, with the trigger
    input_shape: tuple


def load_backdoor(doc: dict, data_dir: Optional[str]) -> BackdoorData:
    dataset, target_label, value = doc["dataset"], int(doc["target_label"]), int(doc["trigger"]["value"])
    raw = load_raw(dataset, "train", data_dir)
    if len(raw.labels) != int(doc["train_size"]):
        raise InputFileError(f"the poison file is for a training set of {doc['train_size']} images, found {len(raw.labels)}")
    idx = torch.as_tensor(doc["indices"], dtype=torch.int64)
    images, bd_labels = poison_images(raw.images, raw.labels, idx, target_label, value)
    x = normalise(dataset, images)
    is_poison = torch.zeros(len(raw.labels), dtype=torch.bool)
    is_poison[idx] = True
    tr, va = train_validation_indices(len(raw.labels))
    p_tr, p_va = is_poison[tr], is_poison[va]
    xt, yt_bd, yt_true = x[tr], bd_labels[tr], raw.labels[tr]
    describe = {"kind": "relabel", "dataset": dataset, "split": "train", "poison_sha256": doc["indices_sha256"],
                "target_label": target_label, "count": int(p_tr.sum())}
    test_raw = load_raw(dataset, "test", data_dir)
    keep = test_raw.labels != target_label
    return BackdoorData(
        doc=doc,
        train_backdoor=Split(xt, yt_bd),
        train_true=Split(xt, yt_true),
        target=Target("relabel", describe, xt[p_tr], yt_bd[p_tr], yt_true[p_tr]),
        clean_train=Split(xt[~p_tr], yt_true[~p_tr]),
        val_poisoned=Split(x[va][p_va], raw.labels[va][p_va]),
        val_clean=Split(x[va][~p_va], raw.labels[va][~p_va]),
        bd_x=x[is_poison],
        bd_true_y=raw.labels[is_poison],
        test=Split(normalise(dataset, test_raw.images), test_raw.labels),
        triggered_test=Split(normalise(dataset, add_trigger(test_raw.images[keep], value)), test_raw.labels[keep]),
        input_shape=tuple(raw.images.shape[1:]),
    )


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).double().mean()) if len(y) else float("nan")


def backdoor_metrics(model: nn.Module, data: BackdoorData) -> dict:
    """Table 3's three columns plus the attack success rate on triggered test images."""
    target = int(data.doc["target_label"])
    bd_pred = predictions(model, data.bd_x)
    trig_pred = predictions(model, data.triggered_test.x)
    return {
        "bd_data_backdoor_label_accuracy": _acc(bd_pred, torch.full_like(data.bd_true_y, target)),
        "bd_data_true_label_accuracy": _acc(bd_pred, data.bd_true_y),
        "test_accuracy": _acc(predictions(model, data.test.x), data.test.y),
        "attack_success_rate": _acc(trig_pred, torch.full_like(trig_pred, target)),
        "counts": {"bd_data": len(data.bd_true_y), "test": len(data.test), "triggered_test": len(data.triggered_test)},
    }


def validation_score(model: nn.Module, data: BackdoorData) -> dict:
    """What --scale auto maximises, on training-set images only (never the test set).

    F1 (eq. 14) of (1 - attack success on poisoned validation images whose true label is not
    the target) and the utility = mean of the poisoned validation images' true-label accuracy
    and the clean validation accuracy.
    """
    target = int(data.doc["target_label"])
    vp = predictions(model, data.val_poisoned.x)
    not_target = data.val_poisoned.y != target
    asr = _acc(vp[not_target], torch.full_like(vp[not_target], target))
    utility = 0.5 * (_acc(vp, data.val_poisoned.y) + _acc(predictions(model, data.val_clean.x), data.val_clean.y))
    return {"attack_success": asr, "utility": utility, "f1": f1_score(asr, utility)}


def train_backdoor(cfg: TrainConfig, poison_path: str | Path, out: str | Path, device: torch.device,
                   data_dir: Optional[str], true_labels: bool, progress: TrainProgress = None) -> TrainReport:
    doc = read_poison(poison_path)
    if cfg.dataset != doc["dataset"]:
        raise UsageError(f"config dataset {cfg.dataset!r} differs from the poison file's {doc['dataset']!r}")
    data = load_backdoor(doc, data_dir)
    train = data.train_true if true_labels else data.train_backdoor
    val = Split(torch.cat([data.val_clean.x, data.val_poisoned.x]), torch.cat([data.val_clean.y, data.val_poisoned.y]))
    extra = {"backdoor": {"poison": str(poison_path), "poison_sha256": doc["indices_sha256"],
                          "labels": "true" if true_labels else "backdoor", "target_label": doc["target_label"]}}
    return train_and_save(cfg, train, val, data.test, data.input_shape, NUM_CLASSES, out, device, extra, progress,
                          "clean test images")


def _check_model_poison(loaded: Loaded, doc: dict) -> None:
    if loaded.meta.get("dataset") != doc["dataset"]:
        raise InputFileError(f"model {loaded.path} is a {loaded.meta.get('dataset')} model, the poison file is for {doc['dataset']}")
    recorded = (loaded.meta.get("backdoor") or {}).get("poison_sha256")
    if recorded is not None and recorded != doc["indices_sha256"]:
        raise InputFileError(f"model {loaded.path} was trained on another poison file")


def recover(model_path: str | Path, poison_path: str | Path, criterion: str, ratio: float, method: str,
            options: SolverOptions, scale: str, hessian_samples: int, seed: int, out: str | Path, run_dir: Path,
            device: torch.device, data_dir: Optional[str], progress: Progress = None, sweep_progress=None) -> dict:
    start = time.perf_counter()
    scales = parse_scales(scale)
    loaded = load_model(model_path)
    doc = read_poison(poison_path)
    _check_model_poison(loaded, doc)
    data = load_backdoor(doc, data_dir)
    make_folder(run_dir)
    mask_path, infl_path = run_dir / "mask.json", run_dir / "influence.safetensors"
    n_clean = len(data.clean_train)
    if method != "if":
        select_step(loaded, data.target, criterion, ratio, seed, None, n_clean, mask_path)
    imeta = influence_step(loaded, None if method == "if" else mask_path, data.target, data.clean_train, method,
                           options, hessian_samples, seed, device, infl_path, progress)
    chosen, sweep = scale_and_apply(loaded, infl_path, scales, lambda m: validation_score(m, data), out, sweep_progress)
    recover_seconds = time.perf_counter() - start
    recovered = load_model(out)
    report = {
        "format": "gif-backdoor-recover", "version": 1, "model": str(model_path), "poison": str(poison_path),
        "criterion": criterion, "ratio": ratio, "method": method, "solver": options.solver, "scale": chosen,
        "scale_choice": "validation sweep (best F1 of 1 - attack success and utility)" if sweep else "given",
        "validation_sweep": sweep, "influence": {k: imeta[k] for k in ("stats", "seconds", "hessian", "device")},
        "recover_seconds": recover_seconds, "base_train_seconds": loaded.meta.get("train_seconds"),
        "base": backdoor_metrics(loaded.model, data), "recovered": backdoor_metrics(recovered.model, data),
        "provenance": provenance(kind="backdoor recover"),
    }
    write_json(run_dir / "report.json", report)
    return report


def evaluate_backdoor(model_path: str | Path, poison_path: str | Path, data_dir: Optional[str]) -> dict:
    loaded = load_model(model_path)
    doc = read_poison(poison_path)
    if loaded.meta.get("dataset") != doc["dataset"]:
        raise InputFileError(f"model {model_path} is a {loaded.meta.get('dataset')} model, the poison file is for {doc['dataset']}")
    data = load_backdoor(doc, data_dir)
    return {"format": "gif-backdoor-report", "version": 1, "model": str(model_path), "model_sha256": loaded.sha,
            "poison": str(poison_path), "poison_sha256": doc["indices_sha256"], **backdoor_metrics(loaded.model, data),
            "provenance": provenance(kind="backdoor evaluate")}
