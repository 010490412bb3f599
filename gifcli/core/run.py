"""The unlearning core: ``run(task, model, data, args, runtime) -> UnlearnResult``.

Every command (``remove-class``, ``remove-samples``, ``backdoor recover``, each ``compare``
cell) and the Python API's ``unlearn`` call this; none of them holds a second copy of the chain.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ..data.datasets import Data
from ..models.specs import set_eval
from .args import Runtime, UnlearnArgs
from .methods import METHODS, MethodOutcome, ModelContext
from .metrics import unlearning_metrics
from .tasks import Task


@dataclass
class UnlearnResult:
    """What an unlearning run did and measured (the edited model included)."""

    task: dict
    method: str
    args: dict
    outcome: MethodOutcome
    base: Optional[dict] = None  # the task's report on the unedited model
    edited: Optional[dict] = None  # ... and on the edited one
    seconds: float = 0.0
    extras: dict = field(default_factory=dict)

    @property
    def model(self) -> nn.Module:
        return self.outcome.edited

    @property
    def scale(self) -> Optional[float]:
        return self.outcome.hyper.get("scale")


def run(task: Task, model: nn.Module, data: Data, args: UnlearnArgs, rt: Runtime,
        ctx: Optional[ModelContext] = None, report: bool = True) -> UnlearnResult:
    """Unlearn ``task`` from ``model`` with ``args.method``; report both models on the test data."""
    start = time.perf_counter()
    ctx = ctx or ModelContext()
    method = METHODS.get(args.method)
    task.criterion(args.scale_criterion)  # a criterion that does not fit the task fails before any work
    method.check(args, ctx)  # what a method refuses before any work (e.g. --weight-decay auto, no record)
    # the caller's model is never changed: the method works on a copy in eval mode on rt's device;
    # nor is the caller's random state (DataLoaders draw their base seed from it)
    with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
        model = set_eval(copy.deepcopy(model).to(rt.device))
        outcome = method.unlearn(model, task, data, args, rt, ctx)
        result = UnlearnResult(task.describe(), args.method, args.as_dict(), outcome)
        result.extras["runtime"] = rt.record()
        phases = {"method": outcome.seconds, **{f"method.{k}": v for k, v in outcome.summary.get("phases", {}).items()}}
        if report:
            rt.report("evaluate", 0, None, "test set")
            t = time.perf_counter()
            result.base = unlearning_metrics(model, data, task, rt, mia=False)
            result.edited = unlearning_metrics(outcome.edited, data, task, rt, mia=False)
            phases["evaluation"] = time.perf_counter() - t
        result.extras["phases"] = {k: round(v, 4) for k, v in phases.items()}
    result.seconds = time.perf_counter() - start
    return result
