"""Walks over data with a model: every one streams this rank's shard and sums over ranks.

Nothing here holds more than a batch of inputs at once (plus what it returns).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from ..data.datasets import Batch, Split, batches
from ..errors import NonFiniteError
from ..math.hvp import loss_gradient_sum
from .args import Runtime


@dataclass(frozen=True)
class Metrics:
    """Mean loss and accuracy of a model on a set of samples (None for an empty set)."""

    count: int
    loss: Optional[float]
    accuracy: Optional[float]

    def as_dict(self) -> dict:
        return asdict(self)


def shard_batches(split: Split, rt: Runtime) -> Iterator[Batch]:
    """This rank's share of ``split``, in batches (the whole split for a one-process run)."""
    positions = rt.dist.shard(torch.arange(len(split)))
    return batches(split, rt.batch_size, rt.workers, positions)


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def to_model(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Inputs on the model's device, floats in its dtype (a float64 model gets float64 inputs)."""
    p = next(iter(model.parameters()), None)
    if p is None:
        return x
    return x.to(p.device, p.dtype if x.is_floating_point() else None)


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, rt: Runtime, what: str = "evaluation") -> Metrics:
    """Mean loss (the run's loss) and accuracy on ``split``; refuses non-finite outputs."""
    device = _device(model)
    total = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    for x, y in shard_batches(split, rt):
        x, y = to_model(x, model), y.to(device)
        out = model(x)
        loss = rt.loss(out, y)
        if not bool(torch.isfinite(loss)):
            raise NonFiniteError(f"the model's loss is not finite on the {what} samples (NaN/inf weights or outputs?)")
        total += torch.stack([loss.double(), (out.argmax(1) == y).sum().double(), torch.tensor(float(len(y)),
                                                                                   dtype=torch.float64, device=device)])
    loss_sum, correct, count = rt.dist.sum_scalars(*total.tolist())
    n = int(count)
    if n == 0:
        return Metrics(0, None, None)
    return Metrics(n, loss_sum / n, correct / n)


@torch.inference_mode()
def outputs(model: nn.Module, split: Split, rt: Runtime, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The model's outputs (logits) on every sample of ``split``, in split order, on every rank."""
    mine = [model(to_model(x, model)).to(dtype).cpu() for x, _ in shard_batches(split, rt)]
    local = torch.cat(mine) if mine else None
    if not rt.dist.enabled:
        return local if local is not None else torch.zeros(0, 0)
    width_sum, holders = rt.dist.sum_scalars(local.shape[1] if local is not None else 0, local is not None)
    cols = int(round(width_sum / max(holders, 1)))
    local = local if local is not None else torch.zeros(0, cols, dtype=dtype)
    rows = rt.dist.gather(local.reshape(-1)).reshape(-1, cols)
    # shard r holds every world-th sample from r: put them back in split order
    world = rt.dist.world
    order = torch.cat([torch.arange(len(split))[r::world] for r in range(world)])
    out = torch.empty_like(rows)
    out[order] = rows
    return out


def masked_outputs(model: nn.Module, split: Split, rt: Runtime) -> torch.Tensor:
    """What a model that never saw ``split`` would output, as the model itself estimates it: its own
    softmax on each sample with the label it was trained with (a forgotten class, a wrong label, a
    backdoor's label) masked, and the other classes renormalised. Float64, one row a sample."""
    with torch.inference_mode():
        logits = outputs(model, split, rt, torch.float64)
    logits = logits.clone()  # a normal tensor: inference tensors take no in-place update outside the mode
    if logits.numel() == 0:
        return logits
    logits[torch.arange(len(split)), split.labels] = -math.inf
    return torch.softmax(logits, 1)


def predictions(model: nn.Module, split: Split, rt: Runtime) -> torch.Tensor:
    return outputs(model, split, rt).argmax(1) if len(split) else torch.zeros(0, dtype=torch.int64)


def summed_gradient(model: nn.Module, split: Split, rt: Runtime) -> tuple[torch.Tensor, int]:
    """(sum over ``split`` of the loss gradient, flat; the sample count), over all ranks."""
    g, n = loss_gradient_sum(model, shard_batches(split, rt), rt.loss, rt.dist.sum if rt.dist.enabled else None)
    if not bool(torch.isfinite(g).all()):
        raise NonFiniteError("the loss gradient on the forget set is not finite (NaN/inf weights?)")
    return g, n


def finite(value: Optional[float]) -> Optional[float]:
    return value if value is not None and math.isfinite(value) else None
