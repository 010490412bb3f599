"""The pieces every unlearning pipeline shares: forget set -> J -> influence -> apply -> evaluate.

``remove-class`` and ``backdoor recover`` both compose these; nothing here prints.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..data.datasets import Split
from ..errors import GifError, UsageError
from ..math.hvp import HessianSample, mean_loss_gradient
from ..math.influence import METHODS, SolverOptions, apply_update, influence
from ..math.params import IndexSet, ParamSpace
from ..math.selection import CRITERIA, gradient_scores, output_scores, select
from ..math.solvers import Progress
from ..models.train import loss_and_accuracy

DEFAULT_SCALES = tuple(round(2 ** (k / 2), 6) for k in range(-20, 23))  # 2^-10 .. 2^11, x sqrt(2)
BATCH = 512


@dataclass
class Target:
    """What to forget: ``g`` = grad of its share of the training loss (see math/influence.py)."""

    kind: str  # "label" or "relabel"
    describe: dict
    x: torch.Tensor
    y: torch.Tensor  # the labels the model was trained with
    true_y: Optional[torch.Tensor] = None  # relabel: the labels it should have learnt

    def batches(self, device: torch.device, size: int = BATCH):
        return [(self.x[i:i + size].to(device), self.y[i:i + size].to(device)) for i in range(0, len(self.y), size)]

    def true_batches(self, device: torch.device, size: int = BATCH):
        return [(self.x[i:i + size].to(device), self.true_y[i:i + size].to(device)) for i in range(0, len(self.y), size)]


def label_target(train: Split, label: int, num_classes: int, dataset: str) -> Target:
    if not 0 <= label < num_classes:
        raise UsageError(f"label {label} is outside the classes 0..{num_classes - 1}")
    keep = train.y == label
    if not bool(keep.any()):
        raise GifError(f"the training split has no image of label {label}")
    return Target("label", {"kind": "label", "label": label, "dataset": dataset, "split": "train",
                            "count": int(keep.sum())}, train.x[keep], train.y[keep])


def target_gradient(model: nn.Module, target: Target, train_count: int, device: torch.device) -> torch.Tensor:
    """g of the sign convention, scaled by |target| / N (N = the training split's size)."""
    g = mean_loss_gradient(model, target.batches(device))
    if target.kind == "relabel":
        g = g - mean_loss_gradient(model, target.true_batches(device))
    return g * (len(target.y) / train_count)


def choose(model: nn.Module, target: Target, criterion: str, ratio: float, seed: int,
           threshold: Optional[float], device: torch.device, train_count: int) -> IndexSet:
    if criterion not in CRITERIA:
        raise UsageError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    if not 0.0 < ratio <= 1.0:
        raise UsageError(f"ratio must be in (0, 1], got {ratio}")
    scores = None
    if criterion in ("topk-outputs", "threshold"):
        scores = output_scores(model, target.batches(device))
    elif criterion == "topk-gradients":
        scores = gradient_scores(model, target_gradient(model, target, train_count, device))
    return select(model, criterion, ratio, scores, seed, threshold)


def hessian_batches(train: Split, samples: int, seed: int, device: torch.device, batch_size: int = BATCH):
    if samples <= 0:
        raise UsageError(f"--hessian-samples must be positive, got {samples}")
    n = min(samples, len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    x, y = train.x[idx], train.y[idx]
    return [(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)) for i in range(0, n, batch_size)]


@dataclass
class InfluenceRun:
    delta: torch.Tensor
    J: IndexSet
    info: dict = field(default_factory=dict)


def compute_influence(model: nn.Module, J: IndexSet, target: Target, train: Split, method: str,
                      options: SolverOptions, hessian_samples: int, hessian_seed: int,
                      device: torch.device, progress: Progress = None, hvp_mode: str = "retain") -> InfluenceRun:
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    start = time.perf_counter()
    model = model.to(device).eval()
    g = target_gradient(model, target, len(train), device)
    hess = HessianSample(model, hessian_batches(train, hessian_samples, hessian_seed, device), mode=hvp_mode)
    try:
        result = influence(method, hess, J, g, options, progress)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        hess.release()
    if not torch.isfinite(result.delta).all():
        raise GifError(f"the {options.solver} solver produced non-finite values ({result.stats.message})")
    info = {
        "method": method,
        "solver": options.solver,
        "solver_options": {"tol": options.tol, "max_iter": options.max_iter, "damping": options.damping,
                           "system": options.system},
        "stats": result.stats.as_dict(),
        "target": target.describe,
        "hessian": {"samples": hess.n_samples, "seed": hessian_seed, "batch_size": BATCH, "train_count": len(train),
                    "hvp_mode": hvp_mode},
        "gradient_norm": float(g.norm()),
        "device": str(device),
        "dtype": str(g.dtype).replace("torch.", ""),
        "seconds": time.perf_counter() - start,
        "sign_convention": "gif apply sets theta_J <- theta_J - scale * delta; scale > 0 removes the target",
    }
    return InfluenceRun(result.delta.cpu(), result.index_set, info)


def edited_copy(model: nn.Module, J: IndexSet, delta: torch.Tensor, scale: float) -> nn.Module:
    """A copy of ``model`` with theta_J <- theta_J - scale * delta."""
    if not math.isfinite(scale):
        raise UsageError(f"scale must be a finite number, got {scale}")
    edited = copy.deepcopy(model).cpu()
    theta = parameters_to_vector(edited.parameters()).detach()
    idx = J.indices
    theta[idx] = apply_update(theta[idx], delta, scale)
    vector_to_parameters(theta, edited.parameters())
    return edited.eval()


def f1_score(forget_accuracy: float, test_accuracy: float) -> float:
    """eq. (14): harmonic mean of (1 - forget accuracy) and test accuracy."""
    a, b = 1.0 - forget_accuracy, test_accuracy
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def forget_metrics(model: nn.Module, split: Split, label: int) -> dict:
    """Self (forget) loss/accuracy on ``label``'s images, test loss/accuracy on the others, F1."""
    forget = split.y == label
    f_loss, f_acc = loss_and_accuracy(model, split.x[forget], split.y[forget])
    t_loss, t_acc = loss_and_accuracy(model, split.x[~forget], split.y[~forget])
    return {
        "forget": {"count": int(forget.sum()), "loss": f_loss, "accuracy": f_acc},
        "test": {"count": int((~forget).sum()), "loss": t_loss, "accuracy": t_acc},
        "f1": f1_score(f_acc, t_acc),
    }


def sweep_scales(model: nn.Module, J: IndexSet, delta: torch.Tensor, scales: Sequence[float],
                 score: Callable[[nn.Module], dict],
                 progress: Optional[Callable[[int, int], None]] = None,
                 extend: int = 12) -> tuple[float, list[dict]]:
    """Evaluate ``score`` (a dict with key ``f1``) at each scale; the best F1 wins, ties -> smaller scale.

    If the best scale sits at an end of the grid, the grid is extended past that end by factors of
    2 (at most ``extend`` times) while F1 keeps improving: the useful range depends on |delta|.
    Then the best scale is refined with its neighbours at x 2^(+-1/4) and x 2^(+-1/8).
    """
    if not scales:
        raise UsageError("no scale to try")
    grid = sorted(scales)
    sweep: list[dict] = []

    def run(s: float) -> dict:
        row = {"scale": s, **score(edited_copy(model, J, delta, s))}
        sweep.append(row)
        if progress:
            progress(len(sweep), max(len(grid), len(sweep)))
        return row

    for s in grid:
        run(s)
    best = max(sweep, key=lambda r: (r["f1"], -r["scale"]))
    if len(grid) > 1 and best["f1"] > 0:
        for end, factor in ((grid[0], 0.5), (grid[-1], 2.0)):
            s, last = end, best
            for _ in range(extend if best["scale"] == end else 0):
                s *= factor
                row = run(round(s, 12))
                if row["f1"] <= last["f1"]:
                    break
                last = row
    # refine between grid points: the best scale's geometric neighbours at x 2^(+-1/4), then 2^(+-1/8)
    for step in (2 ** 0.25, 2 ** 0.125):
        best = max(sweep, key=lambda r: (r["f1"], -r["scale"]))
        if len(grid) > 1 and best["f1"] > 0:
            for s in (best["scale"] / step, best["scale"] * step):
                if all(abs(r["scale"] - s) > 1e-9 * s for r in sweep):
                    run(round(s, 12))
    sweep.sort(key=lambda r: r["scale"])
    best = max(sweep, key=lambda r: (r["f1"], -r["scale"]))
    return best["scale"], sweep


def parse_scales(text: str) -> Optional[list[float]]:
    """'auto' -> None (the default grid, chosen on validation); '1,2,5' -> [1.0, 2.0, 5.0]."""
    if text.strip() == "auto":
        return None
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--scale must be 'auto', a number or a comma-separated list, got {text!r}") from None
    if not vals or not all(math.isfinite(v) for v in vals):
        raise UsageError(f"--scale must be 'auto', a number or a comma-separated list, got {text!r}")
    return vals


def space_of(model: nn.Module) -> ParamSpace:
    return ParamSpace.of(list(model.named_parameters()))
