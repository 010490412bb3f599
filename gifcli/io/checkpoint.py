"""Checkpoints: the state dict as safetensors, what rebuilds the model in the metadata.

Metadata key ``gif`` holds one JSON object (format ``gif-checkpoint`` version 1): ``arch`` (the
spec, see models/specs.py), ``arch_kwargs``, ``arch_code`` (path and sha256 of a user's file),
``dataset`` (the data record: spec, classes, fingerprint, validation split), ``num_classes``,
``input_shape``, ``dtype``, ``train_config``, ``test_accuracy``, ``weights_sha256`` (checked on every
load) and ``provenance``; an edited model adds ``edit`` (base model, mask and influence hashes,
method, scale). Loading a checkpoint whose ``arch`` names user code imports that code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError as SafetensorsError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..errors import InputFileError, NonFiniteError
from ..models.specs import ArchSpec, set_eval
from .files import atomic_path, check_finite_json, sha256_tensors

CHECKPOINT_FORMAT = "gif-checkpoint"
INFLUENCE_FORMAT = "gif-influence"
FORMAT_VERSION = 1
MAX_METADATA_BYTES = 64 << 20


def read_safetensors(path: str | Path, kind: str, expected_format: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and the parsed ``gif`` metadata of a safetensors file, or a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{kind} file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as fh:
            raw_meta = fh.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorsError, OSError, ValueError, RuntimeError) as exc:
        raise InputFileError(f"{p} is not a readable safetensors {kind} ({str(exc).splitlines()[0][:120]})") from None
    try:
        text = raw_meta["gif"]
        if len(text) > MAX_METADATA_BYTES:
            raise ValueError("metadata too large")
        meta = json.loads(text, parse_constant=_reject_constant)
    except (KeyError, ValueError, RecursionError):
        raise InputFileError(f"{p} has no readable gif metadata: not a {kind} written by gif") from None
    if not isinstance(meta, dict) or meta.get("format") != expected_format:
        found = meta.get("format", "unknown") if isinstance(meta, dict) else "unknown"
        raise InputFileError(f"{p} is a {found!r} file, expected a {kind} ({expected_format})")
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"{p}: tensor {name} holds NaN or infinite values")
    return tensors, meta


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    for name, t in contiguous.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"refusing to write {path}: tensor {name} holds NaN or infinite values")
    check_finite_json(meta, str(path))
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={"gif": json.dumps(meta, allow_nan=False)})


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    state = {k: v for k, v in model.state_dict().items()}
    dtype = next((str(v.dtype).replace("torch.", "") for v in state.values() if v.is_floating_point()), "float32")
    full = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, **meta, "dtype": dtype,
            "weights_sha256": sha256_tensors(state)}
    write_safetensors(path, state, full)
    return full


def arch_spec(meta: dict, base: Path | None = None) -> ArchSpec:
    """The architecture a checkpoint records (older checkpoints: ``hidden`` for the mlp)."""
    name = meta.get("arch")
    if not isinstance(name, str):
        raise InputFileError("checkpoint metadata names no architecture")
    kwargs = meta.get("arch_kwargs")
    if kwargs is None:
        kwargs = {"hidden": meta["hidden"]} if name == "mlp" and "hidden" in meta else {}
    code = meta.get("arch_code") or {}
    path = code.get("path")
    if path and not Path(path).is_file() and base is not None and (base / Path(path).name).is_file():
        path = str((base / Path(path).name).resolve())  # the file moved along with the checkpoint
    return ArchSpec(name, dict(kwargs), path, code.get("sha256"))


def state_dict_problems(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Missing and unexpected keys and shape mismatches between a model and a state dict."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    out = []
    for name, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            shown = ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")
            out.append(f"{name}: {shown}")
    return out


def load_into(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    problems = state_dict_problems(model, state)
    if problems:
        raise InputFileError(f"{where} does not fit the architecture: {'; '.join(problems)}")
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    if floats and floats[0] != next((p.dtype for p in model.parameters()), floats[0]):
        model = model.to(floats[0])
    model.load_state_dict(state)
    return model


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its metadata and load its weights (eval mode)."""
    state, meta = read_safetensors(path, "model checkpoint", CHECKPOINT_FORMAT)
    if sha256_tensors(state) != meta.get("weights_sha256"):
        raise InputFileError(f"{path}: weights do not match their recorded sha256 (corrupted or edited by hand)")
    try:
        spec = arch_spec(meta, Path(path).resolve().parent)
        model = spec.build(meta["input_shape"], meta["num_classes"])
    except KeyError as exc:
        raise InputFileError(f"{path}: metadata lacks {exc}") from None
    model = load_into(model, state, str(path))
    return set_eval(model.to(device)), meta




