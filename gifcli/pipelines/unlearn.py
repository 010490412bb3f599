"""remove-class, remove-samples, backdoor recover, unlearn: the core's run, then its files.

``unlearn_to_folder`` calls :func:`gifcli.core.run` once and writes, on rank 0 only, the run
folder: ``mask.json`` (when the method selects J), ``influence.safetensors`` (when it has an
influence vector), the edited checkpoint, and ``report.json`` (the only file with timings).

Nothing is written until the result is complete: the caller's ``prepare`` (what the CLI will
print) runs before the first file, ``report.json`` is written last, and a failure while writing
removes what this run wrote, so a folder with a report in it is always a finished one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.args import Runtime, UnlearnArgs
from ..core.checkpoints import Loaded, save_edited
from ..core.methods import METHODS
from ..core.run import UnlearnResult, run
from ..core.tasks import Task
from ..data.datasets import Data
from ..io.files import make_folder, provenance, sha256_file, write_json


def unlearn_report(loaded: Loaded, data: Data, task: Task, args: UnlearnArgs, result: UnlearnResult,
                   kind: str) -> dict:
    """report.json's content, less its ``files`` (added once they are written)."""
    outcome = result.outcome
    said = METHODS.get(args.method).report(outcome)
    criterion = said.criterion or task.criterion(args.scale_criterion)
    if "scale" in outcome.hyper:
        swept = args.scales is None or len(args.scales) > 1
        choice = f"validation sweep ({criterion})" if swept else "given"
    else:
        choice = f"validation search ({criterion})" if outcome.search else "none"
    return {
        "format": f"gif-{kind}", "version": 1, "task": result.task, "model": loaded.path, "model_sha256": loaded.sha,
        "dataset": data.spec.name, "method": args.method, "args": args.as_dict(),
        "runtime": result.extras.get("runtime"), **outcome.hyper,
        "hyper": dict(outcome.hyper), "scale_choice" if "scale" in outcome.hyper else "hyper_choice": choice,
        "validation_sweep": outcome.search, "warnings": said.warnings,
        "influence": None, **said.record,
        "base": result.base, "edited": result.edited,
        "seconds": result.seconds, "method_seconds": outcome.seconds,
        "phases": dict(result.extras.get("phases", {})), "decision": said.decision,
        "provenance": provenance(kind=kind),
    }


def unlearn_to_folder(loaded: Loaded, data: Data, task: Task, args: UnlearnArgs, rt: Runtime, folder: Path,
                      edited_out: Optional[Path] = None, kind: str = "unlearn",
                      prepare: Optional[Callable[[UnlearnResult, dict], Any]] = None
                      ) -> tuple[UnlearnResult, dict, Any]:
    """Run the core on a checkpoint and write the run folder; returns the result, its report and
    what ``prepare(result, report)`` returned (computed before any file is written)."""
    result = run(task, loaded.model, data, args, rt, loaded.context())
    report = unlearn_report(loaded, data, task, args, result, kind)
    prepared = prepare(result, report) if prepare is not None else None
    report["files"] = {}
    if rt.dist.is_main:
        report["phases"]["writing"] = 0.0  # measured below: report.json records the time of every phase
        report["files"] = write_run_files(loaded, task, args, result, folder, edited_out, report)
    return result, report, prepared


def write_run_files(loaded: Loaded, task: Task, args: UnlearnArgs, result: UnlearnResult, folder: Path,
                    edited_out: Optional[Path], report: dict) -> dict:
    """The method's own files, the edited checkpoint, then report.json; on any failure, none stays."""
    start = time.perf_counter()
    outcome = result.outcome
    edited_path = Path(edited_out or folder / "edited.safetensors")
    before = set(folder.iterdir()) if folder.is_dir() else set()
    written: list[Path] = []
    try:
        make_folder(folder)
        paths, links = METHODS.get(args.method).files(outcome, folder, loaded, task, args)
        written += list(paths.values())
        save_edited(edited_path, outcome.edited, loaded, links, outcome.hyper, args.method, args.as_dict(),
                    result.extras.get("runtime"))
        written.append(edited_path)
        report["phases"]["writing"] = round(time.perf_counter() - start, 4)
        files = {**{k: str(v) for k, v in paths.items()}, "edited": str(edited_path)}
        described = {k: {"path": v, "sha256": sha256_file(v)} for k, v in files.items()}
        write_json(folder / "report.json", {**report, "files": described})
        return described
    except BaseException:
        for path in written:
            if path not in before:
                path.unlink(missing_ok=True)
        raise
