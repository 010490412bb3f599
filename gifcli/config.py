"""Training configuration: YAML -> a frozen dataclass, validated once."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .data.datasets import DATASETS
from .errors import InputFileError, UsageError
from .models.zoo import ARCHITECTURES


@dataclass(frozen=True)
class TrainConfig:
    model: str = field(default="cnn", metadata={"help": f"architecture: {', '.join(ARCHITECTURES)}"})
    dataset: str = field(default="mnist", metadata={"help": f"dataset: {', '.join(DATASETS)}"})
    epochs: int = field(default=20, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=256, metadata={"help": "mini-batch size"})
    lr: float = field(default=0.1, metadata={"help": "initial SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay (L2)"})
    scheduler: str = field(default="step", metadata={"help": "'step' (x gamma at milestones), 'cosine' or 'none'"})
    milestones: tuple[int, ...] = field(default=(10, 15), metadata={"help": "epochs where 'step' multiplies the lr by gamma"})
    gamma: float = field(default=0.1, metadata={"help": "factor of the step scheduler"})
    t_max: int = field(default=200, metadata={"help": "period (epochs) of the cosine scheduler"})
    hidden: int = field(default=128, metadata={"help": "hidden width of the mlp"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and shuffling"})

    def __post_init__(self) -> None:
        if self.model not in ARCHITECTURES:
            raise UsageError(f"unknown model {self.model!r}; choose from {', '.join(ARCHITECTURES)}")
        if self.dataset not in DATASETS:
            raise UsageError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.scheduler not in ("step", "cosine", "none"):
            raise UsageError(f"unknown scheduler {self.scheduler!r}; choose step, cosine or none")
        for name in ("epochs", "batch_size", "t_max", "hidden"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UsageError(f"lr must be positive, got {self.lr}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def replace(self, **changes: Any) -> "TrainConfig":
        d = self.as_dict()
        d.update({k: v for k, v in changes.items() if v is not None})
        return TrainConfig.from_dict(d)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(TrainConfig)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"unknown config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(int(m) for m in d["milestones"])
        return TrainConfig(**d)


def load_train_config(path: str | Path) -> TrainConfig:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise InputFileError(f"config file not found: {p}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise InputFileError(f"cannot read config {p}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputFileError(f"config {p} is not a YAML mapping")
    try:
        return TrainConfig.from_dict(data)
    except TypeError as exc:
        raise InputFileError(f"config {p}: {exc}") from None
