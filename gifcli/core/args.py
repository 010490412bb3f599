"""The arguments of an unlearning run: one frozen dataclass, validated once, with help per field.

The CLI builds it from options (their help text is these fields' ``help``), ``gif compare``
from YAML, the Python API from keyword arguments. ``Runtime`` says where and how to compute
(device, batch size, DataLoader workers, the distributed group, the loss, progress).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Optional, Union

import torch

from ..dist import SINGLE, Dist
from ..errors import UsageError
from ..math.hvp import SumLoss, cross_entropy_sum
from ..math.influence import SolverOptions
from ..math.selection import CRITERIA, OUTPUT_SCORES
from ..math.solvers import SOLVERS

HVP_MODES = ("auto", "retain", "recompute", "forward")
HESSIAN_DATA = ("remaining", "all")
RECURRENCES = ("float64", "model")

# (stage, done, total or None, info): the CLI turns these into progress bars
ProgressFn = Callable[[str, int, Optional[int], str], None]


def _help(text: str, default: Any = None, **kw) -> Any:
    if "default_factory" in kw:
        return field(metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class UnlearnArgs:
    """Everything that decides an unlearning run's result (recorded with what it writes)."""

    method: str = _help("unlearning method (gif, fif, pif, if, grad, ...; see docs/methods.md)", "gif")
    criterion: str = _help(f"how J is chosen: {', '.join(CRITERIA)}", "topk-outputs")
    ratio: float = _help("share of each layer's parameters in J, in (0, 1]", 0.1)
    threshold: Optional[float] = _help("threshold criterion: score a unit must exceed (default: the layer's mean)")
    output_score: str = _help("topk-outputs/threshold score: 'abs' (mean |output|, the paper's) or 'positive' "
                              "(mean max(output, 0), what a following ReLU passes on)", "abs")
    seed: int = _help("seed of the random/threshold selection and of the Hessian sample", 0)
    solver: str = _help(f"linear solver: {', '.join(SOLVERS)}", "lsmr")
    tol: float = _help("stop at this relative residual of the normal equations", 1e-2)
    max_iter: int = _help("maximum solver iterations (each costs two Hessian-vector products)", 100)
    damping: float = _help("lambda of min ||A x - b||^2 + lambda ||x||^2 (regularises the solve)", 0.0)
    weight_decay: Union[str, float] = _help("add the training objective's weight decay to H: 'auto' (from the "
                                            "checkpoint's training config), a number, or 0", 0.0)
    recurrence: str = _help("precision of the solver's own vectors: float64 or model (the model's dtype)",
                            "float64")
    hvp_mode: str = _help("retain (keep first-order graphs), recompute (constant memory), forward, or auto "
                          "(retain when the graphs fit --memory-budget)", "auto")
    memory_budget: Optional[float] = _help("what the kept graphs may use with hvp-mode auto, e.g. 2GiB "
                                           "(default: half the free device memory)")
    hessian_samples: int = _help("training samples in the Hessian sample", 1024)
    hessian_data: str = _help("the data the Hessian is of: 'all' (what the model was trained on: the influence "
                              "function's derivative at eps = 0) or 'remaining' (minus the forget set, eq. 9 with "
                              "eps = -1)", "all")
    scales: Optional[tuple[float, ...]] = _help("the scale: 'auto' (a grid 2^-10..2^11, chosen on validation), "
                                                "a number, or a comma-separated list to choose from")
    scale_criterion: Optional[str] = _help("how the scale is chosen on validation: f1, privacy, repair, backdoor "
                                           "(default: the task's; see docs/methods.md)")

    def __post_init__(self) -> None:
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
        from .methods import METHODS  # the registry is filled by importing core.methods

        METHODS.get(self.method)

    def solver_options(self) -> SolverOptions:
        return SolverOptions(solver=self.solver, tol=self.tol, max_iter=self.max_iter, damping=self.damping,
                             recurrence_dtype=torch.float64 if self.recurrence == "float64" else None)

    def replace(self, **changes: Any) -> "UnlearnArgs":
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scales"] = list(self.scales) if self.scales is not None else None
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "UnlearnArgs":
        known = {f.name for f in fields(UnlearnArgs)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"unknown unlearning arguments: {', '.join(sorted(unknown))}")
        d = dict(d)
        if d.get("scales") is not None:
            d["scales"] = tuple(d["scales"])
        return UnlearnArgs(**d)

    @staticmethod
    def help(name: str) -> str:
        return next(f.metadata["help"] for f in fields(UnlearnArgs) if f.name == name)


@dataclass(frozen=True)
class Runtime:
    """Where and how to compute; none of it changes a result (beyond rounding)."""

    device: torch.device = torch.device("cpu")
    batch_size: int = 512
    workers: int = 0
    dist: Dist = SINGLE
    loss: SumLoss = cross_entropy_sum
    progress: Optional[ProgressFn] = field(default=None, compare=False)
    deterministic: bool = False  # torch.use_deterministic_algorithms (what CUDA runs need to repeat bit for bit)

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive, got {self.batch_size}")
        if self.workers < 0:
            raise UsageError(f"--workers must be >= 0, got {self.workers}")

    def report(self, stage: str, done: int, total: Optional[int] = None, info: str = "") -> None:
        if self.progress is not None and self.dist.is_main:
            self.progress(stage, done, total, info)

    def with_progress(self, progress: Optional[ProgressFn]) -> "Runtime":
        return replace(self, progress=progress)
