"""The JSON index (mask) file and the influence file, and the checks that tie files together.

Mask file (format ``gif-mask`` version 1)::

    {"format": "gif-mask", "version": 1,
     "model_sha256": <weights_sha256 of the model it was made for>,
     "index_sha256": <sha256 of the sorted int64 flat indices>,
     "criterion": ..., "ratio": ..., "seed": ..., "threshold": ..., "score": ...,
     "forget": {...what the forget set was...},
     "skipped": [{"module", "type", "parameters"}],   # layers gif cannot select units of
     "total_parameters": n, "selected": k,
     "parameters": [{"name", "shape", "numel", "selected",
                     "ranges": [[start, stop], ...]}],   # half-open, flat within that tensor
     "provenance": {...}}

Influence file (safetensors, metadata format ``gif-influence`` version 1): tensors ``delta``
(float, over J) and ``indices`` (int64 flat indices of J); metadata records the method, solver,
solver statistics, Hessian sample, forget set, the model/index hashes and ``delta_sha256``.

Every field of an index file is checked against the model before anything is allocated from
it; the error names the file.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import InputFileError
from ..math.params import IndexSet, ParamSpace
from .checkpoint import FORMAT_VERSION, INFLUENCE_FORMAT, read_safetensors, write_safetensors
from .files import indices_sha256, read_json, sha256_tensors, write_json

MASK_FORMAT = "gif-mask"


def index_sha256(J: IndexSet) -> str:
    return indices_sha256(J.indices.to(torch.int64).numpy())


def _ranges(flat_mask: torch.Tensor) -> list[list[int]]:
    """Half-open runs [start, stop) of the True entries of a flat boolean mask."""
    m = flat_mask.to(torch.int8)
    if m.numel() == 0:
        return []
    edges = torch.diff(torch.cat([torch.zeros(1, dtype=torch.int8), m, torch.zeros(1, dtype=torch.int8)]))
    starts = torch.nonzero(edges == 1).reshape(-1).tolist()
    stops = torch.nonzero(edges == -1).reshape(-1).tolist()
    return [[a, b] for a, b in zip(starts, stops)]


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


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is not an integer ({value!r})")
    return value


def parse_mask(doc: Any, where: str, space: ParamSpace, model_sha256: str) -> IndexSet:
    """The index set of a mask document, every field checked against the model first."""
    if not isinstance(doc, dict) or doc.get("format") != MASK_FORMAT:
        raise InputFileError(f"{where} is not a gif mask file (format {MASK_FORMAT!r})")
    if doc.get("version") != FORMAT_VERSION:
        raise InputFileError(f"{where}: unsupported mask version {doc.get('version')}")
    if doc.get("model_sha256") != model_sha256:
        raise InputFileError(f"{where} was made for another model (sha256 {str(doc.get('model_sha256'))[:12]}...)")
    numel = dict(zip(space.names, space.numels))
    shapes = dict(zip(space.names, space.shapes))
    offsets = dict(zip(space.names, space.offsets))
    try:
        entries = doc["parameters"]
        if not isinstance(entries, list):
            raise ValueError("'parameters' is not a list")
        if _int(doc.get("total_parameters"), "total_parameters") != space.size:
            raise ValueError(f"total_parameters {doc.get('total_parameters')} differs from the model's {space.size}")
        parts, seen, total = [], set(), 0
        for entry in entries:
            name = entry["name"]
            if name not in numel:
                raise ValueError(f"parameter {name!r} is not in the model")
            if name in seen:
                raise ValueError(f"parameter {name!r} is listed twice")
            seen.add(name)
            if list(entry["shape"]) != list(shapes[name]):
                raise ValueError(f"parameter {name} has shape {entry['shape']}, the model has {list(shapes[name])}")
            last, count = -1, 0
            for r in entry["ranges"]:
                if not isinstance(r, list) or len(r) != 2:
                    raise ValueError(f"{name}: a range is not [start, stop]")
                a, b = _int(r[0], f"{name} range start"), _int(r[1], f"{name} range stop")
                if not (0 <= a < b <= numel[name]) or a < last:
                    raise ValueError(f"{name}: range [{a}, {b}) is outside 0..{numel[name]} or out of order")
                last, count = b, count + (b - a)
            if count != _int(entry["selected"], f"{name} selected"):
                raise ValueError(f"{name}: its ranges hold {count} indices, 'selected' says {entry['selected']}")
            total += count
            parts.extend(torch.arange(a, b, dtype=torch.int64) + offsets[name] for a, b in entry["ranges"])
        if total != _int(doc.get("selected"), "selected"):
            raise ValueError(f"the ranges hold {total} indices, 'selected' says {doc.get('selected')}")
        flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        J = IndexSet.from_indices(space, flat)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(f"{where}: malformed mask ({type(exc).__name__}: {exc})") from None
    if index_sha256(J) != doc.get("index_sha256"):
        raise InputFileError(f"{where}: selected indices do not match their recorded sha256 (edited or corrupted)")
    if J.size == 0:
        raise InputFileError(f"{where}: the mask selects no parameter")
    return J


def read_mask(path, space: ParamSpace, model_sha256: str) -> tuple[IndexSet, dict[str, Any]]:
    """The index set of a mask file, checked against the model it is used with."""
    doc = read_json(path, "mask")
    return parse_mask(doc, str(path), space, model_sha256), doc


def write_influence(path, delta: torch.Tensor, J: IndexSet, meta: dict[str, Any]) -> dict[str, Any]:
    stored = delta.detach().float().cpu().contiguous()
    full = {"format": INFLUENCE_FORMAT, "version": FORMAT_VERSION, "index_sha256": index_sha256(J),
            "delta_sha256": sha256_tensors({"delta": stored}), **meta}
    write_safetensors(path, {"delta": stored, "indices": J.indices}, full)
    return full


def read_influence(path, space: ParamSpace, model_sha256: str) -> tuple[torch.Tensor, IndexSet, dict[str, Any]]:
    tensors, meta = read_safetensors(path, "influence file", INFLUENCE_FORMAT)
    if meta.get("model_sha256") != model_sha256:
        raise InputFileError(f"{path} was computed for another model (sha256 {str(meta.get('model_sha256'))[:12]}...)")
    if "delta" not in tensors or "indices" not in tensors:
        raise InputFileError(f"{path}: influence file lacks its delta or indices tensor")
    delta, indices = tensors["delta"], tensors["indices"]
    if delta.dim() != 1 or not delta.is_floating_point() or indices.dim() != 1 or indices.dtype != torch.int64:
        raise InputFileError(f"{path}: delta must be a 1-D float tensor and indices 1-D int64")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= space.size):
        raise InputFileError(f"{path}: indices fall outside the model's {space.size} parameters")
    J = IndexSet.from_indices(space, indices)
    if index_sha256(J) != meta.get("index_sha256") or delta.numel() != J.size or J.size != indices.numel():
        raise InputFileError(f"{path}: delta and indices do not match their recorded index set")
    if sha256_tensors({"delta": delta}) != meta.get("delta_sha256"):
        raise InputFileError(f"{path}: delta does not match its recorded sha256 (edited or corrupted)")
    return delta, J, meta
