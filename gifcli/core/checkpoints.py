"""A checkpoint as the methods and commands see it (:class:`Loaded`), and an edited checkpoint's
record of where it came from (:func:`edited_meta`, :func:`save_edited`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from ..io.checkpoint import arch_spec, load_checkpoint, save_checkpoint
from ..io.files import provenance
from ..models.specs import set_eval
from .methods import ModelContext


@dataclass
class Loaded:
    """A checkpoint: the model, its metadata, and where it came from."""

    model: nn.Module
    meta: dict
    path: str

    @property
    def sha(self) -> str:
        return self.meta["weights_sha256"]

    @property
    def trained_weight_decay(self) -> Optional[float]:
        wd = (self.meta.get("train_config") or {}).get("weight_decay")
        return float(wd) if wd is not None else None

    def context(self):
        """What the methods may need about how this model was made (weight decay, recipe, a fresh copy)."""
        spec = arch_spec(self.meta, Path(self.path).resolve().parent)
        shape, classes = self.meta.get("input_shape"), self.meta.get("num_classes")
        return ModelContext(self.trained_weight_decay, self.meta.get("train_config"),
                            lambda: spec.build(shape, classes))


def load_model(path: str | Path) -> Loaded:
    model, meta = load_checkpoint(path)
    return Loaded(model, meta, str(path))


# what an edit records of a method's own files when it has none (the influence methods fill them)
NO_LINKS = {"influence": None, "influence_abs": None, "influence_sha256": None, "index_sha256": None,
            "mask_sha256": None, "target": None, "selected": None}


def edited_meta(loaded: Loaded, links: dict, hyper: dict, method: str, args: Optional[dict] = None,
                runtime: Optional[dict] = None) -> dict:
    """An edited checkpoint's metadata: its base, the method, what it chose (``hyper``), the
    arguments it ran with and the runtime facts that can change a result, and the method's links
    to its own files."""
    meta = {k: loaded.meta[k] for k in ("arch", "arch_kwargs", "arch_code", "dataset", "num_classes",
                                        "input_shape", "hidden", "train_config", "train_samples")
            if k in loaded.meta}
    meta.update({
        "edit": {
            "base_model": loaded.path, "base_model_abs": str(Path(loaded.path).resolve()),
            "base_model_sha256": loaded.sha, **NO_LINKS, **links,
            "method": method, **hyper, "hyper_keys": sorted(hyper), "args": args, "runtime": runtime,
        },
        "provenance": provenance(kind="apply"),
    })
    return meta


def save_edited(out: str | Path, model: nn.Module, loaded: Loaded, links: dict, hyper: dict, method: str,
                args: Optional[dict] = None, runtime: Optional[dict] = None) -> dict:
    return save_checkpoint(out, set_eval(model).cpu(), edited_meta(loaded, links, hyper, method, args, runtime))
