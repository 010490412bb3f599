"""The NeurIPS 2023 Machine Unlearning Challenge's forgetting score, from model outputs.

For every forget example, N unlearned models and N models retrained without the forget set each
give a logit-scaled confidence ``log p_y - log(1 - p_y)``. Per example, the two sets of N numbers
are two samples of distributions; the privacy epsilon at delta = 1e-5 is the largest, over a
family of decision rules (one threshold; two thresholds around the peakier distribution), of
``max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR))``. The epsilons fall into
buckets of width 0.5 below ``ceil(log(N - 1))``, worth 1, 1/2, 1/4, ...; the forget score F is
their mean. Scores at different N do not compare (the buckets depend on N).

This follows the challenge's reference (google-deepmind/unlearning_evaluation, ``metric.py``)
rule for rule, including its numerics, so that the numbers agree with it to 1e-9
(tests/math/test_forgetting.py compares them on synthetic distributions):

* rates are means of float32 0/1 decisions, and the epsilon formula runs in float32 (numpy's
  float32 log, as the reference computes it); the single-threshold grid is float32, the
  double-threshold grid float64, the confidences float64; medians average the middle two;
* a threshold where FPR = FNR = 0 (and TPR = TNR = 1) separates perfectly: epsilon is infinite,
  clipped to 50; one where only one of FPR, FNR is 0 is discarded (too few samples to tell);
* an example whose narrower distribution spans under 1 % of the wider one's range is given the
  cap (50) at once: a collapsed distribution is a sign of an unlearned model that did not forget.

The reference's ``assert thr_eps`` fails on any array of more than one element; here the check is
that some threshold survives.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
DOUBLE_THRESHOLD_BUFFER = 2.0
COLLAPSED_RATIO = 0.01


def logit_scaled_confidence(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log p_y - log(sum of the other p)`` per row, in float64 (the largest logit removed first)."""
    z = logits.detach().to(torch.float64)
    z = z - z.max(dim=1, keepdim=True).values
    p = torch.exp(z)
    p = p / p.sum(dim=1, keepdim=True)
    rows = torch.arange(len(targets))
    correct = p[rows, targets.long()]
    wrong = p.clone().index_put_((rows, targets.long()), torch.zeros(len(targets), dtype=torch.float64)).sum(dim=1)
    return torch.log(correct + 1e-45) - torch.log(wrong + 1e-45)


