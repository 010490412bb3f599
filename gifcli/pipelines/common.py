"""File-level pieces every command shares: load a checkpoint and its data (checked against each
other), and write the chain's files (mask -> influence -> edited checkpoint), each recording
the hashes of what it was made from. Nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..core.args import Runtime, UnlearnArgs
from ..core.steps import InfluenceRun, space_of
from ..data.datasets import Data, DatasetSpec, load_data
from ..dist import Dist, SINGLE, from_environment
from ..errors import InputFileError, UsageError
from ..io.artifacts import index_sha256, mask_document, read_influence, read_mask, write_influence, write_mask
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..io.files import input_sha256, provenance, sha256_file
from ..math.params import IndexSet
from ..math.selection import Selection
from ..models.specs import set_eval


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
        from pathlib import Path as _Path

        from ..core.methods import ModelContext
        from ..io.checkpoint import arch_spec

        spec = arch_spec(self.meta, _Path(self.path).resolve().parent)
        shape, classes = self.meta.get("input_shape"), self.meta.get("num_classes")
        return ModelContext(self.trained_weight_decay, self.meta.get("train_config"),
                            lambda: spec.build(shape, classes))


def load_model(path: str | Path) -> Loaded:
    model, meta = load_checkpoint(path)
    return Loaded(model, meta, str(path))


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda without a GPU is an error. Under torchrun with
    CUDA each rank takes the GPU of its LOCAL_RANK."""
    import os

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda asked for, but no CUDA GPU is available (use --device cpu or auto)")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        return torch.device(name)
    raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda")


def runtime(device: str, batch_size: int = 512, workers: int = 0, progress=None,
            deterministic: bool = False) -> Runtime:
    """The Runtime of a command: its device, and the distributed group torchrun describes (if any)."""
    import os

    dev = resolve_device(device)
    if deterministic:
        # cuBLAS needs this workspace setting before its first call to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    dist: Dist = from_environment(dev)
    return Runtime(dev, batch_size, workers, dist, progress=progress, deterministic=deterministic)


def dataset_spec(recorded: Any, given: Optional[str]) -> DatasetSpec:
    """The spec to load: the checkpoint's, or ``--dataset`` when it names the same kind of data."""
    spec = DatasetSpec.from_record(recorded)
    if given is None:
        return spec
    other = DatasetSpec.parse(given)
    if other.kind != spec.kind:
        raise UsageError(f"--dataset {other.name} disagrees with the model's dataset {spec.name}")
    # a moved folder or file is fine as long as its content is the recorded one (checked on load)
    return DatasetSpec(spec.kind, other.location or spec.location, spec.channels, spec.size, spec.mean, spec.std)


def load_data_for(loaded: Loaded, dataset: Optional[str], data_dir: Optional[str]) -> Data:
    """The model's data (or ``--dataset``), checked to be the data the model records."""
    data = load_data(dataset_spec(loaded.meta.get("dataset"), dataset), data_dir)
    data.check_record(loaded.meta.get("dataset"), f"model {loaded.path}")
    if data.num_classes != int(loaded.meta.get("num_classes", data.num_classes)):
        raise InputFileError(f"model {loaded.path} has {loaded.meta['num_classes']} classes, "
                             f"{data.spec.name} has {data.num_classes}")
    if list(data.input_shape) != list(loaded.meta.get("input_shape", data.input_shape)):
        raise InputFileError(f"model {loaded.path} takes inputs {loaded.meta['input_shape']}, "
                             f"{data.spec.name} gives {list(data.input_shape)}")
    check_outputs(loaded.model, data, f"model {loaded.path}")
    return data


