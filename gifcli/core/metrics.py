"""Metrics the unlearning community reports beside accuracy: membership inference, agreement
and divergence from a retrained model, parameter distance, and the average gap.

Membership inference (the common recipe): each sample's softmax entropy is the feature; a
logistic regression is fit to tell retained training samples (members) from test samples
(non-members), and the share of the probed samples it calls members is reported. A model that
has forgotten the forget set looks at it as it looks at unseen data: compare with the share on
held-out data and with the retrained model's share.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from ..data.datasets import Split
from ..math.mia import membership_share, softmax_entropy
from .args import Runtime
from .walk import outputs

MIA_SAMPLES = 5000  # members and non-members used to fit the attack (and probed samples at most)


def entropies(model: nn.Module, split: Split, rt: Runtime) -> torch.Tensor:
    return softmax_entropy(outputs(model, split, rt)) if len(split) else torch.zeros(0, dtype=torch.float64)


def mia_shares(model: nn.Module, members: Split, nonmembers: Split, probes: dict[str, Split], rt: Runtime,
               samples: int = MIA_SAMPLES) -> dict[str, Optional[float]]:
    """Per probed split, the share the entropy attack (fit on members vs non-members) calls members."""
    m = entropies(model, members.sample(samples, seed=0), rt)
    t = entropies(model, nonmembers.sample(samples, seed=1), rt)
    out: dict[str, Optional[float]] = {}
    for name, split in probes.items():
        if len(split) == 0 or len(m) == 0 or len(t) == 0:
            out[name] = None
            continue
        out[name] = membership_share(m, t, entropies(model, split.sample(samples, seed=2), rt))
    return out


@torch.inference_mode()
def agreement(model: nn.Module, other: nn.Module, split: Split, rt: Runtime) -> Optional[float]:
    """Share of ``split`` on which the two models predict the same class."""
    if len(split) == 0:
        return None
    a, b = outputs(model, split, rt).argmax(1), outputs(other, split, rt).argmax(1)
    return float((a == b).double().mean())


@torch.inference_mode()
def mean_kl(reference: nn.Module, model: nn.Module, split: Split, rt: Runtime) -> Optional[float]:
    """Mean over ``split`` of KL(p_reference || p_model) between the softmax outputs."""
    if len(split) == 0:
        return None
    p = torch.log_softmax(outputs(reference, split, rt).double(), 1)
    q = torch.log_softmax(outputs(model, split, rt).double(), 1)
    return float((p.exp() * (p - q)).sum(1).mean())


def l2_distance(model: nn.Module, other: nn.Module) -> Optional[float]:
    a = parameters_to_vector(model.parameters()).detach().cpu()
    b = parameters_to_vector(other.parameters()).detach().cpu()
    return float((a - b).norm()) if a.shape == b.shape else None


def avg_gap(model: dict, reference: dict, keys: Sequence[str]) -> Optional[float]:
    """Mean absolute difference over ``keys`` (dotted paths into two reports), in points of 0-1 values."""
    diffs = []
    for key in keys:
        a, b = _get(model, key), _get(reference, key)
        if a is None or b is None:
            return None
        diffs.append(abs(float(a) - float(b)))
    return sum(diffs) / len(diffs) if diffs else None


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d
