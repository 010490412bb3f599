"""Choosing the target parameters J (section 4).

Every ``nn.Conv2d`` and ``nn.Linear`` layer gets its own quota, ``floor(ratio x its parameter
count)``. The unit of choice is an output neuron / channel: its weight row (``fan_in`` values)
and its bias. Units are taken whole in the criterion's order; the remainder
``quota mod (fan_in + 1)`` is filled with the largest-|w| weights of the next unit in that
order (the reference code's rule), so each layer gets exactly its quota. Parameters of other
layers (BatchNorm, ...) are only selected by ``all``.

Criteria (scores are per output unit):

* ``topk-outputs``: largest mean |output| of the layer on the forget data (forward hooks;
  mean over samples and, for convolutions, positions).
* ``topk-gradients``: largest L1 norm of the forget-loss gradient over the unit's weights+bias.
* ``threshold``: units whose mean |output| exceeds a threshold (default: the layer's mean
  score), taken in a seeded random order; if too few exceed it the rest are taken at random.
* ``random``: seeded random order of units.
* ``all``: every parameter of the model (the classic influence function's J).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .hvp import Batch
from .params import IndexSet, ParamSpace

CRITERIA = ("topk-outputs", "topk-gradients", "threshold", "random", "all")


def selectable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def output_scores(model: nn.Module, batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
    """Mean |output| per output unit of every selectable layer over the batches."""
    sums: dict[str, torch.Tensor] = {}
    count = 0
    handles = []

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            dims = [d for d in range(output.dim()) if d != 1]
            s = output.detach().abs().sum(dim=dims).double()
            per_sample = output[0, 0].numel() if output.dim() > 2 else 1
            s = s / per_sample
            sums[name] = sums[name] + s if name in sums else s

        return hook

    for name, module in selectable_layers(model):
        handles.append(module.register_forward_hook(hook_for(name)))
    try:
        for x, _ in batches:
            model(x)
            count += len(x)
    finally:
        for h in handles:
            h.remove()
    return {n: s / count for n, s in sums.items()}


def gradient_scores(model: nn.Module, gradient: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1 norm of the forget gradient over each unit's weight row and bias."""
    space = ParamSpace.of(list(model.named_parameters()))
    parts = dict(zip(space.names, space.unflatten(gradient.detach())))
    scores = {}
    for name, module in selectable_layers(model):
        s = parts[f"{name}.weight"].abs().reshape(module.weight.shape[0], -1).sum(1).double()
        if module.bias is not None:
            s = s + parts[f"{name}.bias"].abs().double()
        scores[name] = s
    return scores


def _unit_order(criterion: str, score: Optional[torch.Tensor], n_units: int, gen: torch.Generator,
                threshold: Optional[float]) -> torch.Tensor:
    if criterion in ("topk-outputs", "topk-gradients"):
        return torch.sort(-score.cpu(), stable=True).indices
    perm = torch.randperm(n_units, generator=gen)
    if criterion == "random":
        return perm
    # threshold: eligible units first (random order), then the rest (random order)
    t = float(score.mean()) if threshold is None else threshold
    eligible = score.cpu()[perm] > t
    return torch.cat([perm[eligible], perm[~eligible]])


def select(
    model: nn.Module,
    criterion: str,
    ratio: float,
    scores: Optional[dict[str, torch.Tensor]] = None,
    seed: int = 0,
    threshold: Optional[float] = None,
) -> IndexSet:
    """The index set J for ``criterion`` at modification ratio ``ratio`` (0, 1]."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {CRITERIA}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    space = ParamSpace.of(list(model.named_parameters()))
    if criterion == "all":
        return IndexSet.everything(space)
    if criterion != "random" and scores is None:
        raise ValueError(f"criterion {criterion!r} needs scores")
    masks: dict[str, torch.Tensor] = {}
    for layer_index, (name, module) in enumerate(selectable_layers(model)):
        weight = module.weight.detach()
        n_units = weight.shape[0]
        fan_in = weight[0].numel()
        has_bias = module.bias is not None
        unit = fan_in + (1 if has_bias else 0)
        quota = int(ratio * (weight.numel() + (n_units if has_bias else 0)) + 1e-9)
        whole, remainder = divmod(quota, unit)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + layer_index)
        order = _unit_order(criterion, None if scores is None else scores.get(name), n_units, gen, threshold)
        w_mask = torch.zeros(n_units, fan_in, dtype=torch.bool)
        w_mask[order[:whole]] = True
        if remainder:
            nxt = int(order[whole])
            top = torch.sort(-weight[nxt].reshape(-1).abs().cpu(), stable=True).indices[:remainder]
            w_mask[nxt, top] = True
        masks[f"{name}.weight"] = w_mask.reshape(weight.shape)
        if has_bias:
            b_mask = torch.zeros(n_units, dtype=torch.bool)
            b_mask[order[:whole]] = True
            masks[f"{name}.bias"] = b_mask
    return IndexSet.from_masks(space, masks)
