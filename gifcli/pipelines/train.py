"""gif train and gif import: a model and the checkpoint that records how it came to be."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..config import TrainConfig
from ..core.args import Runtime
from ..core.passes import evaluate
from ..data.datasets import Data, DatasetSpec, Split, load_data
from ..data.forget import ForgetSet, resolve
from ..errors import InputFileError, UsageError
from ..io.checkpoint import load_into, save_checkpoint
from ..io.files import provenance, sha256_file
from ..models.specs import ArchSpec, set_eval
from ..models.train import TrainProgress, train_model


@dataclass
class TrainReport:
    out: str
    test_loss: Optional[float]
    test_accuracy: Optional[float]
    validation_accuracy: Optional[float]
    seconds: float
    metadata: dict


def model_meta(spec: ArchSpec, data: Data) -> dict:
    return {**spec.record(), "dataset": data.record(), "num_classes": data.num_classes,
            "input_shape": list(data.input_shape)}


def build(spec: ArchSpec, data: Data) -> nn.Module:
    from .inputs import check_outputs

    model = spec.build(data.input_shape, data.num_classes)
    check_outputs(model, data, f"architecture {spec.name}")
    return model


def train_and_save(cfg: TrainConfig, spec: ArchSpec, data: Data, train: Split, test: Split, out: str | Path,
                   rt: Runtime, extra_meta: dict, progress: TrainProgress = None,
                   test_description: str = "test images") -> TrainReport:
    with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # the initialisation: seeded, and the caller's random state kept
        model = build(spec, data)
    result = train_model(model, train, cfg, rt.device, progress, rt.workers)
    t = evaluate(model, test, rt, "test")
    v = evaluate(model, data.validation, rt, "validation")
    meta = {
        **model_meta(spec, data),
        "train_config": cfg.as_dict(),
        "train_samples": len(train),
        **extra_meta,
        "test_loss": t.loss,
        "test_accuracy": t.accuracy,
        "test_accuracy_on": test_description,
        "validation_accuracy": v.accuracy,
        "train_seconds": result.seconds,
        "history": result.history,
        "provenance": provenance(kind="train", device=str(rt.device)),
    }
    full = save_checkpoint(out, model.cpu(), meta)
    return TrainReport(str(out), t.loss, t.accuracy, v.accuracy, result.seconds, full)


def run_train(cfg: TrainConfig, out: str | Path, rt: Runtime, data_dir: Optional[str] = None,
              exclude_label: Optional[int] = None, exclude: Optional[ForgetSet] = None,
              progress: TrainProgress = None) -> TrainReport:
    spec = ArchSpec.parse(cfg.model, cfg.arch_kwargs)
    data = load_data(cfg.dataset_spec(), data_dir)
    if exclude_label is not None:
        data.check_label(exclude_label, "--exclude-label")
    train, test = data.fit, data.test_split
    description = "test images"
    extra: dict = {"excluded_label": exclude_label}
    if exclude_label is not None:
        train = train.where(train.labels != exclude_label)
        test = test.where(test.labels != exclude_label)
        description = f"test images without label {exclude_label}"
    if exclude is not None:
        resolved = resolve(exclude, data)
        train = train.where(~torch.isin(data.fit_indices, resolved.in_fit))
        extra["excluded"] = {**exclude.describe(), "excluded_from_training": int(resolved.in_fit.numel()),
                             "in_validation": resolved.in_validation.tolist()}
    return train_and_save(cfg, spec, data, train, test, out, rt, extra, progress, description)


# ---------------------------------------------------------------------------------------------
def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    """A state dict from safetensors or a ``torch.save`` file (``weights_only=True``: no code runs).

    A dict holding the state dict under ``state_dict`` or ``model`` (a training checkpoint) is
    accepted; which key was used is returned and recorded.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p)), None
        except Exception as exc:
            raise InputFileError(f"{p} is not a readable safetensors file ({str(exc).splitlines()[0][:100]})") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputFileError(
            f"{p} needs code to unpickle (a pickled model object?), which gif never runs: re-save it as a state "
            "dict, torch.save(model.state_dict(), 'model.pt')") from None
    except Exception as exc:
        if _is_torchscript(p):
            raise InputFileError(
                f"{p} is a TorchScript archive (torch.jit.save), which gif does not load: pass the weights, "
                "torch.save(model.state_dict(), 'model.pt') with --arch naming the code, or an exported program "
                "(torch.export.save) as --arch export:FILE.pt2") from None
        raise InputFileError(f"{p} is not a readable torch.save file ({type(exc).__name__})") from None
    key = None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in ("state_dict", "model"):
            if isinstance(obj.get(k), dict) and all(isinstance(v, torch.Tensor) for v in obj[k].values()):
                obj, key = obj[k], k
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputFileError(f"{p} holds no state dict (a mapping of names to tensors)")
    return dict(obj), key


def import_weights(arch: str, arch_kwargs: dict, weights: Optional[str | Path], spec: DatasetSpec, out: str | Path,
                   rt: Runtime, data_dir: Optional[str] = None) -> TrainReport:
    """``gif import``: weights a user already has -> a gif checkpoint, with its measured accuracy."""
    arch_spec = ArchSpec.parse(arch, arch_kwargs)
    data = load_data(spec, data_dir)
    model = build(arch_spec, data)
    key = None
    if weights is None:
        if arch_spec.kind != "export":
            raise UsageError("--weights is required (only an export:FILE.pt2 archive carries its own)")
        state, source = {k: v.detach().clone() for k, v in model.state_dict().items()}, arch_spec.code_path
    else:
        state, key = read_weights(weights)
        source = str(weights)
        for name, t in state.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise InputFileError(f"{weights}: tensor {name} holds NaN or infinite values")
    try:
        model = load_into(model, state, str(weights or arch_spec.code_path))
    except InputFileError as exc:
        hint = ""
        if all(k.startswith("module.") for k in state):
            hint = " (every key starts with 'module.': saved from DataParallel/DDP? save model.module.state_dict())"
        raise InputFileError(f"{exc}{hint}") from None
    model = set_eval(model.to(rt.device))
    t = evaluate(model, data.test_split, rt, "test")
    v = evaluate(model, data.validation, rt, "validation")
    meta = {
        **model_meta(arch_spec, data),
        "imported": {"weights": source, "weights_file_sha256": sha256_file(source) if source else None,
                     "state_dict_key": key},
        "test_loss": t.loss, "test_accuracy": t.accuracy, "test_accuracy_on": "test images",
        "validation_accuracy": v.accuracy,
        "provenance": provenance(kind="import", device=str(rt.device)),
    }
    full = save_checkpoint(out, model.cpu(), meta)
    return TrainReport(str(out), t.loss, t.accuracy, v.accuracy, 0.0, full)


def _is_torchscript(path: Path) -> bool:
    """A zip archive with a ``code/`` folder and ``constants.pkl``: what torch.jit.save writes."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)
