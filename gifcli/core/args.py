"""The arguments of an unlearning run, and the runtime it computes on.

``UnlearnArgs`` is what every method shares (its name, the seed, how its hyper-parameters are
chosen on validation) plus the method's own arguments (``options``, the method's frozen ``Args``
dataclass). It is built from flat keywords, ``UnlearnArgs(method="ssd", alphas=(1, 10))``, so the
CLI, ``gif compare``'s YAML and the Python API all speak the fields' own names; it records itself
flat (``as_dict``), so an edit's recorded arguments read the same for every method.

``Runtime`` says where and how to compute: device, batch size, DataLoader workers, the
distributed group, the loss, progress. What of it can change a result (the loss, the batch size
of the walks that train) is recorded with every run (``Runtime.record``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import torch

from ..data.datasets import BATCH
from ..dist import SINGLE, Dist
from ..errors import UsageError
from ..math.hvp import SumLoss, cross_entropy_sum
from .methods import METHODS, MethodArgs

DEFAULT_METHOD = "gif"  # the method of a command or an API call that names none
COMMON = ("method", "seed", "scale_criterion")
COMMON_HELP = {
    "method": "unlearning method (gif, fif, pif, if, grad, ssd, finetune, ...; see docs/methods.md)",
    "seed": "seed of every random choice the method makes (selection, Hessian sample, batches)",
    "scale_criterion": "how the method's scale or hyper-parameters are chosen on validation: f1, match, privacy, "
                       "repair, backdoor (default: the task's, match for gif's steps toward a class's masked "
                       "outputs; see docs/methods.md)",
}

# (stage, done, total or None, info): the CLI turns these into progress bars
ProgressFn = Callable[[str, int, Optional[int], str], None]


class UnlearnArgs:
    """Everything that decides an unlearning run's result (recorded with what it writes).

    Immutable; compares and hashes by its recorded form. The method's own fields are read as
    attributes (``args.ratio`` on a gif run) and live in ``args.options``.
    """

    __slots__ = ("method", "seed", "scale_criterion", "options")

    def __init__(self, method: str = DEFAULT_METHOD, seed: int = 0, scale_criterion: Optional[str] = None,
                 options: Optional[MethodArgs] = None, **fields: Any) -> None:
        if not isinstance(method, str):
            raise UsageError(f"method must be a name, got {method!r}")
        cls = METHODS.get(method).Args
        if options is not None and fields:
            raise UsageError("give the method's arguments either as options=... or as keywords, not both")
        if options is None:
            from .methods import method_args

            options = method_args(method, fields)
        elif type(options) is not cls:
            raise UsageError(f"method {method!r} takes {cls.__name__}, not {type(options).__name__}")
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise UsageError(f"--seed must be an integer, got {seed!r}") from None
        for name, value in (("method", method), ("seed", seed), ("scale_criterion", scale_criterion),
                            ("options", options)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("UnlearnArgs is immutable: use .replace(...)")

    def __getattr__(self, name: str) -> Any:  # the method's own fields
        options = object.__getattribute__(self, "options")
        try:
            return getattr(options, name)
        except AttributeError:
            raise AttributeError(f"method {object.__getattribute__(self, 'method')!r} has no argument {name!r}") \
                from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnlearnArgs) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.as_dict().items())))

    def __repr__(self) -> str:
        return "UnlearnArgs(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"

    def has(self, name: str) -> bool:
        return name in COMMON or name in type(self.options).field_names()

    def replace(self, **changes: Any) -> "UnlearnArgs":
        """A copy with ``changes``; a new method keeps the fields it shares with the old one."""
        method = changes.pop("method", self.method)
        common = {k: changes.pop(k, getattr(self, k)) for k in ("seed", "scale_criterion")}
        if method == self.method:
            return UnlearnArgs(method, options=replace(self.options, **changes) if changes else self.options,
                               **common)
        keep = {k: v for k, v in self.options.as_dict().items() if k in METHODS.get(method).Args.field_names()}
        return UnlearnArgs(method, **common, **{**keep, **changes})

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "seed": self.seed, "scale_criterion": self.scale_criterion,
                **self.options.as_dict()}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "UnlearnArgs":
        return UnlearnArgs(**dict(d))


@dataclass(frozen=True)
class Runtime:
    """Where and how to compute. The device, workers, distributed group and progress do not change
    a result (beyond rounding); the loss and the batch size can, and :meth:`record` says them."""

    device: torch.device = torch.device("cpu")
    batch_size: int = BATCH
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

    def record(self) -> dict[str, Any]:
        """What of the runtime can change a result: recorded beside the arguments."""
        loss = getattr(self.loss, "__qualname__", None) or type(self.loss).__name__
        module = getattr(self.loss, "__module__", "")
        return {"loss": f"{module}.{loss}" if module else loss, "batch_size": self.batch_size,
                "ranks": self.dist.world, "deterministic": self.deterministic}
