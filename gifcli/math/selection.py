"""Choosing the target parameters J (section 4).

Every layer with output units gets its own quota, ``floor(ratio x its parameter count)``. The
unit of choice is an output neuron / channel: its weight row (``fan_in`` values) and its bias.
Units are taken whole in the criterion's order; the remainder ``quota mod (fan_in + 1)`` is
filled with the largest-|w| weights of the next unit in that order (the reference code's rule),
so each layer gets exactly its quota.

Layers with units are ``nn.Linear`` and convolutions (``Conv1d/2d/3d``, grouped or not: a unit
is an output channel). Parameters of any other module (BatchNorm, LayerNorm, embeddings,
transposed convolutions, ...) are *skipped*: listed by module and type in the result, and
selected only by ``all``. A ``torch.export`` graph has no layer types left, so there a
``X.weight`` of two or more dimensions (with its ``X.bias``) is taken as a layer by shape.

Criteria (scores are per output unit):

* ``topk-outputs``: largest mean output of the layer on the forget data (forward hooks; mean
  over samples and, for convolutions, positions). ``output_score="abs"`` scores |output| (the
  paper's rule); ``"positive"`` scores max(output, 0), what a following ReLU passes on, so a
  unit that never activates on the forget data scores 0 instead of ranking first.
* ``topk-gradients``: largest L1 norm of the forget-loss gradient over the unit's weights+bias.
* ``threshold``: units whose mean output score exceeds a threshold (default: the layer's mean
  score), taken in a seeded random order; if too few exceed it the rest are taken at random.
* ``random``: seeded random order of units.
* ``all``: every parameter of the model (the classic influence function's J).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch
from torch import nn

from .hvp import Batch
from .params import IndexSet, ParamSpace

CRITERIA = ("topk-outputs", "topk-gradients", "threshold", "random", "all")
OUTPUT_SCORES = ("abs", "positive")
HOOK_CRITERIA = ("topk-outputs", "threshold")


class SelectionError(ValueError):
    """A criterion that cannot be applied to this model or these arguments."""


@dataclass(frozen=True)
class Layer:
    """A layer whose parameters come in output units."""

    name: str
    weight: str  # parameter names
    bias: Optional[str]
    units: int
    fan_in: int
    module: Optional[nn.Module] = field(default=None, compare=False, repr=False)


@dataclass
class Selection:
    J: IndexSet
    criterion: str
    ratio: float
    layers: list[str]  # layers that got a quota
    skipped: list[dict]  # {"module", "type", "parameters"} never selected (except by `all`)


def _is_unit_layer(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.modules.conv._ConvNd) and not m.transposed


def layers_of(model: nn.Module) -> tuple[list[Layer], list[dict]]:
    """The model's layers with units, and the parameters of every other module (skipped)."""
    params = dict(model.named_parameters())
    if isinstance(model, torch.fx.GraphModule) and not any(_is_unit_layer(m) for m in model.modules()):
        return _layers_by_shape(params)
    layers, covered = [], set()
    for name, m in model.named_modules():
        if _is_unit_layer(m) and getattr(m, "weight", None) is not None:
            prefix = f"{name}." if name else ""
            w, b = f"{prefix}weight", f"{prefix}bias" if m.bias is not None else None
            if w not in params:
                continue  # shared or frozen weight: not a parameter of this model
            weight = params[w]
            layers.append(Layer(name, w, b if b in params else None, weight.shape[0], weight[0].numel(), m))
            covered.update({w, b})
    return layers, _skipped(model, params, covered)


def _layers_by_shape(params: dict[str, torch.Tensor]) -> tuple[list[Layer], list[dict]]:
    layers, covered = [], set()
    for name, p in params.items():
        if name.endswith(".weight") and p.dim() >= 2:
            prefix = name[: -len("weight")]
            b = f"{prefix}bias"
            bias = b if b in params and tuple(params[b].shape) == (p.shape[0],) else None
            layers.append(Layer(prefix.rstrip("."), name, bias, p.shape[0], p[0].numel(), None))
            covered.update({name, bias})
    skipped = [{"module": n, "type": "parameter", "parameters": [n]} for n in params if n not in covered]
    return layers, skipped


def _skipped(model: nn.Module, params: dict, covered: set) -> list[dict]:
    out: dict[str, dict] = {}
    for mname, m in model.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if full in params and full not in covered:
                entry = out.setdefault(mname, {"module": mname, "type": type(m).__name__, "parameters": []})
                entry["parameters"].append(full)
    return list(out.values())


