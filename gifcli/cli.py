"""The gif command line: parse -> load -> call -> save -> print. Nothing else.

Only this module imports typer and rich. Library errors (GifError) become one red line on
stderr and exit code 1 (2 for usage errors); tables go to stdout, progress bars to stderr.
"""
from __future__ import annotations

import functools
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
# piped output (CI logs, files) gets a wide table instead of rich's 80-column default
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

DEFAULT_MODEL = "checkpoints/mnist_cnn.safetensors"

DataDir = Annotated[Optional[str], typer.Option(
    "--data-dir", help="Dataset root in torchvision's layout; searched before $GIF_DATA_DIR, ./data, ../shared/data.")]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")]
ModelPath = Annotated[Path, typer.Option("--model", help="Model checkpoint (.safetensors written by gif).")]
CriterionOpt = Annotated[str, typer.Option(
    help="topk-outputs, topk-gradients, threshold, random or all (see README, 'Selection').")]
RatioOpt = Annotated[float, typer.Option(help="Share of each Conv2d/Linear layer's parameters to modify, in (0, 1].")]
MethodOpt = Annotated[str, typer.Option(help="gif (eq. 9), fif (frozen), pif (projected) or if (classic, all parameters).")]
SolverOpt = Annotated[str, typer.Option(help="cg (CG on the normal equations), neumann (eq. 12, auto-scaled) or exact (small models).")]
HessianSamplesOpt = Annotated[int, typer.Option(help="Training images in the Hessian sample.")]
MaxIterOpt = Annotated[int, typer.Option(help="Maximum solver iterations.")]
TolOpt = Annotated[float, typer.Option(help="Stop at this relative residual of the normal equations.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of selection and Hessian sample.")]


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


def _solve_and_sweep_callbacks(progress: Progress, method: str, solver: str, max_iter: int):
    """Progress of the solver iterations, then of the scale sweep."""
    solve = _solver_callback(progress, f"{method}/{solver}", max_iter)
    sweep_task = progress.add_task("scale sweep", total=None, info="")
    return solve, lambda i, n: progress.update(sweep_task, completed=i, total=n)


def _solver_line(s: dict) -> str:
    return (f"{s['solver']}: {s['iterations']} iterations, {s['hvp_products']} HVPs, "
            f"rel. residual {s['final_relative_residual']:.2e}, "
            + ("converged" if s["converged"] else f"NOT converged ({s['message']})"))


def _train_callback(progress: Progress, epochs: int):
    task = progress.add_task("training", total=epochs, info="")

    def cb(epoch, epochs_, step, steps, loss, acc):
        progress.update(task, completed=epoch - 1 + step / steps,
                        info=f"epoch {epoch}/{epochs_} loss {loss:.4f} acc {100 * acc:.2f}%")

    return cb


def _metrics_table(title: str, rows: dict[str, dict]) -> Table:
    def mia(r: dict):
        return r.get("mia_forget_member_share", r.get("baseline_mia_forget_member_share"))

    show_mia = any(mia(r) is not None for r in rows.values())
    table = Table(title=title)
    table.add_column("model", overflow="fold")
    for c in ["forget acc", "forget loss", "test acc", "test loss", "F1"] + (["MIA share"] if show_mia else []):
        table.add_column(c, justify="right")
    for name, r in rows.items():
        extra = [("-" if mia(r) is None else f"{100 * mia(r):.1f}%")] if show_mia else []
        if "forget" in r:
            table.add_row(name, f"{100 * r['forget']['accuracy']:.2f}%", f"{r['forget']['loss']:.4f}",
                          f"{100 * r['test']['accuracy']:.2f}%", f"{r['test']['loss']:.4f}", f"{r['f1']:.4f}", *extra)
        else:
            table.add_row(name, "-", "-", f"{100 * r['test']['accuracy']:.2f}%", f"{r['test']['loss']:.4f}", "-", *extra)
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
        report = run_train(cfg, out_path, dev, data_dir, exclude_label, _train_callback(progress, cfg.epochs))
    out.print(f"wrote {report.out}: test accuracy {100 * report.test_accuracy:.2f}% "
              f"({report.metadata['test_accuracy_on']}), validation {100 * report.validation_accuracy:.2f}%, "
              f"{report.seconds:.0f} s")


