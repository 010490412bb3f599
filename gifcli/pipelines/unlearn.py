"""remove-class, remove-samples, backdoor recover, unlearn: the core's run, then its files.

``unlearn_to_folder`` calls :func:`gifcli.core.run` once and writes, on rank 0 only, the run
folder: ``mask.json`` (when the method selects J), ``influence.safetensors`` (when it has an
influence vector), the edited checkpoint, and ``report.json`` (the only file with timings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..core.args import Runtime, UnlearnArgs
from ..core.run import UnlearnResult, run
from ..core.tasks import Task
from ..data.datasets import Data
from ..io.files import make_folder, provenance, sha256_file, write_json
from .common import Loaded, save_edited, write_influence_file, write_mask_file


def unlearn_to_folder(loaded: Loaded, data: Data, task: Task, args: UnlearnArgs, rt: Runtime, folder: Path,
                      edited_out: Optional[Path] = None, kind: str = "unlearn") -> tuple[UnlearnResult, dict]:
    """Run the core on a checkpoint and write the run folder; returns the result and its report."""
    result = run(task, loaded.model, data, args, rt, loaded.context())
    outcome = result.outcome
    edited_path = edited_out or folder / "edited.safetensors"
    files: dict[str, Optional[str]] = {}
    report: dict = {}
    if rt.dist.is_main:
        make_folder(folder)
        mask_path = infl_path = None
        imeta: dict = {}
        if outcome.selection is not None:
            mask_path = folder / "mask.json"
            write_mask_file(mask_path, outcome.selection, args, task.describe(), loaded)
            files["mask"] = str(mask_path)
        if outcome.influence is not None:
            infl_path = folder / "influence.safetensors"
            imeta = write_influence_file(infl_path, outcome.influence, loaded, mask_path)
            files["influence"] = str(infl_path)
        J = outcome.influence.J if outcome.influence is not None else None
        save_edited(edited_path, outcome.edited, loaded, infl_path, imeta, J, outcome.hyper, args.method)
        files["edited"] = str(edited_path)
    criterion = task.criterion(args.scale_criterion)
    swept = args.scales is None or len(args.scales) > 1
    influence = None
    if outcome.influence is not None:
        info = outcome.influence.info
        influence = {"stats": outcome.influence.stats, "hessian": info.get("hessian"), "device": info.get("device"),
                     "seconds": outcome.influence.seconds}
    report = {
        "format": f"gif-{kind}", "version": 1, "task": result.task, "model": loaded.path, "model_sha256": loaded.sha,
        "dataset": data.spec.name, "method": args.method, "args": args.as_dict(), **outcome.hyper,
        "scale_choice": f"validation sweep ({criterion})" if swept else "given",
        "validation_sweep": outcome.search, "influence": influence,
        "base": result.base, "edited": result.edited,
        "files": {k: {"path": v, "sha256": sha256_file(v)} for k, v in files.items() if v},
        "seconds": result.seconds, "method_seconds": outcome.seconds,
        "provenance": provenance(kind=kind),
    }
    if rt.dist.is_main:
        write_json(folder / "report.json", report)
    return result, report
