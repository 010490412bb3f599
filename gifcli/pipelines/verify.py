"""gif verify: prove that an edited checkpoint is what its recorded edit produced.

The chain an edited checkpoint records: base weights (sha256) -> mask (file sha256, index
sha256) -> influence (file sha256, delta sha256, index sha256, model sha256) -> edited weights
(sha256) = base - scale x delta over J. ``verify`` re-derives the edited weights from the base
model, the influence file and the recorded scale, and checks every hash of the chain. Files are
taken from the options, else from the paths the checkpoint records (when they exist there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional



from ..core.methods import Verified
from ..core.steps import edited_copy, space_of
from ..errors import GifError, InputFileError
from ..io.artifacts import read_influence
from ..io.files import read_json, sha256_file, sha256_tensors
from .common import load_model


class ChainBroken(GifError):
    """A link of the recorded chain does not hold (exit code 1)."""


@dataclass
class Verification:
    edited: str
    checked: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unchecked


def _pick(given: Optional[Path], recorded: Optional[str], beside: Optional[Path] = None,
          absolute: Optional[str] = None) -> Optional[Path]:
    """The given file, else the recorded one: as recorded, absolute, or beside the edited checkpoint."""
    if given is not None:
        return given
    for candidate in (recorded, absolute, str(beside / Path(recorded).name) if (beside and recorded) else None):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def verify(edited_path: Path, base: Optional[Path] = None, mask: Optional[Path] = None,
           influence: Optional[Path] = None, strict: bool = False) -> Verification:
    """Check what can be checked of an edited checkpoint: its own weights' sha256, its base model's,
    and whatever the recorded method can re-derive (``Method.verify``)."""
    from ..core.methods import METHODS

    edited = load_model(edited_path)  # checks the edited weights against their recorded sha256
    v = Verification(str(edited_path), checked=["edited weights match their recorded sha256"])
    edit = edited.meta.get("edit")
    if not isinstance(edit, dict):
        raise ChainBroken(f"{edited_path} records no edit: it is not an edited checkpoint")
    base_path = _pick(base, edit.get("base_model"), None, edit.get("base_model_abs"))
    base_loaded = None
    if base_path is None:
        v.unchecked.append("the base model (pass --base)")
    else:
        base_loaded = load_model(base_path)
        if base_loaded.sha != edit.get("base_model_sha256"):
            raise ChainBroken(f"base model {base_path} is not the recorded one (sha256 {base_loaded.sha[:12]}... "
                              f"!= {str(edit.get('base_model_sha256'))[:12]}...)")
        v.checked.append("base model sha256")
    method = METHODS.get(str(edit.get("method", "gif")))
    own = method.verify(base_loaded, edited, edit, Path(edited_path).parent, {"mask": mask, "influence": influence})
    v.checked += own.checked
    v.unchecked += own.unchecked
    if strict and v.unchecked:
        raise ChainBroken(f"cannot prove the whole chain of {edited_path}: missing " + "; ".join(v.unchecked))
    return v


def verify_influence_edit(base_loaded, edited, edit: dict, folder: Path, given: dict) -> Verified:
    """An influence edit: mask -> influence file -> edited = base - scale x delta over J, re-derived."""
    v = Verified()
    infl_path = _pick(given.get("influence"), edit.get("influence"), folder, edit.get("influence_abs"))
    mask_path = _pick(given.get("mask"), None if edit.get("mask_sha256") is None else _recorded_mask(infl_path))
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
        from ..io.checkpoint import INFLUENCE_FORMAT, read_safetensors

        _, meta = read_safetensors(influence_path, "influence file", INFLUENCE_FORMAT)
        return meta.get("mask")
    except GifError:
        return None


