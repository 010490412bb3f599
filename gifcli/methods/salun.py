"""``salun`` (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency",
ICLR 2024) and ``rl``, random labelling on its own (Golatkar et al.'s baseline as SalUn runs it).

Random labelling: each epoch first walks the forget set with labels drawn uniformly from the
classes, then the retained data with its own labels, SGD with the model's momentum and weight
decay (SalUn's classification code does the same for 10-class data). SalUn restricts every step
to the salient weights: the saliency is |grad of the forget loss| at the trained model (the sum
over forget batches of the batch-mean loss gradient), and the mask keeps the ``mask_ratio`` share
of all parameters with the largest saliency (the paper's m = 1(|g| >= gamma), gamma the median at
the default 0.5). Masked-out weights stay exactly at their trained values (their gradient and
momentum are zeroed, and weight decay is undone on them), as the reference code keeps them.
Searched on validation: learning rate x epochs (every epoch is a candidate).

The public SalUn code ranks saliencies in ascending order when it builds its hard mask, which keeps
the *least* salient half; gif follows the paper's definition (the most salient) and says so here.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..core.methods import METHODS, MethodArgs, arg
from ..core.passes import shard_batches
from ..core.search import SearchMethod, batch_steps, check_count, check_positive, cycle, mean_loss, optimizer, step
from ..errors import NonFiniteError, UsageError
from ..models.specs import set_eval


@dataclass(frozen=True)
class RLArgs(MethodArgs):
    cli_prefix = "rl"

    lrs: tuple[float, ...] = arg("learning rates to search", (0.01, 0.05))
    epochs: int = arg("epochs (a pass over the randomly relabelled forget set, then over the retained data; "
                      "every epoch is a candidate)", 2)

    def validate(self) -> None:
        check_positive(f"{self.cli_prefix} lrs", self.lrs)
        check_count(f"{self.cli_prefix} epochs", self.epochs)


@dataclass(frozen=True)
class SalUnArgs(RLArgs):
    cli_prefix = "salun"

    mask_ratio: float = arg("share of all parameters the saliency mask keeps (the largest |forget gradient|)", 0.5)

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.mask_ratio, (int, float)) and 0 < self.mask_ratio <= 1):
            raise UsageError(f"salun mask_ratio must be in (0, 1], got {self.mask_ratio}")


def saliency_mask(model: nn.Module, forget, rt, ratio: float) -> list[torch.Tensor]:
    """1 where |sum over forget batches of the batch-mean loss gradient| is among the ``ratio``
    share of largest over all parameters (ties at the cut included), else 0."""
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for x, y in shard_batches(forget, rt):
        model.zero_grad(set_to_none=True)
        mean_loss(model, rt, x, y).backward()
        for t, p in zip(total, params):
            if p.grad is not None:
                t += p.grad.detach()
    model.zero_grad(set_to_none=True)
    for t in total:
        rt.dist.sum(t)
    flat = torch.cat([t.abs().reshape(-1) for t in total])
    keep = max(1, int(round(ratio * flat.numel())))
    cut = torch.topk(flat, keep).values.min()
    return [(t.abs() >= cut).to(t.dtype) for t in total]


class RandomLabels(SearchMethod):
    """``rl``: random labelling on every weight."""

    name = "rl"
    Args = RLArgs
    keys = ("lr", "epochs")

    def budget(self, args) -> int:
        return len(args.lrs) * args.epochs

    def mask(self, model, task, data, args, rt) -> Optional[list[torch.Tensor]]:
        return None

    def candidates(self, model, task, data, args, rt, ctx):
        forget, retain = task.target(data).split, task.retain(data)
        classes = max(int(data.num_classes), int(forget.labels.max()) + 1)
        mask = self.mask(model, task, data, args, rt)
        f_steps, r_steps = batch_steps(len(forget), rt), batch_steps(len(retain), rt)
        for lr in args.lrs:
            torch.manual_seed(args.seed)  # inside the search's forked random state (dropout, if any)
            tuned = copy.deepcopy(model).train()
            frozen = [p.detach().clone() for p in tuned.parameters()] if mask is not None else None
            opt = optimizer(tuned, lr, ctx)
            f_stream, r_stream = cycle(forget, rt, args.seed), cycle(retain, rt, args.seed + 1)
            labels = torch.Generator().manual_seed(args.seed * 7919 + 17)
            for epoch in range(1, args.epochs + 1):
                try:
                    for _ in range(f_steps):
                        x, _y = next(f_stream)
                        random = torch.randint(0, classes, (len(x),), generator=labels)
                        step(tuned, opt, mean_loss(tuned, rt, x, random), rt, mask, frozen)
                    for _ in range(r_steps):
                        x, y = next(r_stream)
                        step(tuned, opt, mean_loss(tuned, rt, x, y), rt, mask, frozen)
                except NonFiniteError:
                    break
                yield {"lr": lr, "epochs": epoch}, set_eval(tuned)
                tuned.train()


class SalUn(RandomLabels):
    """``salun``: random labelling restricted to the salient weights."""

    name = "salun"
    Args = SalUnArgs

    def mask(self, model, task, data, args, rt) -> list[torch.Tensor]:
        probe = set_eval(copy.deepcopy(model))  # gradients are taken on a copy, never on the caller's model
        return saliency_mask(probe, task.target(data).split, rt, args.mask_ratio)


METHODS.register("rl", RandomLabels())
METHODS.register("salun", SalUn())
