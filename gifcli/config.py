"""Training configuration: YAML -> a frozen dataclass, validated once, with clear messages."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import InputFileError, UsageError


@dataclass(frozen=True)
class TrainConfig:
    model: str = field(default="cnn", metadata={"help": "architecture spec (a built-in name, torchvision:NAME, "
                                                         "package.module:callable, file.py:callable)"})
    arch_kwargs: dict = field(default_factory=dict, metadata={"help": "keyword arguments of the architecture"})
    dataset: str = field(default="mnist", metadata={"help": "dataset spec: mnist, cifar10, imagefolder:DIR, "
                                                            "tensors:FILE"})
    channels: Optional[int] = field(default=None, metadata={"help": "input channels (1 or 3; default: the data's)"})
    image_size: Optional[int] = field(default=None, metadata={"help": "imagefolder: resize images to this size"})
    mean: Optional[tuple[float, ...]] = field(default=None, metadata={"help": "per-channel normalisation mean"})
    std: Optional[tuple[float, ...]] = field(default=None, metadata={"help": "per-channel normalisation std"})
    epochs: int = field(default=20, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=256, metadata={"help": "mini-batch size"})
    lr: float = field(default=0.1, metadata={"help": "initial SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay (L2)"})
    scheduler: str = field(default="step", metadata={"help": "'step' (x gamma at milestones), 'cosine' or 'none'"})
    milestones: tuple[int, ...] = field(default=(10, 15), metadata={"help": "epochs where 'step' multiplies the lr by gamma"})
    gamma: float = field(default=0.1, metadata={"help": "factor of the step scheduler"})
    t_max: Optional[int] = field(default=None, metadata={"help": "period (epochs) of the cosine scheduler (default: "
                                                                 "the run's epochs, so the lr ends near 0)"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and shuffling"})

    def __post_init__(self) -> None:
        from .models.specs import ArchSpec

        if not isinstance(self.model, str) or not self.model:
            raise UsageError("config 'model' must name an architecture")
        ArchSpec.parse(self.model, self.arch_kwargs)  # checks the form; imports nothing
        if not isinstance(self.arch_kwargs, dict):
            raise UsageError("config 'arch_kwargs' must be a mapping")
        if self.scheduler not in ("step", "cosine", "none"):
            raise UsageError(f"unknown scheduler {self.scheduler!r}; choose step, cosine or none")
        for name in ("epochs", "batch_size", "t_max"):
            if name == "t_max" and self.t_max is None:
                continue
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)) or v < 0 or (name == "lr" and v == 0):
                raise UsageError(f"{name} must be a finite number{' > 0' if name == 'lr' else ' >= 0'}, got {v}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        for k in ("mean", "std"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d

    def replace(self, **changes: Any) -> "TrainConfig":
        d = self.as_dict()
        d.update({k: v for k, v in changes.items() if v is not None})
        return TrainConfig.from_dict(d)

    def dataset_spec(self):
        from .data.datasets import DatasetSpec

        return DatasetSpec.parse(self.dataset, self.channels, self.image_size, self.mean, self.std)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        if "hidden" in d:  # older configs: the mlp's width
            d.setdefault("arch_kwargs", {})
            d["arch_kwargs"] = {**d["arch_kwargs"], "hidden": d.pop("hidden")}
        known = {f.name for f in fields(TrainConfig)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"unknown config keys: {', '.join(sorted(unknown))}")
        d = {k: checked_value(k, v) for k, v in d.items()}
        try:
            return TrainConfig(**d)
        except TypeError as exc:
            raise UsageError(f"bad config: {exc}") from None


# each key's kind: what a YAML value must be (read as the options of gif train are)
KINDS = {"epochs": int, "batch_size": int, "channels": int, "image_size": int, "t_max": int, "seed": int,
         "lr": float, "momentum": float, "weight_decay": float, "gamma": float,
         "model": str, "dataset": str, "scheduler": str,
         "milestones": (int,), "mean": (float,), "std": (float,), "arch_kwargs": dict}


def checked_value(key: str, value: Any) -> Any:
    """A config value of the right kind, or a usage error naming the key and the value."""
    kind = KINDS.get(key)
    if value is None or kind is None:
        return value
    if isinstance(kind, tuple):  # a list of numbers (YAML list or one number)
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(_is(v, kind[0]) for v in items):
            raise UsageError(f"{key}: {value!r} is not a list of {'integers' if kind[0] is int else 'numbers'}")
        return tuple(kind[0](v) for v in items)
    if not _is(value, kind):
        _bad(key, value, kind)
    return float(value) if kind is float else value


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _bad(key: str, value: Any, kind: type):
    what = {int: "an integer", float: "a number", str: "text", dict: "a mapping"}[kind]
    raise UsageError(f"{key}: {value!r} is not {what}")


def read_yaml(path: str | Path, what: str = "config", empty_ok: bool = False) -> dict:
    """A YAML mapping, refused with one line when it cannot be read, is not a mapping, or uses anchors
    and aliases (which gif does not expand: a few hundred bytes of nested aliases can expand to
    gigabytes)."""
    p = Path(path)
    try:
        text = p.read_text()
        if any(isinstance(t, (yaml.AliasToken, yaml.AnchorToken)) for t in yaml.scan(text)):
            raise UsageError(f"{what} {p} uses YAML anchors or aliases (&, *), which gif does not expand: "
                             "write the values out")
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise InputFileError(f"{what} file not found: {p}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputFileError(f"cannot read {what} {p}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    except RecursionError:
        raise InputFileError(f"cannot read {what} {p}: nested too deeply") from None
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise InputFileError(f"{what} {p} is not a YAML mapping")
    return data


def load_train_config(path: str | Path) -> TrainConfig:
    p = Path(path)
    data = read_yaml(p)
    try:
        return TrainConfig.from_dict(data)
    except UsageError as exc:
        raise UsageError(f"config {p}: {exc}") from None
