"""gif, fif, pif, if and grad: select J, compute the influence delta over J, choose the scale on
validation, apply theta_J <- theta_J - scale * delta (the paper's eq. 6, 9 and 13).

They share one set of arguments (:class:`InfluenceArgs`), and write the mask (when they select J)
and the influence file beside the edited checkpoint; ``gif verify`` re-derives the edited weights
from the base model, the influence file and the recorded scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..core.args import Runtime, UnlearnArgs
from ..core.methods import METHODS, Method, MethodArgs, MethodOutcome, ModelContext, Verified, arg
from ..core.steps import DEFAULT_SCALES, edited_copy, influence, select, sweep_scales
from ..core.tasks import Task
from ..data.datasets import Data
from ..errors import UsageError
from ..math.influence import SolverOptions
from ..math.selection import CRITERIA, OUTPUT_SCORES
from ..math.solvers import SOLVERS

HVP_MODES = ("auto", "retain", "recompute", "forward")
HESSIAN_DATA = ("remaining", "all")
RECURRENCES = ("float64", "model")


@dataclass(frozen=True)
class InfluenceArgs(MethodArgs):
    """The arguments of the influence methods (gif, fif, pif, if, grad)."""

    criterion: str = arg(f"how J is chosen: {', '.join(CRITERIA)}", "topk-outputs")
    ratio: float = arg("share of each layer's parameters in J, in (0, 1]", 0.1)
    threshold: Optional[float] = arg("threshold criterion: score a unit must exceed (default: the layer's mean)")
    output_score: str = arg("topk-outputs/threshold score: 'abs' (mean |output|, the paper's) or 'positive' "
                            "(mean max(output, 0), what a following ReLU passes on)", "abs")
    solver: str = arg(f"linear solver: {', '.join(SOLVERS)}", "lsmr")
    tol: float = arg("stop at this relative residual of the normal equations", 1e-2)
    max_iter: int = arg("maximum solver iterations (each costs two Hessian-vector products)", 100)
    damping: float = arg("lambda of min ||A x - b||^2 + lambda ||x||^2 (regularises the solve)", 0.0)
    weight_decay: Union[str, float] = arg("add the training objective's weight decay to H: 'auto' (from the "
                                          "checkpoint's training config), a number, or 0", 0.0)
    recurrence: str = arg("precision of the solver's own vectors: float64 or model (the model's dtype)", "float64")
    hvp_mode: str = arg("retain (keep first-order graphs), recompute (constant memory), forward, or auto "
                        "(retain when the graphs fit --memory-budget)", "auto")
    memory_budget: Optional[float] = arg("what the kept graphs may use with hvp-mode auto, e.g. 2GiB "
                                         "(default: half the free device memory)")
    hessian_samples: int = arg("training samples in the Hessian sample", 1024)
    hessian_data: str = arg("the data the Hessian is of: 'all' (what the model was trained on: the influence "
                            "function's derivative at eps = 0) or 'remaining' (minus the forget set, eq. 9 with "
                            "eps = -1)", "all")
    scales: Optional[tuple[float, ...]] = arg("the scale: 'auto' (a grid 2^-10..2^11, chosen on validation), "
                                              "a number, or a comma-separated list to choose from", flag="scale")

    def validate(self) -> None:
        if self.criterion not in CRITERIA:
            raise UsageError(f"unknown criterion {self.criterion!r}; choose from {', '.join(CRITERIA)}")
        if not (isinstance(self.ratio, (int, float)) and 0.0 < self.ratio <= 1.0):
            raise UsageError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.output_score not in OUTPUT_SCORES:
            raise UsageError(f"unknown output score {self.output_score!r}; choose from {', '.join(OUTPUT_SCORES)}")
        if self.solver not in SOLVERS:
            raise UsageError(f"unknown solver {self.solver!r}; choose from {', '.join(SOLVERS)}")
        if not (math.isfinite(self.tol) and self.tol > 0):
            raise UsageError(f"--tol must be a positive number, got {self.tol}")
        if self.max_iter <= 0:
            raise UsageError(f"--max-iter must be positive, got {self.max_iter}")
        if not (math.isfinite(self.damping) and self.damping >= 0):
            raise UsageError(f"--damping must be a finite number >= 0, got {self.damping}")
        if self.weight_decay != "auto":
            try:
                wd = float(self.weight_decay)
            except (TypeError, ValueError):
                raise UsageError(f"--weight-decay must be 'auto' or a number, got {self.weight_decay!r}") from None
            if not (math.isfinite(wd) and wd >= 0):
                raise UsageError(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
            object.__setattr__(self, "weight_decay", wd)
        if self.recurrence not in RECURRENCES:
            raise UsageError(f"--recurrence must be one of {', '.join(RECURRENCES)}, got {self.recurrence!r}")
        if self.hvp_mode not in HVP_MODES:
            raise UsageError(f"unknown --hvp-mode {self.hvp_mode!r}; choose from {', '.join(HVP_MODES)}")
        if self.memory_budget is not None and not (math.isfinite(self.memory_budget) and self.memory_budget > 0):
            raise UsageError(f"--memory-budget must be a positive number of bytes, got {self.memory_budget}")
        if self.hessian_samples <= 0:
            raise UsageError(f"--hessian-samples must be positive, got {self.hessian_samples}")
        if self.hessian_data not in HESSIAN_DATA:
            raise UsageError(f"--hessian-data must be one of {', '.join(HESSIAN_DATA)}, got {self.hessian_data!r}")
        if self.scales is not None:
            if not self.scales or not all(math.isfinite(s) for s in self.scales):
                raise UsageError("scales must be finite numbers")
            object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    def solver_options(self) -> SolverOptions:
        return SolverOptions(solver=self.solver, tol=self.tol, max_iter=self.max_iter, damping=self.damping,
                             recurrence_dtype=torch.float64 if self.recurrence == "float64" else None)


def resolve_weight_decay(args: UnlearnArgs, trained: Optional[float]) -> float:
    if args.weight_decay == "auto":
        if trained is None:
            raise UsageError("--weight-decay auto: the model records no training weight decay; pass a number")
        return float(trained)
    return float(args.weight_decay)


def hessian_data(task: Task, data: Data, args: UnlearnArgs):
    """The data GIF's Hessian is of: all the training data, or what remains without the forget set."""
    return task.training(data) if args.hessian_data == "all" else task.remaining(data)


