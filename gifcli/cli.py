"""The gif command line: parse -> load -> call -> save -> print. Nothing else.

Only this module imports typer and rich. Library errors (GifError) become one red line on
stderr and exit code 1 (2 for usage errors); tables go to stdout, progress bars to stderr.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import GifError

app = typer.Typer(
    name="gif",
    help="Make a trained PyTorch classifier forget data with Generalized Influence Functions (GIF).\n\n"
    "Steps chain through files: select -> influence -> apply -> evaluate; remove-class runs them all.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)

DEFAULT_MODEL = "checkpoints/mnist_cnn.safetensors"

DataDir = Annotated[Optional[str], typer.Option(
    "--data-dir", help="Dataset root in torchvision's layout; searched before $GIF_DATA_DIR, ./data, ../shared/data.")]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")]
ModelPath = Annotated[Path, typer.Option("--model", help="Model checkpoint (.safetensors written by gif).")]


def _fail(exc: GifError) -> None:
    err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def handled(fn: Callable) -> Callable:
    """Turn GifError into one line and an exit code; anything else into one line too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GifError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            err.print("[red]interrupted[/red] (no output file was left behind)")
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # an unexpected failure: still one line unless GIF_DEBUG is set
            if os.environ.get("GIF_DEBUG"):
                raise
            err.print(f"[red]error:[/red] {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                      "(set GIF_DEBUG=1 for a traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=err, transient=False, disable=not err.is_terminal and "GIF_PROGRESS" not in os.environ)


def _solver_callback(progress: Progress, description: str, max_iter: int):
    task = progress.add_task(description, total=max_iter, info="")

    def cb(iteration: int, total: int, residual: float) -> None:
        progress.update(task, completed=iteration, info=f"rel. residual {residual:.2e}")

    return cb


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _metrics_table(title: str, rows: dict[str, dict]) -> Table:
    table = Table(title=title)
    table.add_column("model")
    cols = ["forget acc", "forget loss", "test acc", "test loss", "F1"]
    for c in cols:
        table.add_column(c, justify="right")
    for name, r in rows.items():
        if "forget" in r:
            table.add_row(name, f"{100 * r['forget']['accuracy']:.2f}%", f"{r['forget']['loss']:.4f}",
                          f"{100 * r['test']['accuracy']:.2f}%", f"{r['test']['loss']:.4f}", f"{r['f1']:.4f}")
        else:
            table.add_row(name, "-", "-", f"{100 * r['test']['accuracy']:.2f}%", f"{r['test']['loss']:.4f}", "-")
    return table


# ---------------------------------------------------------------------------------------------
@app.command()
@handled
def train(
    config: Annotated[Path, typer.Option(help="YAML training config (see configs/).")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the checkpoint (.safetensors).")],
    epochs: Annotated[Optional[int], typer.Option(help="Override the config's number of epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the config's seed.")] = None,
    exclude_label: Annotated[Optional[int], typer.Option(
        help="Leave this class out of training: the 'retrained from scratch' baseline.")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Train a model from a YAML config and save a checkpoint that records how it was made."""
    from .config import load_train_config
    from .pipelines.device import resolve_device
    from .pipelines.train import run_train

    cfg = load_train_config(config).replace(epochs=epochs, seed=seed)
    dev = resolve_device(device)
    with _progress() as progress:
        task = progress.add_task("training", total=cfg.epochs, info="")

        def cb(epoch, epochs_, step, steps, loss, acc):
            progress.update(task, completed=epoch - 1 + step / steps,
                            info=f"epoch {epoch}/{epochs_} loss {loss:.4f} acc {100 * acc:.2f}%")

        report = run_train(cfg, out_path, dev, data_dir, exclude_label, cb)
    out.print(f"wrote {report.out}: test accuracy {100 * report.test_accuracy:.2f}% "
              f"({report.metadata['test_accuracy_on']}), validation {100 * report.validation_accuracy:.2f}%, "
              f"{report.seconds:.0f} s")


@app.command("select")
@handled
def select_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the mask (JSON index file).")],
    forget_label: Annotated[int, typer.Option(help="Class whose training images form the forget set.")],
    model: ModelPath = Path(DEFAULT_MODEL),
    criterion: Annotated[str, typer.Option(
        help="topk-outputs, topk-gradients, threshold, random or all (see README, 'Selection').")] = "topk-outputs",
    ratio: Annotated[float, typer.Option(help="Share of each Conv2d/Linear layer's parameters to select, in (0, 1].")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the random and threshold criteria.")] = 0,
    threshold: Annotated[Optional[float], typer.Option(
        help="threshold criterion: mean |output| a unit must exceed (default: the layer's mean).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Choose the target parameters J on the forget set and write them as a JSON mask."""
    from .pipelines.steps import check_label, load_data, load_model, select_step
    from .pipelines.unlearn import label_target

    loaded = load_model(model)
    check_label(loaded, forget_label)
    splits = load_data(loaded, data_dir)
    target = label_target(splits.train, forget_label, splits.num_classes, splits.dataset)
    J, doc = select_step(loaded, target, criterion, ratio, seed, threshold, len(splits.train), out_path)
    out.print(f"wrote {out_path}: {J.size} of {J.space.size} parameters ({100 * J.size / J.space.size:.2f}%), "
              f"criterion {criterion}, forget set {target.describe['count']} images of label {forget_label}")


@app.command("influence")
@handled
def influence_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the influence vector (.safetensors).")],
    forget_label: Annotated[int, typer.Option(help="Class whose training images are forgotten.")],
    model: ModelPath = Path(DEFAULT_MODEL),
    mask: Annotated[Optional[Path], typer.Option(help="Mask from 'gif select' (not needed for --method if).")] = None,
    method: Annotated[str, typer.Option(help="gif (eq. 9), fif (frozen), pif (projected) or if (classic, all parameters).")] = "gif",
    solver: Annotated[str, typer.Option(help="cg (CG on the normal equations), neumann (eq. 12, auto-scaled) or exact (small models).")] = "cg",
    hessian_samples: Annotated[int, typer.Option(help="Training images in the Hessian sample.")] = 1024,
    hessian_seed: Annotated[int, typer.Option(help="Seed that draws the Hessian sample.")] = 0,
    max_iter: Annotated[int, typer.Option(help="Maximum solver iterations.")] = 40,
    tol: Annotated[float, typer.Option(help="Stop at this relative residual of the normal equations.")] = 1e-2,
    damping: Annotated[float, typer.Option(help="Tikhonov damping lambda added to the system.")] = 0.0,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Compute the influence of the forget set on J (least squares H_J delta = -g) and save it."""
    from .math.influence import SolverOptions
    from .pipelines.device import resolve_device
    from .pipelines.steps import check_label, influence_step, load_data, load_model
    from .pipelines.unlearn import label_target

    loaded = load_model(model)
    check_label(loaded, forget_label)
    dev = resolve_device(device)
    splits = load_data(loaded, data_dir)
    target = label_target(splits.train, forget_label, splits.num_classes, splits.dataset)
    options = _solver_options(solver, tol, max_iter, damping)
    with _progress() as progress:
        cb = _solver_callback(progress, f"{method}/{solver}", max_iter)
        meta = influence_step(loaded, mask, target, splits, method, options, hessian_samples, hessian_seed, dev,
                              out_path, cb)
    s = meta["stats"]
    out.print(f"wrote {out_path}: {method} over {meta['selected']} parameters, {s['iterations']} iterations, "
              f"{s['hvp_products']} HVPs, rel. residual {s['final_relative_residual']:.2e}, "
              f"{'converged' if s['converged'] else 'NOT converged: ' + s['message']}, {meta['seconds']:.1f} s on {meta['device']}")


def _solver_options(solver: str, tol: float, max_iter: int, damping: float):
    from .errors import UsageError
    from .math.influence import SolverOptions
    from .math.solvers import SOLVERS

    if solver not in SOLVERS:
        raise UsageError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    if not tol > 0 or max_iter <= 0 or damping < 0:
        raise UsageError("--tol and --max-iter must be positive and --damping non-negative")
    return SolverOptions(solver=solver, tol=tol, max_iter=max_iter, damping=damping)


@app.command("apply")
@handled
def apply_cmd(
    influence: Annotated[Path, typer.Option(help="Influence file from 'gif influence'.")],
    scale: Annotated[float, typer.Option(help="theta_J <- theta_J - scale * delta; scale > 0 removes the forget set.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the edited checkpoint.")],
    model: ModelPath = Path(DEFAULT_MODEL),
) -> None:
    """Apply a scaled influence vector to the model's parameters J and save the edited model."""
    from .pipelines.steps import apply_step, load_model

    loaded = load_model(model)
    meta = apply_step(loaded, influence, scale, out_path)
    out.print(f"wrote {out_path}: {meta['edit']['selected']} parameters moved, scale {scale:g}")


@app.command("evaluate")
@handled
def evaluate_cmd(
    model: ModelPath = Path(DEFAULT_MODEL),
    forget_label: Annotated[Optional[int], typer.Option(help="Forgotten class: its test images are the forget set.")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON (see README).")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Another checkpoint (base or retrained) to show beside it.")] = None,
    min_test_acc: Annotated[Optional[float], typer.Option(help="Exit 1 if test accuracy (%) on the other classes is below this.")] = None,
    max_forget_acc: Annotated[Optional[float], typer.Option(help="Exit 1 if forget accuracy (%) is above this.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Forget/test loss and accuracy and F1 (eq. 14) on the test set; thresholds gate CI jobs."""
    from .io.files import provenance
    from .pipelines.steps import evaluate_model, load_data, load_model, write_report

    loaded = load_model(model)
    splits = load_data(loaded, data_dir)
    metrics = evaluate_model(loaded, splits, forget_label)
    rows = {str(model): metrics}
    report = {"format": "gif-report", "version": 1, "model": str(model), "model_sha256": loaded.sha,
              "dataset": loaded.meta["dataset"], "forget_label": forget_label, **metrics}
    if baseline is not None:
        base = load_model(baseline)
        if base.meta["dataset"] != loaded.meta["dataset"] or base.meta["num_classes"] != loaded.meta["num_classes"]:
            raise GifError(f"baseline {baseline} is a model of another dataset or class count")
        bm = evaluate_model(base, splits, forget_label)
        rows[str(baseline)] = bm
        report["baseline"] = {"model": str(baseline), "model_sha256": base.sha, **bm}
    violations = []
    test_acc = 100 * metrics["test"]["accuracy"]
    if min_test_acc is not None and test_acc < min_test_acc:
        violations.append(f"test accuracy {test_acc:.2f}% < {min_test_acc}%")
    if max_forget_acc is not None:
        if "forget" not in metrics:
            raise GifError("--max-forget-acc needs --forget-label")
        fa = 100 * metrics["forget"]["accuracy"]
        if fa > max_forget_acc:
            violations.append(f"forget accuracy {fa:.2f}% > {max_forget_acc}%")
    report["thresholds"] = {"min_test_acc": min_test_acc, "max_forget_acc": max_forget_acc}
    report["violations"] = violations
    report["passed"] = not violations
    report["provenance"] = provenance(kind="evaluate")
    out.print(_metrics_table(f"evaluation on {loaded.meta['dataset']} test set"
                             + (f", forget label {forget_label}" if forget_label is not None else ""), rows))
    if json_path:
        write_report(json_path, report)
    for v in violations:
        err.print(f"[red]threshold violated:[/red] {v}")
    if violations:
        raise typer.Exit(1)


@app.command("remove-class")
@handled
def remove_class_cmd(
    label: Annotated[int, typer.Option(help="The class to forget.")],
    model: ModelPath = Path(DEFAULT_MODEL),
    criterion: Annotated[str, typer.Option(help="Selection criterion (see 'gif select --help').")] = "topk-outputs",
    ratio: Annotated[float, typer.Option(help="Share of each layer's parameters to modify, in (0, 1].")] = 0.1,
    method: Annotated[str, typer.Option(help="gif, fif, pif or if.")] = "gif",
    solver: Annotated[str, typer.Option(help="cg, neumann or exact.")] = "cg",
    scale: Annotated[str, typer.Option(help="'auto' (best F1 on the validation split) or a number.")] = "auto",
    hessian_samples: Annotated[int, typer.Option(help="Training images in the Hessian sample.")] = 1024,
    max_iter: Annotated[int, typer.Option(help="Maximum solver iterations.")] = 40,
    tol: Annotated[float, typer.Option(help="Relative residual to stop at.")] = 1e-2,
    seed: Annotated[int, typer.Option(help="Seed of selection and Hessian sample.")] = 0,
    out_dir: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/remove-class-<label>).")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """select -> influence -> apply -> evaluate in one go; every intermediate file stays in the run folder."""
    from .pipelines.device import resolve_device
    from .pipelines.remove_class import remove_class

    dev = resolve_device(device)
    options = _solver_options(solver, tol, max_iter, 0.0)
    folder = out_dir or Path(f"runs/remove-class-{label}")
    with _progress() as progress:
        cb = _solver_callback(progress, f"{method}/{solver}", max_iter)
        sweep_task = progress.add_task("scale sweep", total=None, info="")

        def sweep_cb(i, n):
            progress.update(sweep_task, completed=i, total=n)

        result = remove_class(model, label, criterion, ratio, method, options, scale, hessian_samples, seed,
                              folder, dev, data_dir, cb, sweep_cb)
    out.print(_metrics_table(f"remove class {label}: {method}, {criterion} {100 * ratio:g}%, scale {result['scale']:g}",
                             {"base": result["base"], "edited": result["edited"]}))
    out.print(f"run folder {folder}: mask.json, influence.safetensors, edited.safetensors, report.json "
              f"({result['seconds']:.0f} s)")


def main() -> None:
    app()