@app.command("select")
@handled
def select_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the mask (JSON index file).")],
    forget_label: Annotated[int, typer.Option(help="Class whose training images form the forget set.")],
    model: ModelPath = Path(DEFAULT_MODEL),
    criterion: CriterionOpt = "topk-outputs",
    ratio: RatioOpt = 0.1,
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
    method: MethodOpt = "gif",
    solver: SolverOpt = "cg",
    hessian_samples: HessianSamplesOpt = 1024,
    hessian_seed: Annotated[int, typer.Option(help="Seed that draws the Hessian sample.")] = 0,
    max_iter: MaxIterOpt = 40,
    tol: TolOpt = 1e-2,
    damping: Annotated[float, typer.Option(help="Tikhonov damping lambda added to the system.")] = 0.0,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Compute the influence of the forget set on J (least squares H_J delta = -g) and save it."""
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
        meta = influence_step(loaded, mask, target, splits.train, method, options, hessian_samples, hessian_seed, dev,
                              out_path, cb)
    out.print(f"wrote {out_path}: {method} over {meta['selected']} parameters, {_solver_line(meta['stats'])}, "
              f"{meta['seconds']:.1f} s on {meta['device']}")


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
    from .pipelines.audit import against_baseline, mia_share
    from .pipelines.steps import evaluate_model, load_data, load_model, write_report

    loaded = load_model(model)
    splits = load_data(loaded, data_dir)
    metrics = evaluate_model(loaded, splits, forget_label)
    if forget_label is not None:
        metrics["mia_forget_member_share"] = mia_share(loaded.model, splits, forget_label)
    rows = {str(model): metrics}
    report = {"format": "gif-report", "version": 1, "model": str(model), "model_sha256": loaded.sha,
              "dataset": loaded.meta["dataset"], "forget_label": forget_label, **metrics}
    if baseline is not None:
        base = load_model(baseline)
        if base.meta["dataset"] != loaded.meta["dataset"] or base.meta["num_classes"] != loaded.meta["num_classes"]:
            raise GifError(f"baseline {baseline} is a model of another dataset or class count")
        bm = evaluate_model(base, splits, forget_label)
        rows[str(baseline)] = bm
        report["baseline"] = {"model": str(baseline), "model_sha256": base.sha, **bm,
                              **against_baseline(loaded.model, loaded.meta, base.model, base.meta, splits, forget_label)}
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
    criterion: CriterionOpt = "topk-outputs",
    ratio: RatioOpt = 0.1,
    method: MethodOpt = "gif",
    solver: SolverOpt = "cg",
    scale: Annotated[str, typer.Option(help="'auto' (best F1 on the validation split) or a number.")] = "auto",
    hessian_samples: HessianSamplesOpt = 1024,
    max_iter: MaxIterOpt = 40,
    tol: TolOpt = 1e-2,
    seed: SeedOpt = 0,
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
        result = remove_class(model, label, criterion, ratio, method, options, scale, hessian_samples, seed,
                              folder, dev, data_dir, *_solve_and_sweep_callbacks(progress, method, solver, max_iter))
    out.print(_metrics_table(f"remove class {label}: {method}, {criterion} {100 * ratio:g}%, scale {result['scale']:g}",
                             {"base": result["base"], "edited": result["edited"]}))
    out.print(_solver_line(result["influence"]["stats"]))
    out.print(f"run folder {folder}: mask.json, influence.safetensors, edited.safetensors, report.json "
              f"({result['seconds']:.0f} s)")


backdoor_app = typer.Typer(help="Implant a trigger, train the backdoored model, recover it with GIF (section 5.3).",
                           no_args_is_help=True)
app.add_typer(backdoor_app, name="backdoor")


@backdoor_app.command("poison")
@handled
def backdoor_poison(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the poison index file (JSON).")],
    fraction: Annotated[float, typer.Option(help="Share of training images to poison, in (0, 1).")] = 0.3,
    target_label: Annotated[int, typer.Option(help="Label the triggered images are given.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of numpy's choice of the poisoned images (appendix C: 1).")] = 1,
    dataset: Annotated[str, typer.Option(help="mnist or cifar10.")] = "mnist",
    data_dir: DataDir = None,
) -> None:
    """Choose the poisoned training images and record them, the trigger and the target label."""
    from .io.files import write_json
    from .pipelines.backdoor import make_poison_doc

    doc = make_poison_doc(dataset, fraction, target_label, seed, data_dir)
    write_json(out_path, doc)
    out.print(f"wrote {out_path}: {doc['count']} of {doc['train_size']} {dataset} training images poisoned, "
              f"target label {target_label}, seed {seed}")


@backdoor_app.command("train")
@handled
def backdoor_train(
    poison: Annotated[Path, typer.Option(help="Poison file from 'gif backdoor poison'.")],
    config: Annotated[Path, typer.Option(help="YAML training config (configs/mnist_cnn_backdoor.yaml).")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the checkpoint.")],
    true_labels: Annotated[bool, typer.Option("--true-labels", help="Train on the triggered images with their true labels: the retraining baseline.")] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Override the config's number of epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the config's seed.")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Train on the poisoned training set (backdoored model) or on its true labels (--true-labels)."""
    from .config import load_train_config
    from .pipelines.backdoor import train_backdoor
    from .pipelines.device import resolve_device

    cfg = load_train_config(config).replace(epochs=epochs, seed=seed)
    dev = resolve_device(device)
    with _progress() as progress:
        report = train_backdoor(cfg, poison, out_path, dev, data_dir, true_labels, _train_callback(progress, cfg.epochs))
    out.print(f"wrote {report.out}: clean test accuracy {100 * report.test_accuracy:.2f}%, {report.seconds:.0f} s")


