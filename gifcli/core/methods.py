"""Unlearning methods, registered by name; each one edits a model for a task and says how.

A method takes the trained model, the task, the data, the arguments and the runtime, and
returns a :class:`MethodOutcome`: the edited model, the hyper-parameters it chose on the
validation split (by the task's criterion, never on the test set), every setting it tried, and
its wall time, search included. The influence methods (``gif``, ``fif``, ``pif``, ``if``) and the
first-order ``grad`` step share select -> influence -> scale sweep; other methods plug in the
same way (``METHODS.register("mine", MyMethod())``).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Optional

from torch import nn

from ..data.datasets import Data
from ..math.selection import Selection
from ..errors import UsageError
from ..registry import Registry
from .args import Runtime, UnlearnArgs
from .steps import DEFAULT_SCALES, InfluenceRun, edited_copy, influence, select, sweep_scales
from .tasks import Task


@dataclass
class ModelContext:
    """What a method may need to know about how the model was made."""

    weight_decay: Optional[float] = None  # the training objective's L2 weight (H + wd I)
    train_config: Optional[dict] = None  # the recipe the model was trained with (retrain, finetune)
    build: Optional[Callable[[], nn.Module]] = None  # a freshly initialised model of the same architecture


@dataclass
class MethodOutcome:
    edited: nn.Module
    hyper: dict  # what was chosen, e.g. {"scale": 14.7}
    search: list[dict] = field(default_factory=list)  # every setting tried, with its validation score
    selection: Optional[Selection] = None
    influence: Optional[InfluenceRun] = None
    seconds: float = 0.0


class Method(ABC):
    """An unlearning method (see the module docstring)."""

    name: str = ""
    needs_hessian: bool = False

    @abstractmethod
    def unlearn(self, model: nn.Module, task: Task, data: Data, args: UnlearnArgs, rt: Runtime,
                ctx: ModelContext) -> MethodOutcome: ...


METHODS: Registry[Method] = Registry("method")


class InfluenceMethod(Method):
    """gif / fif / pif / if / grad: select J, compute delta, choose the scale on validation, apply."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.needs_hessian = name != "grad"

    def unlearn(self, model: nn.Module, task: Task, data: Data, args: UnlearnArgs, rt: Runtime,
                ctx: ModelContext) -> MethodOutcome:
        start = time.perf_counter()
        weight_decay = resolve_weight_decay(args, ctx.weight_decay)
        target = task.target(data)
        pool = task.hessian_pool(data, args.hessian_data)
        rt.report("select", 0, None, f"{args.criterion} {args.ratio:g}")
        selection = None if self.name == "if" else select(model, target, args, rt, len(pool))
        run = influence(model, None if selection is None else selection.J, target, pool, args.replace(method=self.name),
                        rt, weight_decay)
        if args.scales is not None and len(args.scales) == 1:  # a given scale: nothing to choose
            scale, rows = args.scales[0], []
        else:
            scorer = task.scorer(args.scale_criterion, data, model, rt)
            scale, rows = sweep_scales(model, run.J, run.delta, args.scales or DEFAULT_SCALES, scorer, rt)
        edited = edited_copy(model, run.J, run.delta, scale)
        return MethodOutcome(edited, {"scale": scale}, rows, selection, run, time.perf_counter() - start)


def resolve_weight_decay(args: UnlearnArgs, trained: Optional[float]) -> float:
    if args.weight_decay == "auto":
        if trained is None:
            raise UsageError("--weight-decay auto: the model records no training weight decay; pass a number")
        return float(trained)
    return float(args.weight_decay)


for _name in ("gif", "fif", "pif", "if", "grad"):
    METHODS.register(_name, InfluenceMethod(_name))
