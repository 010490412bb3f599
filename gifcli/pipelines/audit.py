"""Metrics the unlearning community expects beyond eq. 14: membership inference, agreement with
a retrained model, parameter distance and time against retraining. No printing."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from ..data.datasets import DatasetSplits
from ..math.mia import membership_share, softmax_entropy

MIA_SAMPLES = 5000  # retained training images and test images used to fit the attack


@torch.inference_mode()
def _entropies(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([softmax_entropy(model(x[i:i + batch])) for i in range(0, len(x), batch)])


def mia_share(model: nn.Module, splits: DatasetSplits, label: int, samples: int = MIA_SAMPLES) -> float:
    """Share of the forget set (training images of ``label``) that the entropy attack calls members."""
    gen = torch.Generator().manual_seed(0)
    retained = splits.train.x[splits.train.y != label]
    retained = retained[torch.randperm(len(retained), generator=gen)[:samples]]
    test = splits.test.x[splits.test.y != label][:samples]
    forget = splits.train.x[splits.train.y == label][:samples]
    return membership_share(_entropies(model, retained), _entropies(model, test), _entropies(model, forget))


@torch.inference_mode()
def agreement(model: nn.Module, other: nn.Module, x: torch.Tensor, batch: int = 1000) -> float:
    same = 0
    for i in range(0, len(x), batch):
        same += int((model(x[i:i + batch]).argmax(1) == other(x[i:i + batch]).argmax(1)).sum())
    return same / max(len(x), 1)


def l2_distance(model: nn.Module, other: nn.Module) -> Optional[float]:
    a = parameters_to_vector(model.parameters()).detach()
    b = parameters_to_vector(other.parameters()).detach()
    return float((a - b).norm()) if a.shape == b.shape else None


def against_baseline(model: nn.Module, meta: dict, baseline: nn.Module, baseline_meta: dict,
                     splits: DatasetSplits, label: Optional[int]) -> dict:
    out = {
        "agreement_test": agreement(model, baseline, splits.test.x),
        "l2_distance": l2_distance(model, baseline),
    }
    if label is not None:
        out["baseline_mia_forget_member_share"] = mia_share(baseline, splits, label)
    edit = meta.get("edit") or {}
    if baseline_meta.get("train_seconds") is not None:
        out["baseline_train_seconds"] = baseline_meta["train_seconds"]
    if edit.get("influence_seconds") is not None:
        out["unlearning_seconds"] = edit["influence_seconds"]
    return out
