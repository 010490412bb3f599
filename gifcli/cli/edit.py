"""gif remove-class, gif remove-samples: the unlearning core's run into a run folder."""
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..core.methods import METHODS
from .app import Bars, app, handled, out, say, warn
from .options import ALL, unlearn_args, with_options
from .shared import (BATCH, DEFAULT_MODEL, BatchSize, DataDir, DatasetOpt, Deterministic, Device, ModelOpt, Workers,
                     forget_task, load, metrics_table, rt_for)


def method_summary(result, args) -> str:
    """The method and what it chose: J's criterion when it selects one, then its own hyper-parameters."""
    parts = [args.method, *METHODS.get(args.method).report(result.outcome).describe]
    for key, value in result.outcome.hyper.items():
        if key == "search_budget":
            continue
        if isinstance(value, (list, tuple)):
            shown = "/".join(format(v, "g") if isinstance(v, (int, float)) else str(v) for v in value)
        else:
            shown = format(value, "g") if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        parts.append(f"{key.replace('_', ' ')} {shown}")
    return ", ".join(parts)


def run_to_folder(loaded, data, task, args, folder: Path, kind: str, title, device: str, batch_size: int,
                  workers: int, deterministic: bool, edited_out: Optional[Path] = None, table=None) -> None:
    """The core's run into a run folder, then (rank 0) the table of base and edited, the solver line.

    What is printed is built before any file is written, so a failure there leaves no run folder."""
    from ..pipelines.unlearn import unlearn_to_folder

    def prepare(result, report) -> list:
        said = METHODS.get(args.method).report(result.outcome)
        shown: list = [(table or metrics_table)(title(result), {"base": report["base"], "edited": report["edited"]})]
        shown += said.lines
        if said.decision:
            shown.append(f"{args.method}: {said.decision}")
        search = result.outcome.search
        if search and "scale" not in result.outcome.hyper:
            shown.append(f"{args.method}: {len(search)} settings tried on validation "
                         f"({report.get('hyper_choice', 'validation search')})")
        shown += [("warning", w) for w in report.get("warnings", [])]
        return shown

    from ..io.files import check_folder_creatable, folder_lock

    check_folder_creatable(folder)
    with folder_lock(folder), Bars() as bars:  # one run into a folder at a time: never a mix of two runs' files
        rt = rt_for(device, batch_size, workers, bars, deterministic)
        result, report, shown = unlearn_to_folder(loaded, data, task, args, rt, folder, edited_out, kind, prepare)
    if not rt.dist.is_main:
        return
    for item in shown:
        if isinstance(item, tuple):
            warn(item[1])
        else:
            out.print(item) if not isinstance(item, str) else say(item)
    names = ", ".join(Path(f["path"]).name for f in report["files"].values())
    say(f"run folder {folder}: {names}, report.json ({report['seconds']:.0f} s)")


@app.command("remove-class")
@handled
@with_options(ALL)
def remove_class_cmd(
    label: Annotated[int, typer.Option(help="The class to forget.")],
    model: ModelOpt = Path(DEFAULT_MODEL),
    out_dir: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/remove-class-LABEL).")] = None,
    dataset: DatasetOpt = None,
    device: Device = "auto",
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
    deterministic: Deterministic = False,
    uargs: Any = None,
) -> None:
    """Forget a class: select -> influence -> scale chosen on validation -> apply -> evaluate."""
    args = unlearn_args(uargs)
    loaded, data = load(model, dataset, data_dir)
    task = forget_task(data, label, None)
    run_to_folder(loaded, data, task, args, out_dir or Path(f"runs/remove-class-{label}"), "remove-class",
                  lambda r: f"remove class {label}: {method_summary(r, args)}", device, batch_size, workers,
                  deterministic)


@app.command("remove-samples")
@handled
@with_options(ALL)
def remove_samples_cmd(
    forget: Annotated[str, typer.Option(help="The training samples to forget: a forget-set file, an index list, or -.")],
    model: ModelOpt = Path(DEFAULT_MODEL),
    out_dir: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/remove-samples).")] = None,
    dataset: DatasetOpt = None,
    device: Device = "auto",
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
    deterministic: Deterministic = False,
    uargs: Any = None,
) -> None:
    """Forget a set of training samples; the scale is chosen by --scale-criterion (privacy or repair)."""
    args = unlearn_args(uargs)
    loaded, data = load(model, dataset, data_dir)
    task = forget_task(data, None, forget, criterion=args.scale_criterion)
    left = task.forget.in_validation.numel()
    if left:
        warn(f"{left} forget indices fall in gif's validation split (never trained on): left out, listed in the report")
    crit = task.criterion(args.scale_criterion)
    run_to_folder(loaded, data, task, args, out_dir or Path("runs/remove-samples"), "remove-samples",
                  lambda r: f"forget {len(task.forget.in_fit)} samples: {method_summary(r, args)} ({crit})",
                  device, batch_size, workers,
                  deterministic)