def selectable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers with units (module-based models)."""
    return [(layer.name, layer.module) for layer in layers_of(model)[0] if layer.module is not None]


@torch.no_grad()
def output_sums(model: nn.Module, batches: Iterable[Batch], score: str = "abs",
                ) -> tuple[dict[str, torch.Tensor], int]:
    """Per layer, the sum over samples of each unit's mean output score; and the sample count.

    Sums (not means) so that shards of the data on several processes add up.
    """
    if score not in OUTPUT_SCORES:
        raise SelectionError(f"unknown output score {score!r}; choose from {', '.join(OUTPUT_SCORES)}")
    layers, _ = layers_of(model)
    hooked = [layer for layer in layers if layer.module is not None]
    if not hooked:
        raise SelectionError("this model has no Linear/Conv modules to hook (a torch.export graph?): "
                             "use --criterion topk-gradients, random or all")
    sums: dict[str, torch.Tensor] = {}
    count = 0
    first = next(model.parameters())
    device, dtype = first.device, first.dtype

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            out = output.detach()
            out = out.abs() if score == "abs" else out.clamp(min=0)
            dims = [d for d in range(out.dim()) if d != 1]
            per_sample = out[0, 0].numel() if out.dim() > 2 else 1
            s = out.sum(dim=dims).double() / per_sample
            sums[name] = sums[name] + s if name in sums else s

        return hook

    handles = [layer.module.register_forward_hook(hook_for(layer.name)) for layer in hooked]
    try:
        for x, _ in batches:
            model(x.to(device, dtype if x.is_floating_point() else None))
            count += len(x)
    finally:
        for h in handles:
            h.remove()
    for layer in hooked:  # a layer the forward never reached still needs its entry
        sums.setdefault(layer.name, torch.zeros(layer.units, dtype=torch.float64, device=device))
    return sums, count


def output_scores(model: nn.Module, batches: Iterable[Batch], score: str = "abs") -> dict[str, torch.Tensor]:
    """Mean output score per output unit of every hooked layer over the batches."""
    sums, count = output_sums(model, batches, score)
    return {n: s / max(count, 1) for n, s in sums.items()}


def gradient_scores(model: nn.Module, gradient: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1 norm of the forget gradient over each unit's weight row and bias."""
    space = ParamSpace.of(list(model.named_parameters()))
    parts = dict(zip(space.names, space.unflatten(gradient.detach())))
    scores = {}
    for layer in layers_of(model)[0]:
        s = parts[layer.weight].abs().reshape(layer.units, -1).sum(1).double()
        if layer.bias is not None:
            s = s + parts[layer.bias].abs().double()
        scores[layer.name] = s
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
) -> Selection:
    """The index set J for ``criterion`` at modification ratio ``ratio`` (0, 1]."""
    if criterion not in CRITERIA:
        raise SelectionError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    if not 0.0 < ratio <= 1.0:
        raise SelectionError(f"ratio must be in (0, 1], got {ratio}")
    named = list(model.named_parameters())
    space = ParamSpace.of(named)
    params = dict(named)
    layers, skipped = layers_of(model)
    if criterion == "all":
        return Selection(IndexSet.everything(space), criterion, ratio, [layer.name for layer in layers], [])
    if not layers:
        raise SelectionError("the model has no Linear or convolution layer to select units from: use --criterion all")
    if criterion != "random" and scores is None:
        raise SelectionError(f"criterion {criterion!r} needs scores")
    masks: dict[str, torch.Tensor] = {}
    for layer_index, layer in enumerate(layers):
        weight = params[layer.weight].detach()
        unit = layer.fan_in + (1 if layer.bias else 0)
        quota = int(ratio * (weight.numel() + (layer.units if layer.bias else 0)) + 1e-9)
        whole, remainder = divmod(quota, unit)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + layer_index)
        order = _unit_order(criterion, None if scores is None else scores.get(layer.name), layer.units, gen, threshold)
        w_mask = torch.zeros(layer.units, layer.fan_in, dtype=torch.bool)
        w_mask[order[:whole]] = True
        if remainder:
            nxt = int(order[whole])
            top = torch.sort(-weight[nxt].reshape(-1).abs().cpu(), stable=True).indices[:remainder]
            w_mask[nxt, top] = True
        masks[layer.weight] = w_mask.reshape(weight.shape)
        if layer.bias:
            b_mask = torch.zeros(layer.units, dtype=torch.bool)
            b_mask[order[:whole]] = True
            masks[layer.bias] = b_mask
    J = IndexSet.from_masks(space, masks)
    return Selection(J, criterion, ratio, [layer.name for layer in layers], skipped)


