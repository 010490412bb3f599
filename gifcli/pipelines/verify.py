"""gif verify: prove that an edited checkpoint is what its recorded edit produced.

Every edited checkpoint records its base model's sha256 and its own; ``verify`` checks both and
asks the recorded method what else it can check or re-derive (``Method.verify``: gif's re-derives
the edited weights from the mask, the influence file and the recorded scale). Files are taken from
the options, else from the paths the checkpoint records (when they exist there).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..core.checkpoints import load_model
from ..core.methods import METHODS, Verified
from ..errors import ChainBroken
from ..io.files import pick_file


def verify(edited_path: Path, base: Optional[Path] = None, mask: Optional[Path] = None,
           influence: Optional[Path] = None, strict: bool = False) -> Verified:
    """Check what can be checked of an edited checkpoint: its own weights' sha256, its base model's,
    and whatever the recorded method can re-derive (``Method.verify``)."""
    edited = load_model(edited_path)  # checks the edited weights against their recorded sha256
    v = Verified(str(edited_path), checked=["edited weights match their recorded sha256"])
    edit = edited.meta.get("edit")
    if not isinstance(edit, dict):
        raise ChainBroken(f"{edited_path} records no edit: it is not an edited checkpoint")
    base_path = pick_file(base, edit.get("base_model"), None, edit.get("base_model_abs"))
    base_loaded = None
    if base_path is None:
        v.unchecked.append("the base model (pass --base)")
    else:
        base_loaded = load_model(base_path)
        if base_loaded.sha != edit.get("base_model_sha256"):
            raise ChainBroken(f"base model {base_path} is not the recorded one (sha256 {base_loaded.sha[:12]}... "
                              f"!= {str(edit.get('base_model_sha256'))[:12]}...)")
        v.checked.append("base model sha256")
    if not isinstance(edit.get("method"), str):
        raise ChainBroken(f"{edited_path} records no method: its edit cannot be re-derived")
    method = METHODS.get(edit["method"])
    own = method.verify(base_loaded, edited, edit, Path(edited_path).parent, {"mask": mask, "influence": influence})
    v.checked += own.checked
    v.unchecked += own.unchecked
    if strict and v.unchecked:
        raise ChainBroken(f"cannot prove the whole chain of {edited_path}: missing " + "; ".join(v.unchecked))
    return v


