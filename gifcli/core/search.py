"""Choosing on validation, for every method: candidates scored, the best row, training steps.

A search method yields ``(hyper-parameters, edited model)`` candidates from the mildest edit to
the strongest; each is scored on the validation split by the task's criterion (the rule that
chooses GIF's scale), the best is kept (ties: the earlier, milder one), and every setting tried
is recorded with the size of the search. The wall time a method reports includes its search.
Random draws (batch order) come from generators seeded by the run's seed; a model with random
layers (dropout) draws from torch's global generator inside a forked state, so the caller's
random state is left as it was.
"""
from __future__ import annotations

import copy
import itertools
import math
import time
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from ..data.datasets import Data, Split, batches
from ..errors import NonFiniteError, UsageError
from ..models.specs import set_eval
from .args import Runtime, UnlearnArgs
from .methods import Method, MethodOutcome, ModelContext
from .passes import to_model
from .tasks import PRIVACY_ACCURACY_SLACK, Scorer, Task


def rank(row: dict) -> tuple:
    """How a criterion orders its rows: scored before diverged, feasible before not, then (among
    infeasible rows) the smaller ``shortfall`` (how far the row is from the criterion's bounds, where
    the criterion says), then the objective."""
    return (row["objective"] is not None, bool(row.get("feasible", True)), -float(row.get("shortfall", 0.0)),
            -math.inf if row["objective"] is None else row["objective"])


def best_row(rows: Sequence[dict], order: str = "scale") -> dict:
    """The row of the best :func:`rank`; ties go to the smaller ``order`` (the milder edit).

    A diverged row (objective None: the candidate's outputs were not finite) is never preferred
    to one that was scored; :func:`check_scored` refuses a search in which every candidate diverged.
    """
    return max(rows, key=lambda r: (*rank(r), -r[order]))


def scored(score: Scorer, model: nn.Module) -> dict:
    """``score(model)``, or a diverged row when the model's outputs or loss are not finite."""
    try:
        return score(model)
    except NonFiniteError as e:
        return {"feasible": False, "objective": None, "diverged": str(e)}


def check_scored(rows: Sequence[dict], what: str) -> None:
    """Refuse a search whose every candidate diverged (there is nothing to choose)."""
    if rows and all(r["objective"] is None for r in rows):
        raise NonFiniteError(f"{what}: every candidate diverged ({rows[-1]['diverged']})")


def check_positive(name: str, values) -> None:
    """A searched grid of positive numbers (learning rates), or one line naming the option."""
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
        raise UsageError(f"{name} must be positive numbers, got {values}")


def check_count(name: str, value) -> None:
    """A whole number >= 1 (epochs, passes), or one line naming the option."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise UsageError(f"{name} must be a whole number >= 1, got {value}")


def search(candidates: Iterator[tuple[dict, nn.Module]], scorer: Scorer, rt: Runtime, method: str,
           total: Optional[int]) -> tuple[nn.Module, list[dict]]:
    """Score each (hyper-parameters, model) in turn; keep the best (ties: the earlier, milder one)."""
    rows: list[dict] = []
    best_model, best = None, None
    for order, (hyper, model) in enumerate(candidates):
        row = {"order": order, **hyper, **scored(scorer, model)}
        rows.append(row)
        rt.report("search", len(rows), total, f"{method} {hyper}")
        if best is None or best_row([best, row], order="order") is row:
            best, best_model = row, copy.deepcopy(model)
    if best_model is None:
        raise UsageError(f"{method}: no candidate could be tried")
    check_scored(rows, method)
    return set_eval(best_model), rows


class SearchMethod(Method):
    """A method whose candidates are edited models, scored on validation by the task's criterion."""

    keys: tuple[str, ...] = ()

    def candidates(self, model: nn.Module, task: Task, data: Data, args: UnlearnArgs, rt: Runtime,
                   ctx: ModelContext) -> Iterator[tuple[dict, nn.Module]]:
        raise NotImplementedError

    def budget(self, args: UnlearnArgs) -> Optional[int]:
        return None

    def unlearn(self, model: nn.Module, task: Task, data: Data, args: UnlearnArgs, rt: Runtime,
                ctx: ModelContext) -> MethodOutcome:
        start = time.perf_counter()
        scorer = task.scorer(args.scale_criterion, data, model, rt)
        devices = [rt.device] if rt.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            edited, rows = search(self.candidates(model, task, data, args, rt, ctx), scorer, rt, self.name,
                                  self.budget(args))
        best = best_row(rows, order="order")
        hyper = {k: best[k] for k in self.keys}
        summary = {}
        if not best.get("feasible", True):  # said, never silent: the bound was not met by any setting
            summary["warnings"] = [infeasible_warning(self.name, task.criterion(args.scale_criterion), len(rows))]
        return MethodOutcome(edited, {**hyper, "search_budget": len(rows)}, rows, {}, time.perf_counter() - start,
                             summary)


def infeasible_warning(method: str, criterion: str, tried: int) -> str:
    """What a run says when none of its settings met the criterion's bound on validation."""
    bound = {"privacy": f" (validation accuracy within {100 * PRIVACY_ACCURACY_SLACK:g} points of the unedited "
                        "model's)"}.get(criterion, "")
    return (f"{method}: none of the {tried} settings tried met the {criterion} criterion's bound{bound}; "
            f"the best-scoring one was kept: check the edited model's accuracy, or search milder settings")


def optimizer(model: nn.Module, lr: float, ctx: ModelContext) -> torch.optim.Optimizer:
    """SGD with the model's own momentum and weight decay (its recorded recipe)."""
    cfg = ctx.train_config or {}
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                           weight_decay=float(cfg.get("weight_decay", 0.0)))


def cycle(split: Split, rt: Runtime, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches of ``split``, forever (a new seeded order each pass)."""
    for epoch in itertools.count():
        perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        yield from batches(split, rt.batch_size if rt.batch_size <= 256 else 256, rt.workers,
                           rt.dist.shard(perm))


def step(model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, rt: Runtime,
         mask: Optional[list[torch.Tensor]] = None, frozen: Optional[list[torch.Tensor]] = None) -> None:
    """One optimiser step; with several ranks the gradients are averaged over them first. With a
    ``mask`` (0/1 per parameter entry) only the masked-in entries move: their gradient and momentum
    are zeroed elsewhere, and the others are put back exactly at ``frozen`` (weight decay undone)."""
    if not math.isfinite(float(loss.detach())):
        raise NonFiniteError("the method's training loss is not finite (the learning rate is too large?)")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = list(model.parameters())
    if rt.dist.enabled:
        for p in params:
            if p.grad is not None:
                rt.dist.sum(p.grad).div_(rt.dist.world)
    if mask is not None:
        for p, m in zip(params, mask):
            if p.grad is not None:
                p.grad.mul_(m)
    opt.step()
    if mask is not None:
        with torch.no_grad():
            for p, m, p0 in zip(params, mask, frozen):
                p.mul_(m).add_(p0 * (1 - m))
                state = opt.state.get(p)
                if state and state.get("momentum_buffer") is not None:
                    state["momentum_buffer"].mul_(m)


def mean_loss(model: nn.Module, rt: Runtime, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(to_model(x, model))
    return rt.loss(out, y.to(out.device)) / len(y)


def batch_steps(n: int, rt: Runtime) -> int:
    """Optimiser steps of one pass over ``n`` samples (batches of at most 256, over every rank)."""
    return math.ceil(n / min(rt.batch_size, 256) / rt.dist.world)