def _rates(pos_pred: torch.Tensor, neg_pred: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(tpr, fnr, fpr, tnr) per threshold from [models, thresholds] predicted-positive decisions."""
    pos, neg = pos_pred.to(torch.float32), neg_pred.to(torch.float32)
    return pos.mean(0), (1 - pos).mean(0), neg.mean(0), (1 - neg).mean(0)


def _single_threshold(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One threshold t: predict positive when the confidence is >= t (t on a grid of 1/100)."""
    both = torch.cat([pos, neg])
    lo, hi = both.min(), both.max()
    count = int(torch.ceil((hi - lo) * THRESHOLDS_PER_UNIT))
    t = torch.linspace(lo, hi, count, dtype=torch.float32)  # float64 ends, a float32 grid: the reference's
    return _rates(pos[:, None] >= t[None, :], neg[:, None] >= t[None, :])


def _double_threshold(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Two thresholds l <= r: predict the peakier distribution (narrower range) inside [l, r]."""
    pos_range, neg_range = pos.max() - pos.min(), neg.max() - neg.min()
    width = neg_range if pos_range > neg_range else pos_range
    if pos_range >= neg_range:  # the peakier one is the 'positive' of this family
        pos, neg = neg, pos
    buffer = DOUBLE_THRESHOLD_BUFFER
    lo = float(pos.min() + width - buffer)
    hi = float(pos.max() + buffer)
    right = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    per_right = int(np.ceil(2 * buffer * THRESHOLDS_PER_UNIT))
    w = float(width)
    left = np.concatenate([np.linspace(r - w - buffer, r - w + buffer, num=per_right) for r in right]) \
        if len(right) else np.zeros(0)
    right_all = np.repeat(right, per_right)
    lt, rt = torch.from_numpy(left), torch.from_numpy(right_all)

    def inside(c: torch.Tensor) -> torch.Tensor:
        return (lt[None, :] <= c[:, None]) & (c[:, None] <= rt[None, :])

    return _rates(inside(pos), inside(neg))


def example_epsilon(pos: torch.Tensor, neg: torch.Tensor, delta: float = DELTA) -> float:
    """The privacy epsilon of one example from its two confidence samples (see the module docstring);
    ``pos`` is the sample with the larger median."""
    pos, neg = pos.to(torch.float64), neg.to(torch.float64)
    pos_range, neg_range = float(pos.max() - pos.min()), float(neg.max() - neg.min())
    largest, smallest = max(pos_range, neg_range), min(pos_range, neg_range)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.float64(smallest) / np.float64(largest)  # 0/0 is nan, as in the reference: not collapsed
    if ratio < COLLAPSED_RATIO:
        return EPSILON_CAP
    parts = [_double_threshold(pos, neg), _single_threshold(pos, neg)]
    tpr, fnr, fpr, tnr = (torch.cat([p[i] for p in parts]).numpy() for i in range(4))
    eps = np.zeros(len(tpr), dtype=np.float32)
    perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
    eps[perfect] = np.inf
    undecided = (~perfect) & (fpr * fnr == 0)  # one error rate is 0, not both: too few samples to tell
    # a threshold on which both bounds are undefined (both error rates 1) gives an all-NaN column: it is
    # neither perfect nor regular below, so numpy's "All-NaN slice" warning says nothing to the user
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = np.clip(np.nanmax([np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)],
                                  axis=0), 0, None)
    regular = ~perfect & ~undecided
    eps[regular] = value[regular]
    kept = eps[~undecided]
    if len(kept) == 0:
        raise ValueError("every threshold gave an undefined epsilon")
    return float(min(np.nanmax(kept), EPSILON_CAP))


@dataclass
class ForgetScore:
    """The forget score F of N unlearned against N retrained models, with each example's epsilon."""

    score: float
    epsilons: list[float]
    models: int
    buckets: dict[float, float]  # bucket start -> points

    def as_dict(self) -> dict:
        return {"forget_score": self.score, "models_per_side": self.models, "epsilons": self.epsilons,
                "buckets": {f"{k:g}": v for k, v in self.buckets.items()}, "delta": DELTA}


def buckets(models: int) -> dict[float, float]:
    """Bucket start -> points: width 0.5 from 0 up to ceil(log(N - 1)), worth 1, 1/2, 1/4, ..."""
    top = math.ceil(math.log(models - 1))
    out, start, points = {}, 0.0, 1.0
    while start + 0.5 <= top:
        out[start] = points
        points /= 2
        start += 0.5
    return out


def forget_score(unlearned: torch.Tensor, retrained: torch.Tensor, delta: float = DELTA) -> ForgetScore:
    """F from ``[models, examples]`` logit-scaled confidences under unlearned and retrained models."""
    if unlearned.shape != retrained.shape or unlearned.dim() != 2:
        raise ValueError(f"confidences must both be [models, examples], got {tuple(unlearned.shape)} and "
                         f"{tuple(retrained.shape)}")
    models, examples = retrained.shape
    if models < 3:
        raise ValueError(f"the score needs at least 3 models a side, got {models}")
    u, r = unlearned.to(torch.float64), retrained.to(torch.float64)
    # per example the 'positive' sample is the one with the larger median (numpy's: the middle two averaged)
    retrained_positive = torch.quantile(r, 0.5, dim=0) > torch.quantile(u, 0.5, dim=0)
    pos = torch.where(retrained_positive[None, :], r, u)
    neg = torch.where(retrained_positive[None, :], u, r)
    eps = [example_epsilon(pos[:, i], neg[:, i], delta) for i in range(examples)]
    table = buckets(models)
    total = 0.0
    for e in eps:
        for start, points in table.items():
            if e < start + 0.5:
                total += points
                break
    return ForgetScore(total / examples, eps, models, table)
