"""The influence methods' files: the mask (J, from ``gif select``), the influence file (delta over
J, from ``gif influence``) and what an edited checkpoint records of them; ``gif apply`` re-reads
the influence file. Formats: docs/file-formats.md."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...core.args import UnlearnArgs
from ...core.checkpoints import Loaded, edited_meta
from ...core.edit import edited_copy, space_of
from ...errors import InputFileError
from ...io.artifacts import index_sha256, mask_document, read_influence, read_mask, write_influence, write_mask
from ...io.checkpoint import save_checkpoint
from ...io.files import input_sha256, provenance, sha256_file
from ...math.params import IndexSet
from ...math.selection import Selection
from .steps import InfluenceRun


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


def apply_file(loaded: Loaded, influence_path: str | Path, scale: float, out: str | Path) -> dict:
    """``gif apply``: theta_J <- theta_J - scale * delta from an influence file, written to ``out``."""
    delta, J, imeta = read_influence(influence_path, space_of(loaded.model), loaded.sha)
    if not isinstance(imeta.get("method"), str):
        raise InputFileError(f"{influence_path}: the influence file records no method")
    edited = edited_copy(loaded.model, J, delta, scale)
    return save_checkpoint(out, edited.cpu(), edited_meta(loaded, influence_links(influence_path, imeta, J),
                                                          {"scale": scale}, imeta["method"]))