def _backdoor_table(title: str, rows: dict[str, dict]) -> Table:
    table = Table(title=title)
    for c in ("model", "BD data w/ BD label", "BD data w/ true label", "clean test", "attack success"):
        if c == "model":
            table.add_column(c, overflow="fold")
        else:
            table.add_column(c, justify="right")
    for name, r in rows.items():
        table.add_row(name, f"{100 * r['bd_data_backdoor_label_accuracy']:.2f}%",
                      f"{100 * r['bd_data_true_label_accuracy']:.2f}%", f"{100 * r['test_accuracy']:.2f}%",
                      f"{100 * r['attack_success_rate']:.2f}%")
    return table


@backdoor_app.command("recover")
@handled
def backdoor_recover(
    poison: Annotated[Path, typer.Option(help="Poison file the model was trained with.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the recovered checkpoint.")],
    model: ModelPath = Path("checkpoints/mnist_cnn_backdoor.safetensors"),
    criterion: CriterionOpt = "topk-outputs",
    ratio: RatioOpt = 0.1,
    method: MethodOpt = "gif",
    solver: SolverOpt = "cg",
    scale: Annotated[str, typer.Option(help="'auto' (best on a validation slice of training images) or a number.")] = "auto",
    hessian_samples: Annotated[int, typer.Option(help="Clean training images in the Hessian sample.")] = 1024,
    max_iter: MaxIterOpt = 40,
    tol: TolOpt = 1e-2,
    seed: SeedOpt = 0,
    run_dir: Annotated[Optional[Path], typer.Option(help="Folder for mask, influence and report (default runs/backdoor-recover).")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Undo the backdoor: relabel GIF on the poisoned images, scale chosen on training-set validation."""
    from .pipelines.backdoor import recover
    from .pipelines.device import resolve_device

    dev = resolve_device(device)
    options = _solver_options(solver, tol, max_iter, 0.0)
    folder = run_dir or Path("runs/backdoor-recover")
    with _progress() as progress:
        result = recover(model, poison, criterion, ratio, method, options, scale, hessian_samples, seed, out_path,
                         folder, dev, data_dir, *_solve_and_sweep_callbacks(progress, method, solver, max_iter))
    out.print(_backdoor_table(f"backdoor recovery: {method}, {criterion} {100 * ratio:g}%, scale {result['scale']:g}",
                              {"backdoored": result["base"], "recovered": result["recovered"]}))
    out.print(_solver_line(result["influence"]["stats"]))
    out.print(f"wrote {out_path}; mask, influence and report.json in {folder} ({result['recover_seconds']:.0f} s)")


@backdoor_app.command("evaluate")
@handled
def backdoor_evaluate(
    poison: Annotated[Path, typer.Option(help="Poison file that defines the BD data and the trigger.")],
    model: ModelPath = Path("checkpoints/mnist_cnn_backdoor.safetensors"),
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics as JSON.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Table 3's columns (BD data w/ BD label, w/ true label, clean test) and the attack success rate."""
    from .io.files import write_json
    from .pipelines.backdoor import evaluate_backdoor

    report = evaluate_backdoor(model, poison, data_dir)
    out.print(_backdoor_table("backdoor evaluation", {str(model): report}))
    if json_path:
        write_json(json_path, report)


def _csv(text: Optional[str], cast, name: str) -> Optional[list]:
    from .errors import UsageError

    if text is None:
        return None
    try:
        vals = [cast(t.strip()) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be a comma-separated list, got {text!r}") from None
    if not vals:
        raise UsageError(f"--{name} is empty")
    return vals


@app.command("compare")
@handled
def compare_cmd(
    out_dir: Annotated[Path, typer.Option(help="Folder for results.json, results.md, results.png and every file made.")],
    config: Annotated[Optional[Path], typer.Option(help="YAML with any of the options below (configs/paper/); options given here win.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help=f"Model checkpoint (default {DEFAULT_MODEL}).")] = None,
    forget_label: Annotated[Optional[int], typer.Option(help="The class to forget.")] = None,
    retrained: Annotated[Optional[Path], typer.Option(help="A model trained without the class (gif train --exclude-label K).")] = None,
    methods: Annotated[Optional[str], typer.Option(help="Comma-separated: gif, fif, pif, if, grad (default gif,fif,pif,grad).")] = None,
    criteria: Annotated[Optional[str], typer.Option(help="Comma-separated criteria (default topk-outputs).")] = None,
    ratios: Annotated[Optional[str], typer.Option(help="Comma-separated modification ratios (default 0.05,0.1,0.3,0.5).")] = None,
    scales: Annotated[Optional[str], typer.Option(help="'auto' (validation sweep) or a comma-separated list to sweep.")] = None,
    solver: Annotated[Optional[str], typer.Option(help="cg, neumann or exact (default cg).")] = None,
    hessian_samples: Annotated[Optional[int], typer.Option(help="Training images in the Hessian sample (default 1024).")] = None,
    max_iter: Annotated[Optional[int], typer.Option(help="Maximum solver iterations (default 40).")] = None,
    tol: Annotated[Optional[float], typer.Option(help="Relative residual to stop at (default 1e-2).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of selection and Hessian sample (default 0).")] = None,
    plot: Annotated[bool, typer.Option(help="Write results.png (needs the 'plot' extra: matplotlib).")] = True,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Methods x criteria x ratios side by side, each scaled on validation, against retraining."""
    import yaml

    from .errors import InputFileError, UsageError
    from .pipelines.compare import compare, plot as plot_results
    from .pipelines.device import resolve_device

    cfg: dict = {}
    if config is not None:
        try:
            cfg = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputFileError(f"cannot read config {config}: {str(exc).splitlines()[0]}") from None
        if not isinstance(cfg, dict):
            raise InputFileError(f"config {config} is not a YAML mapping")
        known = {"model", "forget_label", "retrained", "methods", "criteria", "ratios", "scales", "solver",
                 "hessian_samples", "max_iter", "tol", "seed", "data_dir", "paper"}
        unknown = set(cfg) - known
        if unknown:
            raise InputFileError(f"config {config}: unknown keys {', '.join(sorted(unknown))}")

    def pick(value, key, default):
        if value is not None:
            return value
        v = cfg.get(key, default)
        return ",".join(str(x) for x in v) if isinstance(v, list) else v

    label = pick(forget_label, "forget_label", None)
    if label is None:
        raise UsageError("--forget-label is required (on the command line or in --config)")
    method_list = _csv(pick(methods, "methods", "gif,fif,pif,grad"), str, "methods")
    ratio_list = _csv(pick(ratios, "ratios", "0.05,0.1,0.3,0.5"), float, "ratios")
    criteria_list = _csv(pick(criteria, "criteria", "topk-outputs"), str, "criteria")
    options = _solver_options(pick(solver, "solver", "cg"), float(pick(tol, "tol", 1e-2)), int(pick(max_iter, "max_iter", 40)), 0.0)
    dev = resolve_device(device)
    retrained_path = pick(retrained, "retrained", None)
    with _progress() as progress:
        task = progress.add_task("compare", total=None, info="")
        result = compare(pick(model, "model", DEFAULT_MODEL), int(label), retrained_path, method_list, criteria_list,
                         ratio_list, str(pick(scales, "scales", "auto")), options,
                         int(pick(hessian_samples, "hessian_samples", 1024)), int(pick(seed, "seed", 0)), out_dir,
                         dev, pick(data_dir, "data_dir", None),
                         lambda i, n, what: progress.update(task, completed=i, total=n, info=what))
    png = plot_results(result, out_dir / "results.png") if plot else None
    out.print((out_dir / "results.md").read_text())
    out.print(f"wrote {out_dir}/results.json, results.md" + (", results.png" if png else
              (" (no plot: install the 'plot' extra)" if plot else "")))


@app.command("spectrum")
@handled
def spectrum_cmd(
    model: ModelPath = Path(DEFAULT_MODEL),
    samples: Annotated[int, typer.Option(help="Training images in the Hessian sample.")] = 1024,
    top: Annotated[int, typer.Option(help="How many eigenvalues of largest magnitude to report.")] = 500,
    steps: Annotated[Optional[int], typer.Option(help="Lanczos steps (default 2 x --top).")] = None,
    l2: Annotated[str, typer.Option(help="Comma-separated L2 weights lambda: eigenvalues of H + lambda I.")] = "0",
    seed: Annotated[int, typer.Option(help="Seed of the Hessian sample and the start vector.")] = 0,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the eigenvalues as JSON.")] = None,
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG (needs matplotlib).")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Top Hessian eigenvalues by Lanczos (same HVPs) and the share of negative ones per L2 weight (Figure 3)."""
    from .io.files import write_json
    from .pipelines.device import resolve_device
    from .pipelines.spectrum import plot_spectrum, spectrum

    lams = _csv(l2, float, "l2")
    dev = resolve_device(device)
    with _progress() as progress:
        task = progress.add_task("lanczos", total=None, info="")
        result = spectrum(model, samples, top, steps, lams, seed, dev, data_dir,
                          lambda i, n: progress.update(task, completed=i, total=n))
    table = Table(title=f"Hessian spectrum: top {top} by magnitude, {result['lanczos_steps']} Lanczos steps, "
                        f"{result['seconds']:.0f} s")
    for c in ("L2 weight", "largest", "smallest", "negative share"):
        table.add_column(c, justify="right")
    for p in result["per_l2"]:
        table.add_row(f"{p['l2']:g}", f"{max(p['top_eigenvalues']):.4g}", f"{min(p['top_eigenvalues']):.4g}",
                      f"{100 * p['negative_share']:.1f}%")
    out.print(table)
    if json_path:
        write_json(json_path, result)
    if plot_path and plot_spectrum(result, plot_path) is None:
        err.print("no plot: matplotlib is not installed (pip install -e '.[plot]')")


def main() -> None:
    """The ``gif`` entry point: Typer's own usage errors (unknown option, bad value) become one line too."""
    try:
        code = app(standalone_mode=False)
    except Exception as exc:  # click's usage errors, duck-typed (Typer vendors its own click)
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            if type(exc).__name__ == "Abort":
                err.print("[red]aborted[/red]")
                sys.exit(1)
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `gif` alone: the help was printed
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        err.print(f"[red]error:[/red] {where}{exc.format_message()} (see --help)", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
