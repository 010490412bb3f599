"""What ``gif verify`` checks of an influence edit: mask -> influence file -> edited weights =
base - scale x delta over J, re-derived from the files and the recorded scale."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...core.edit import edited_copy, space_of
from ...core.methods import Verified
from ...errors import ChainBroken, GifError, InputFileError
from ...io.artifacts import read_influence
from ...io.files import pick_file, read_json, sha256_file, sha256_tensors


def verify_influence_edit(base_loaded, edited, edit: dict, folder: Path, given: dict) -> Verified:
    """An influence edit: mask -> influence file -> edited = base - scale x delta over J, re-derived."""
    v = Verified()
    infl_path = pick_file(given.get("influence"), edit.get("influence"), folder, edit.get("influence_abs"))
    mask_path = pick_file(given.get("mask"), None if edit.get("mask_sha256") is None else _recorded_mask(infl_path))
    if infl_path is None:
        v.unchecked.append("the influence file (pass --influence)")
    else:
        if sha256_file(infl_path) != edit.get("influence_sha256"):
            raise ChainBroken(f"influence file {infl_path} is not the one the edit recorded (sha256 differs)")
        v.checked.append("influence file sha256")
    if mask_path is None:
        if edit.get("mask_sha256") is not None:
            v.unchecked.append("the mask (pass --mask)")
    else:
        if sha256_file(mask_path) != edit.get("mask_sha256"):
            raise ChainBroken(f"mask {mask_path} is not the one the edit recorded (sha256 differs)")
        doc = read_json(mask_path, "mask")
        if doc.get("index_sha256") != edit.get("index_sha256"):
            raise ChainBroken(f"mask {mask_path} selects another index set than the edit recorded")
        if doc.get("model_sha256") != edit.get("base_model_sha256"):
            raise ChainBroken(f"mask {mask_path} was made for another model than the recorded base")
        v.checked.append("mask sha256, its index set and its model")
    if base_loaded is not None and infl_path is not None:
        try:
            delta, J, imeta = read_influence(infl_path, space_of(base_loaded.model), base_loaded.sha)
        except InputFileError as exc:
            raise ChainBroken(str(exc)) from None
        if edit.get("index_sha256") is not None and imeta.get("index_sha256") != edit.get("index_sha256"):
            raise ChainBroken(f"influence file {infl_path} holds another index set than the edit recorded")
        scale = edit.get("scale")
        if not isinstance(scale, (int, float)):
            raise ChainBroken("the edit records no scale")
        derived = edited_copy(base_loaded.model, J, delta, float(scale))
        state = derived.state_dict()
        if sha256_tensors(state) != edited.sha:
            own = edited.model.state_dict()
            differ = sum(int((state[k] != own[k]).sum()) for k in own if k in state)
            raise ChainBroken(f"the edited weights are not base - {scale:g} x delta over J ({differ} values differ)")
        v.checked.append(f"edited weights = base - {scale:g} x delta over J (re-derived)")
    else:
        v.unchecked.append("re-deriving the edited weights (needs the base model and the influence file)")
    return v


def _recorded_mask(influence_path: Optional[Path]) -> Optional[str]:
    """The mask path an influence file records (the edited checkpoint records only its sha256)."""
    if influence_path is None:
        return None
    try:
        from ...io.checkpoint import INFLUENCE_FORMAT, read_safetensors

        _, meta = read_safetensors(influence_path, "influence file", INFLUENCE_FORMAT)
        return meta.get("mask")
    except GifError:
        return None
