"""File-level steps shared by the CLI's commands and the composed pipelines.

Each step reads its inputs, checks they belong together, computes, and writes its output
atomically with a record of what produced it. Nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..data.datasets import DatasetSplits, Split, load_splits
from ..errors import UsageError
from ..io.artifacts import index_sha256, mask_document, read_influence, read_mask, write_influence, write_mask
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..io.files import provenance, sha256_file, write_json
from ..math.influence import SolverOptions
from ..math.params import IndexSet
from ..math.solvers import Progress
from .unlearn import (DEFAULT_SCALES, Target, choose, compute_influence, edited_copy, forget_metrics, space_of,
                      sweep_scales)


@dataclass
class Loaded:
    model: nn.Module
    meta: dict
    path: str

    @property
    def sha(self) -> str:
        return self.meta["weights_sha256"]


def load_model(path: str | Path) -> Loaded:
    model, meta = load_checkpoint(path)
    return Loaded(model, meta, str(path))


def load_data(loaded: Loaded, data_dir: Optional[str]) -> DatasetSplits:
    return load_splits(loaded.meta["dataset"], data_dir)


def check_label(loaded: Loaded, label: int) -> None:
    n = loaded.meta["num_classes"]
    if not 0 <= label < n:
        raise UsageError(f"label {label} is outside the model's classes 0..{n - 1}")


def select_step(loaded: Loaded, target: Target, criterion: str, ratio: float, seed: int,
                threshold: Optional[float], train_count: int, out: str | Path) -> tuple[IndexSet, dict]:
    """Choose J on the target's images (train_count = N of the gradient scaling) and write the mask."""
    J = choose(loaded.model, target, criterion, ratio, seed, threshold, torch.device("cpu"), train_count)
    doc = mask_document(J, loaded.sha, {
        "criterion": criterion, "ratio": ratio, "seed": seed, "threshold": threshold,
        "forget": target.describe, "model": loaded.path,
        "provenance": provenance(kind="select"),
    })
    write_mask(out, doc)
    return J, doc


def influence_step(loaded: Loaded, mask_path: Optional[str | Path], target: Target, train: Split,
                   method: str, options: SolverOptions, hessian_samples: int, hessian_seed: int,
                   device: torch.device, out: str | Path, progress: Progress = None,
                   hvp_mode: str = "retain") -> dict:
    space = space_of(loaded.model)
    if method == "if":
        J = IndexSet.everything(space)
        mask_info = {"mask": None}
    else:
        if mask_path is None:
            raise UsageError(f"--mask is required for method {method!r} (only 'if' uses every parameter)")
        J, doc = read_mask(mask_path, space, loaded.sha)
        mask_info = {"mask": str(mask_path), "mask_sha256": sha256_file(mask_path), "criterion": doc.get("criterion"),
                     "ratio": doc.get("ratio")}
    run = compute_influence(loaded.model, J, target, train, method, options, hessian_samples,
                            hessian_seed, device, progress, hvp_mode)
    loaded.model.cpu()
    meta = {"model_sha256": loaded.sha, "model": loaded.path, **mask_info, "selected": run.J.size, **run.info,
            "provenance": provenance(kind="influence")}
    write_influence(out, run.delta, run.J, meta)
    return meta


def apply_step(loaded: Loaded, influence_path: str | Path, scale: float, out: str | Path) -> dict:
    delta, J, imeta = read_influence(influence_path, space_of(loaded.model), loaded.sha)
    edited = edited_copy(loaded.model, J, delta, scale)
    meta = {k: loaded.meta[k] for k in ("arch", "dataset", "num_classes", "input_shape", "hidden", "train_config")
            if k in loaded.meta}
    meta.update({
        "train_samples": loaded.meta.get("train_samples"),
        "edit": {
            "base_model": loaded.path, "base_model_sha256": loaded.sha,
            "influence": str(influence_path), "influence_sha256": sha256_file(influence_path),
            "index_sha256": index_sha256(J), "mask_sha256": imeta.get("mask_sha256"),
            "method": imeta.get("method"), "target": imeta.get("target"), "scale": scale,
            "selected": J.size, "train_seconds_of_base": loaded.meta.get("train_seconds"),
            "influence_seconds": imeta.get("seconds"),
        },
        "provenance": provenance(kind="apply"),
    })
    return save_checkpoint(out, edited, meta)


def scale_and_apply(loaded: Loaded, influence_path: str | Path, scales: Optional[list[float]], score,
                    out: str | Path, progress=None, score_single: bool = False) -> tuple[float, Optional[list[dict]]]:
    """Sweep the scale (``scales`` None -> the default grid; several -> those) with ``score`` on a
    validation split, or take the single given scale (scored too with ``score_single``); then
    write the edited model to ``out``."""
    sweep = None
    if scales is None or len(scales) > 1 or score_single:
        delta, J, _ = read_influence(influence_path, space_of(loaded.model), loaded.sha)
        chosen, sweep = sweep_scales(loaded.model, J, delta, scales or DEFAULT_SCALES, score, progress)
    else:
        chosen = scales[0]
    apply_step(loaded, influence_path, chosen, out)
    return chosen, sweep


def evaluate_model(loaded: Loaded, splits: DatasetSplits, label: Optional[int]) -> dict:
    from ..models.train import loss_and_accuracy

    if label is None:
        loss, acc = loss_and_accuracy(loaded.model, splits.test.x, splits.test.y)
        return {"test": {"count": len(splits.test), "loss": loss, "accuracy": acc}}
    check_label(loaded, label)
    return forget_metrics(loaded.model, splits.test, label)


def write_report(path: str | Path, report: dict) -> None:
    write_json(path, report)
