"""``ssd``: Selective Synaptic Dampening (Foster et al., AAAI 2024), as its reference code computes it.

Importances are the mean over mini-batches of the squared mini-batch gradient, on the training
data D (what the model was trained on: the forget set included, the poisoned images with their
poisoned labels for a backdoor) and on the forget set D_f; every parameter with D_f > alpha D is
multiplied by min(lambda D / D_f, 1). Searched on validation: alpha x lambda.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
from torch import nn

from ..core.args import Runtime
from ..core.methods import METHODS, MethodArgs, arg
from ..core.passes import shard_batches, to_model
from ..core.search import SearchMethod
from ..data.datasets import Split
from ..errors import UsageError
from ..models.specs import set_eval


@dataclass(frozen=True)
class SSDArgs(MethodArgs):
    cli_prefix = "ssd"

    alphas: tuple[float, ...] = arg("selection thresholds alpha to search (a parameter is dampened where its "
                                    "forget importance exceeds alpha x its training importance)",
                                    (1.0, 3.0, 10.0, 30.0, 100.0))
    lambdas: tuple[float, ...] = arg("dampening constants lambda to search", (0.3, 1.0, 3.0))

    def validate(self) -> None:
        for name in ("alphas", "lambdas"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, (int, float)) and v > 0 for v in values):
                raise UsageError(f"ssd {name} must be positive numbers, got {values}")


def importances(model: nn.Module, split: Split, rt: Runtime) -> list[torch.Tensor]:
    """SSD's importance: the mean over mini-batches of the squared mini-batch-mean loss gradient."""
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    n = torch.zeros((), dtype=torch.float64, device=params[0].device)
    for x, y in shard_batches(split, rt):
        model.zero_grad(set_to_none=True)
        out = model(to_model(x, model))
        (rt.loss(out, y.to(out.device)) / len(y)).backward()
        for t, p in zip(total, params):
            if p.grad is not None:
                t += p.grad.detach() ** 2
        n += 1
    model.zero_grad(set_to_none=True)
    for t in total:
        rt.dist.sum(t)
    count = float(rt.dist.sum(n))
    return [t / max(count, 1.0) for t in total]


def dampen(model: nn.Module, train_imp: list[torch.Tensor], forget_imp: list[torch.Tensor], alpha: float,
           lam: float) -> nn.Module:
    """SSD's edit: theta_i *= min(lam D_i / D_f,i, 1) wherever D_f,i > alpha D_i (a copy)."""
    edited = copy.deepcopy(model)
    with torch.no_grad():
        for p, d, df in zip(edited.parameters(), train_imp, forget_imp):
            where = df > alpha * d
            factor = torch.clamp(lam * d[where] / df[where], max=1.0)
            p[where] = p[where] * factor
    return set_eval(edited)


class SSD(SearchMethod):
    name = "ssd"
    Args = SSDArgs
    keys = ("alpha", "lambda")

    def budget(self, args) -> int:
        return len(args.alphas) * len(args.lambdas)

    def candidates(self, model, task, data, args, rt, ctx):
        model = set_eval(copy.deepcopy(model))  # importances take gradients: never on the caller's model
        d = importances(model, task.training(data), rt)  # SSD's D: the data the model was trained on
        df = importances(model, task.target(data).split, rt)
        # mildest first: a large alpha selects few parameters, a large lambda dampens them little
        for alpha, lam in itertools.product(sorted(args.alphas, reverse=True), sorted(args.lambdas, reverse=True)):
            yield {"alpha": alpha, "lambda": lam}, dampen(model, d, df, alpha, lam)


METHODS.register("ssd", SSD())
