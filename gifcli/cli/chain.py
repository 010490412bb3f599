"""gif select, gif influence, gif apply, gif verify: the influence methods' edit one step at a time
(a shell pipeline of files), and the proof that an edited checkpoint is what its files say."""
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import UsageError
from .app import Bars, app, handled, out, say, single_process, warn
from .options import SELECT_FIELDS, SOLVE_FIELDS, unlearn_args, with_options
from .shared import (BATCH, DEFAULT_MODEL, BatchSize, DataDir, DatasetOpt, Deterministic, Device, ForgetFile,
                     ForgetLabel, ModelOpt, Workers, forget_task, load, rt_for)


@app.command("select")
@handled
@with_options(SELECT_FIELDS)
def select_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the mask (JSON index file; - for stdout).")],
    forget_label: ForgetLabel = None,
    forget: ForgetFile = None,
    model: ModelOpt = Path(DEFAULT_MODEL),
    dataset: DatasetOpt = None,
    device: Device = "cpu",
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
    uargs: Any = None,
) -> None:
    """Choose the target parameters J on the forget set and write them as a JSON mask."""
    from ..io.files import STDIO
    from ..methods.influence import chain_method, hessian_data
    from ..methods.influence.files import write_mask_file
    from ..methods.influence.steps import select

    args = unlearn_args(uargs)
    if not chain_method(args.method).selects:
        raise UsageError(f"method {args.method!r} edits every parameter: it has no J to select")
    rt = rt_for(device, batch_size, workers)
    loaded, data = load(model, dataset, data_dir)
    task = forget_task(data, forget_label, forget)
    target = task.target(data)
    selection = select(loaded.model.to(rt.device), target, args, rt, len(hessian_data(task, data, args)))
    if rt.dist.is_main:
        write_mask_file(out_path, selection, args, target.describe, loaded)
    if str(out_path) == STDIO:
        out.to_stderr()
    J = selection.J
    skipped = f"; skipped {', '.join(s['module'] + ' (' + s['type'] + ')' for s in selection.skipped)}" \
        if selection.skipped else ""
    say(f"wrote {out_path}: {J.size} of {J.space.size} parameters ({100 * J.size / J.space.size:.2f}%), "
        f"criterion {args.criterion}, forget set {target.describe['count']} samples{skipped}")


@app.command("influence")
@handled
@with_options(SOLVE_FIELDS, helps={"seed": "Seed that draws the Hessian sample.",
                                  "target": "the gradient the vector is of: 'forget' (default here: the paper's "
                                            "one-step vector, for a select | influence | apply chain) or "
                                            "'remaining' (minus the retained data's gradient)"})
def influence_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the influence vector (.safetensors).")],
    forget_label: ForgetLabel = None,
    forget: ForgetFile = None,
    model: ModelOpt = Path(DEFAULT_MODEL),
    mask: Annotated[Optional[Path], typer.Option(help="Mask from 'gif select' (not needed for --method if).")] = None,
    dataset: DatasetOpt = None,
    device: Device = "auto",
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
    deterministic: Deterministic = False,
    uargs: Any = None,
) -> None:
    """Compute the influence of the forget set on J (least squares H_J delta = -g) and save it."""
    from ..methods.influence import chain_method, hessian_data, resolve_weight_decay
    from ..methods.influence.files import read_mask_for, write_influence_file
    from ..methods.influence.method import hvp_note, solver_line
    from ..methods.influence.steps import influence, stationarity_warning

    args = unlearn_args(uargs)
    method = chain_method(args.method)
    if uargs.get("target") is None:  # one vector, one scale: the paper's chain
        args = args.replace(target="forget")
    if args.target == "forget-then-remaining":
        raise UsageError("--target forget-then-remaining takes several steps: use remove-class, remove-samples "
                         "or backdoor recover (gif influence computes one vector)")
    J = None
    loaded, data = load(model, dataset, data_dir)
    if method.selects:
        if mask is None:
            raise UsageError(f"--mask is required for method {args.method!r} (it edits a selected J: pass the mask from gif select)")
        J, _ = read_mask_for(loaded, mask)
    task = forget_task(data, forget_label, forget)
    wd = resolve_weight_decay(args, loaded.trained_weight_decay)
    with Bars() as bars:
        rt = rt_for(device, batch_size, workers, bars, deterministic)
        run = influence(loaded.model, J, task.target(data), hessian_data(task, data, args), args, rt, wd,
                        task.retain(data), training=task.training(data))
    if rt.dist.is_main:
        write_influence_file(out_path, run, loaded, mask if method.selects else None)
    note = hvp_note({**(run.info.get("hessian") or {}), **run.environment})
    if note:
        say(note)
    caution = stationarity_warning(run.info.get("stationarity"))
    if caution:
        warn(caution)
    say(f"wrote {out_path}: {args.method} over {run.J.size} parameters, "
        f"{solver_line(run.stats) or 'first-order step'}, {run.seconds:.1f} s on {run.info['device']}")


@app.command("apply")
@handled
@with_options(("scales",), helps={"scale": "theta_J <- theta_J - scale * delta; scale > 0 removes the forget set "
                                           "(required: one number, e.g. the scale remove-class chose)."})
def apply_cmd(
    influence: Annotated[Path, typer.Option(help="Influence file from 'gif influence'.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the edited checkpoint.")],
    model: ModelOpt = Path(DEFAULT_MODEL),
    uargs: Any = None,
) -> None:
    """Apply a scaled influence vector to the model's parameters J and save the edited model."""
    single_process("apply")
    from ..core.checkpoints import load_model
    from ..methods.influence.files import apply_file

    scales = unlearn_args(uargs).scales
    if scales is None or len(scales) != 1:
        raise UsageError("--scale takes one number here (the scale to apply), e.g. --scale 26.9")
    scale = scales[0]
    meta = apply_file(load_model(model), influence, scale, out_path)
    say(f"wrote {out_path}: {meta['edit']['selected']} parameters moved, scale {scale:g}")




@app.command("verify")
@handled
def verify_cmd(
    edited: Annotated[Path, typer.Argument(help="Edited checkpoint (written by apply, remove-class, ...).")],
    base: Annotated[Optional[Path], typer.Option(help="Base model (default: the path the edit records, if present).")] = None,
    mask: Annotated[Optional[Path], typer.Option(help="Mask (default: the path the influence file records).")] = None,
    influence: Annotated[Optional[Path], typer.Option(help="Influence file (default: the path the edit records).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail unless every link can be checked (every file found).")] = False,
) -> None:
    """Prove an edited checkpoint is base - scale x delta: re-derive it and check every sha256 of the chain."""
    from ..pipelines.verify import verify

    v = verify(edited, base, mask, influence, strict)
    note = f"; not checked: {', '.join(v.unchecked)}" if v.unchecked else ""
    say(f"verified {edited}: {'; '.join(v.checked)}{note}")
