"""The JSON index (mask) file and the influence file, and the checks that tie files together.

Mask file (format ``gif-mask`` version 1)::

    {"format": "gif-mask", "version": 1,
     "model_sha256": <weights_sha256 of the model it was made for>,
     "index_sha256": <sha256 of the sorted int64 flat indices>,
     "criterion": ..., "ratio": ..., "seed": ..., "threshold": ...,
     "forget": {...what the forget set was...},
     "total_parameters": n, "selected": k,
     "parameters": [{"name", "shape", "numel", "selected",
                     "ranges": [[start, stop], ...]}],   # half-open, flat within that tensor
     "provenance": {...}}

Influence file (safetensors, metadata format ``gif-influence`` version 1): tensors ``delta``
(float, over J) and ``indices`` (int64 flat indices of J); metadata records the method, solver,
solver statistics, Hessian sample, forget set and the model/index hashes.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch

from ..errors import InputFileError
from ..math.params import IndexSet, ParamSpace
from .checkpoint import INFLUENCE_FORMAT, FORMAT_VERSION, read_safetensors, write_safetensors
from .files import read_json, write_json

MASK_FORMAT = "gif-mask"


def index_sha256(J: IndexSet) -> str:
    return hashlib.sha256(J.indices.to(torch.int64).numpy().tobytes()).hexdigest()


def _ranges(flat_mask: torch.Tensor) -> list[list[int]]:
    idx = torch.nonzero(flat_mask, as_tuple=False).reshape(-1).tolist()
    out: list[list[int]] = []
    for i in idx:
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def mask_document(J: IndexSet, model_sha256: str, info: dict[str, Any]) -> dict[str, Any]:
    masks = J.masks()
    params = []
    for name, shape, numel in zip(J.space.names, J.space.shapes, J.space.numels):
        m = masks[name].reshape(-1)
        params.append({"name": name, "shape": list(shape), "numel": numel, "selected": int(m.sum()), "ranges": _ranges(m)})
    return {
        "format": MASK_FORMAT,
        "version": FORMAT_VERSION,
        "model_sha256": model_sha256,
        "index_sha256": index_sha256(J),
        **info,
        "total_parameters": J.space.size,
        "selected": J.size,
        "parameters": params,
    }


def write_mask(path, doc: dict[str, Any]) -> None:
    write_json(path, doc)


def read_mask(path, space: ParamSpace, model_sha256: str) -> tuple[IndexSet, dict[str, Any]]:
    """The index set of a mask file, checked against the model it is used with."""
    doc = read_json(path, "mask")
    if not isinstance(doc, dict) or doc.get("format") != MASK_FORMAT:
        raise InputFileError(f"{path} is not a gif mask file (format {MASK_FORMAT!r})")
    if doc.get("version") != FORMAT_VERSION:
        raise InputFileError(f"{path}: unsupported mask version {doc.get('version')}")
    if doc.get("model_sha256") != model_sha256:
        raise InputFileError(f"{path} was made for another model (sha256 {str(doc.get('model_sha256'))[:12]}...)")
    try:
        by_name = {p["name"]: p for p in doc["parameters"]}
        parts = []
        for name, off, shape in zip(space.names, space.offsets, space.shapes):
            entry = by_name.get(name)
            if entry is None:
                continue
            if list(entry["shape"]) != list(shape):
                raise InputFileError(f"{path}: parameter {name} has shape {entry['shape']}, the model has {list(shape)}")
            for a, b in entry["ranges"]:
                parts.append(torch.arange(int(a), int(b), dtype=torch.int64) + off)
        flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        J = IndexSet.from_indices(space, flat)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(f"{path}: malformed mask ({type(exc).__name__}: {exc})") from None
    if index_sha256(J) != doc.get("index_sha256"):
        raise InputFileError(f"{path}: selected indices do not match their recorded sha256 (edited or corrupted)")
    if J.size == 0:
        raise InputFileError(f"{path}: the mask selects no parameter")
    return J, doc


def write_influence(path, delta: torch.Tensor, J: IndexSet, meta: dict[str, Any]) -> None:
    full = {"format": INFLUENCE_FORMAT, "version": FORMAT_VERSION, "index_sha256": index_sha256(J), **meta}
    write_safetensors(path, {"delta": delta.detach().float().cpu(), "indices": J.indices}, full)


def read_influence(path, space: ParamSpace, model_sha256: str) -> tuple[torch.Tensor, IndexSet, dict[str, Any]]:
    tensors, meta = read_safetensors(path, "influence file", INFLUENCE_FORMAT)
    if meta.get("model_sha256") != model_sha256:
        raise InputFileError(f"{path} was computed for another model (sha256 {str(meta.get('model_sha256'))[:12]}...)")
    if "delta" not in tensors or "indices" not in tensors:
        raise InputFileError(f"{path}: influence file lacks its delta or indices tensor")
    try:
        J = IndexSet.from_indices(space, tensors["indices"])
    except ValueError as exc:
        raise InputFileError(f"{path}: {exc}") from None
    if index_sha256(J) != meta.get("index_sha256") or tensors["delta"].numel() != J.size:
        raise InputFileError(f"{path}: delta and indices do not match their recorded index set")
    return tensors["delta"], J, meta