class InfluenceMethod(Method):
    """gif / fif / pif / if / grad (see the module docstring)."""

    Args = InfluenceArgs

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, args: UnlearnArgs, ctx: ModelContext) -> None:
        resolve_weight_decay(args, ctx.weight_decay)  # --weight-decay auto on a model that records none

    def unlearn(self, model: nn.Module, task: Task, data: Data, args: UnlearnArgs, rt: Runtime,
                ctx: ModelContext) -> MethodOutcome:
        import time

        start = time.perf_counter()
        weight_decay = resolve_weight_decay(args, ctx.weight_decay)
        target = task.target(data)
        pool = hessian_data(task, data, args)
        rt.report("select", 0, None, f"{args.criterion} {args.ratio:g}")
        selection = None if self.name == "if" else select(model, target, args, rt, len(pool))
        run = influence(model, None if selection is None else selection.J, target, pool, args, rt, weight_decay)
        if args.scales is not None and len(args.scales) == 1:  # a given scale: nothing to choose
            scale, rows = args.scales[0], []
        else:
            scorer = task.scorer(args.scale_criterion, data, model, rt)
            scale, rows = sweep_scales(model, run.J, run.delta, args.scales or DEFAULT_SCALES, scorer, rt)
        edited = edited_copy(model, run.J, run.delta, scale)
        artifacts = {"selection": selection, "influence": run}
        return MethodOutcome(edited, {"scale": scale}, rows, {k: v for k, v in artifacts.items() if v is not None},
                             time.perf_counter() - start)

    def files(self, outcome: MethodOutcome, folder: Path, loaded, task: Task, args: UnlearnArgs):
        """mask.json (when J was selected) and influence.safetensors; the edit links to both."""
        from ..pipelines.common import influence_links, write_influence_file, write_mask_file

        paths: dict[str, Path] = {}
        mask_path = None
        if outcome.selection is not None:
            mask_path = folder / "mask.json"
            write_mask_file(mask_path, outcome.selection, args, task.describe(), loaded)
            paths["mask"] = mask_path
        infl_path = folder / "influence.safetensors"
        imeta = write_influence_file(infl_path, outcome.influence, loaded, mask_path)
        paths["influence"] = infl_path
        return paths, influence_links(infl_path, imeta, outcome.influence.J)

    def verify(self, base, edited, edit: dict, folder: Path, given: dict) -> Verified:
        from ..pipelines.verify import verify_influence_edit

        return verify_influence_edit(base, edited, edit, folder, given)


for _name in ("gif", "fif", "pif", "if", "grad"):
    METHODS.register(_name, InfluenceMethod(_name))
