"""gif train: fit a model from a config and save a checkpoint that records how."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..config import TrainConfig
from ..data.datasets import Split, load_splits
from ..errors import UsageError
from ..io.checkpoint import save_checkpoint
from ..io.files import provenance
from ..models.train import TrainProgress, loss_and_accuracy, train_model
from ..models.zoo import build_model


@dataclass
class TrainReport:
    out: str
    test_loss: float
    test_accuracy: float
    validation_accuracy: float
    seconds: float
    metadata: dict


def train_and_save(cfg: TrainConfig, train: Split, validation: Split, test: Split, input_shape, num_classes: int,
                   out: str | Path, device: torch.device, extra_meta: dict, progress: TrainProgress = None,
                   test_description: str = "test images") -> TrainReport:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, input_shape, num_classes, cfg.hidden)
    result = train_model(model, train.x, train.y, cfg, device, progress)
    test_loss, test_acc = loss_and_accuracy(model, test.x, test.y)
    _, val_acc = loss_and_accuracy(model, validation.x, validation.y)
    meta = {
        "arch": cfg.model,
        "dataset": cfg.dataset,
        "num_classes": num_classes,
        "input_shape": list(input_shape),
        "hidden": cfg.hidden,
        "train_config": cfg.as_dict(),
        "train_samples": len(train),
        **extra_meta,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "test_accuracy_on": test_description,
        "validation_accuracy": val_acc,
        "train_seconds": result.seconds,
        "history": result.history,
        "provenance": provenance(kind="train", device=str(device)),
    }
    full = save_checkpoint(out, model.cpu(), meta)
    return TrainReport(str(out), test_loss, test_acc, val_acc, result.seconds, full)


def run_train(cfg: TrainConfig, out: str | Path, device: torch.device, data_dir: Optional[str] = None,
              exclude_label: Optional[int] = None, progress: TrainProgress = None) -> TrainReport:
    splits = load_splits(cfg.dataset, data_dir)
    if exclude_label is not None and not 0 <= exclude_label < splits.num_classes:
        raise UsageError(f"--exclude-label {exclude_label} is outside the classes 0..{splits.num_classes - 1}")
    train, test = splits.train, splits.test
    description = "test images"
    if exclude_label is not None:
        train = train.where(train.y != exclude_label)
        test = test.where(test.y != exclude_label)
        description = f"test images without label {exclude_label}"
    return train_and_save(cfg, train, splits.validation, test, splits.input_shape, splits.num_classes, out, device,
                          {"excluded_label": exclude_label}, progress, description)
