"""Checkpoints: the state dict as safetensors, what rebuilds the model in the metadata.

Metadata key ``gif`` holds one JSON object (format ``gif-checkpoint`` version 1): arch,
dataset, num_classes, input_shape, hidden, train_config, test_accuracy, weights_sha256 and
provenance (for an edited model: base model, mask and influence hashes and the scale).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError as SafetensorsError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..errors import InputFileError
from ..models.zoo import build_model
from .files import atomic_path, sha256_tensors

CHECKPOINT_FORMAT = "gif-checkpoint"
INFLUENCE_FORMAT = "gif-influence"
FORMAT_VERSION = 1


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
        meta = json.loads(raw_meta["gif"])
    except (KeyError, json.JSONDecodeError):
        raise InputFileError(f"{p} has no gif metadata: not a {kind} written by gif") from None
    if meta.get("format") != expected_format:
        raise InputFileError(f"{p} is a {meta.get('format', 'unknown')!r} file, expected a {kind} ({expected_format})")
    return tensors, meta


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={"gif": json.dumps(meta)})


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    state = {k: v for k, v in model.state_dict().items()}
    full = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, **meta, "weights_sha256": sha256_tensors(state)}
    write_safetensors(path, state, full)
    return full


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its metadata and load its weights (eval mode)."""
    state, meta = read_safetensors(path, "model checkpoint", CHECKPOINT_FORMAT)
    try:
        model = build_model(meta["arch"], meta["input_shape"], meta["num_classes"], meta.get("hidden", 128))
        model.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise InputFileError(f"{path}: weights do not match the recorded model ({str(exc).splitlines()[0][:120]})") from None
    if sha256_tensors(state) != meta.get("weights_sha256"):
        raise InputFileError(f"{path}: weights do not match their recorded sha256 (corrupted or edited by hand)")
    return model.to(device).eval(), meta
