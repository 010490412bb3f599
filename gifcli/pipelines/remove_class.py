"""gif remove-class: select -> influence -> (scale sweep on validation) -> apply -> evaluate."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch

from ..io.files import make_folder, provenance, write_json
from ..math.influence import SolverOptions
from ..math.solvers import Progress
from .steps import check_label, influence_step, load_data, load_model, scale_and_apply, select_step
from .unlearn import forget_metrics, label_target, parse_scales


def remove_class(model_path: str | Path, label: int, criterion: str, ratio: float, method: str,
                 options: SolverOptions, scale: str, hessian_samples: int, seed: int, folder: Path,
                 device: torch.device, data_dir: Optional[str], progress: Progress = None,
                 sweep_progress=None) -> dict:
    start = time.perf_counter()
    scales = parse_scales(scale)
    loaded = load_model(model_path)
    check_label(loaded, label)
    splits = load_data(loaded, data_dir)
    make_folder(folder)
    target = label_target(splits.train, label, splits.num_classes, splits.dataset)
    mask_path, infl_path, edited_path = folder / "mask.json", folder / "influence.safetensors", folder / "edited.safetensors"
    if method != "if":
        select_step(loaded, target, criterion, ratio, seed, None, len(splits.train), mask_path)
    imeta = influence_step(loaded, None if method == "if" else mask_path, target, splits.train, method, options,
                           hessian_samples, seed, device, infl_path, progress)
    chosen, sweep = scale_and_apply(loaded, infl_path, scales, lambda m: forget_metrics(m, splits.validation, label),
                                    edited_path, sweep_progress)
    edited = load_model(edited_path)
    base_metrics = forget_metrics(loaded.model, splits.test, label)
    edited_metrics = forget_metrics(edited.model, splits.test, label)
    report = {
        "format": "gif-remove-class", "version": 1, "label": label, "model": str(model_path),
        "criterion": criterion, "ratio": ratio, "method": method, "solver": options.solver,
        "scale": chosen, "scale_choice": "validation sweep (best F1)" if sweep else "given",
        "validation_sweep": sweep, "influence": {k: imeta[k] for k in ("stats", "seconds", "hessian", "device")},
        "base": base_metrics, "edited": edited_metrics,
        "seconds": time.perf_counter() - start, "provenance": provenance(kind="remove-class"),
    }
    write_json(folder / "report.json", report)
    return report