def check_outputs(model: nn.Module, data: Data, what: str) -> None:
    """The model gives one output per class of the data (one forward pass on two test images)."""
    from ..core.walk import to_model
    from ..data.datasets import batches

    split = data.test_split if len(data.test_split) else data.fit
    x, _ = next(iter(batches(split, 2, 0)))
    from ..models.specs import set_eval

    was_training = model.training
    set_eval(model)  # no BatchNorm statistics move
    try:
        with torch.inference_mode():
            out = model(to_model(x, model))
    finally:
        if was_training:
            try:
                model.train()
            except NotImplementedError:  # a torch.export graph keeps its mode
                pass
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != data.num_classes:
        got = f"outputs of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputFileError(f"{what} gives {got} on {data.spec.name}, which has {data.num_classes} classes "
                             f"(expected ({len(x)}, {data.num_classes}))")


def check_label(data: Data, label: int) -> None:
    if not 0 <= label < data.num_classes:
        raise UsageError(f"label {label} is outside the classes 0..{data.num_classes - 1}")


# ---------------------------------------------------------------------------------------------
# the chain's files
def mask_info(selection: Selection, args: UnlearnArgs, target: dict, loaded: Loaded) -> dict:
    return {"criterion": selection.criterion, "ratio": selection.ratio, "seed": args.seed, "threshold": args.threshold,
            "output_score": args.output_score, "forget": target, "skipped": selection.skipped,
            "model": loaded.path, "provenance": provenance(kind="select")}


def write_mask_file(path: str | Path, selection: Selection, args: UnlearnArgs, target: dict, loaded: Loaded) -> dict:
    doc = mask_document(selection.J, loaded.sha, mask_info(selection, args, target, loaded))
    write_mask(path, doc)
    return doc


def read_mask_for(loaded: Loaded, mask_path: str | Path) -> tuple[IndexSet, dict]:
    return read_mask(mask_path, space_of(loaded.model), loaded.sha)


def write_influence_file(path: str | Path, run: InfluenceRun, loaded: Loaded, mask_path: Optional[str | Path]) -> dict:
    mask_meta = ({"mask": str(mask_path), "mask_sha256": sha256_file(mask_path)} if mask_path is not None
                 else {"mask": None})
    meta = {"model_sha256": loaded.sha, "model": loaded.path, **mask_meta, "selected": run.J.size, **run.info,
            "provenance": provenance(kind="influence")}
    return write_influence(path, run.delta, run.J, meta)


def influence_links(influence_path: Optional[str | Path], imeta: dict, J: Optional[IndexSet]) -> dict:
    """What an edited checkpoint records of the influence file it was made from (all None without one)."""
    return {
        "influence": None if influence_path is None else str(influence_path),
        "influence_abs": None if influence_path is None else str(Path(influence_path).resolve()),
        "influence_sha256": input_sha256(influence_path),
        "index_sha256": index_sha256(J) if J is not None else None, "mask_sha256": imeta.get("mask_sha256"),
        "target": imeta.get("target"), "selected": J.size if J is not None else None,
    }


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
            "base_model_sha256": loaded.sha, **influence_links(None, {}, None), **links,
            "method": method, **hyper, "hyper_keys": sorted(hyper), "args": args, "runtime": runtime,
        },
        "provenance": provenance(kind="apply"),
    })
    return meta


def apply_file(loaded: Loaded, influence_path: str | Path, scale: float, out: str | Path) -> dict:
    """``gif apply``: theta_J <- theta_J - scale * delta from an influence file, written to ``out``."""
    from ..core.steps import edited_copy

    delta, J, imeta = read_influence(influence_path, space_of(loaded.model), loaded.sha)
    edited = edited_copy(loaded.model, J, delta, scale)
    return save_checkpoint(out, edited.cpu(), edited_meta(loaded, influence_links(influence_path, imeta, J),
                                                          {"scale": scale}, imeta.get("method", "gif")))


def save_edited(out: str | Path, model: nn.Module, loaded: Loaded, links: dict, hyper: dict, method: str,
                args: Optional[dict] = None, runtime: Optional[dict] = None) -> dict:
    return save_checkpoint(out, set_eval(model).cpu(), edited_meta(loaded, links, hyper, method, args, runtime))


__all__ = ["Loaded", "SINGLE", "apply_file", "check_label", "load_data_for", "load_model", "read_mask_for",
           "resolve_device", "runtime", "save_edited", "write_influence_file", "write_mask_file"]
