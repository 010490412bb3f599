"""gif train, import, forget-set, select, influence, apply, evaluate, remove-class, remove-samples."""

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..errors import UsageError
from .app import ALL, SELECT_FIELDS, SOLVE_FIELDS, Bars, app, handled, out, say, single_process, unlearn_args, \
    warn, with_options

DEFAULT_MODEL = "checkpoints/mnist_cnn.safetensors"

ModelOpt = Annotated[Path, typer.Option("--model", help="Model checkpoint (.safetensors written by gif train or "
                                                         "import); one whose architecture is user code runs it.")]
DatasetOpt = Annotated[Optional[str], typer.Option(
    "--dataset", help="Dataset spec (mnist, cifar10, imagefolder:DIR, tensors:FILE); default: the model's own. "
                      "Must be the data the model records (a moved folder or file is fine).")]
DataDir = Annotated[Optional[str], typer.Option(
    "--data-dir", help="Root of the built-in datasets (torchvision layout); searched before $GIF_DATA_DIR "
                       "and ./data.")]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Samples per batch in every walk over data.")]
Workers = Annotated[int, typer.Option("--workers", help="DataLoader worker processes that decode data (0: none).")]
ForgetLabel = Annotated[Optional[int], typer.Option("--forget-label", help="Forget this class's training samples.")]
ForgetFile = Annotated[Optional[str], typer.Option(
    "--forget", help="Forget these training samples: a gif forget-set file, a text file of one index per line, "
                     "or - for standard input.")]
Channels = Annotated[Optional[int], typer.Option("--channels", help="Input channels, 1 or 3 (a grey image is "
                                                                   "repeated into 3 for a 3-channel stem).")]
ImageSize = Annotated[Optional[int], typer.Option("--image-size", help="imagefolder: resize images to this size.")]
MeanOpt = Annotated[Optional[str], typer.Option("--mean", help="Per-channel mean, comma-separated (default: "
                                                               "computed from the training images).")]
StdOpt = Annotated[Optional[str], typer.Option("--std", help="Per-channel std, comma-separated (default: computed "
                                                             "from the training images).")]
Deterministic = Annotated[bool, typer.Option(
    "--deterministic", help="torch.use_deterministic_algorithms: CUDA runs repeat bit for bit (slower); recorded.")]
ArchKwargs = Annotated[Optional[str], typer.Option("--arch-kwargs", help="JSON object of keyword arguments for "
                                                                         "the architecture.")]


def floats(text: Optional[str], name: str) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be comma-separated numbers, got {text!r}") from None


def rt_for(device: str, batch_size: int, workers: int, bars=None, deterministic: bool = False):
    from ..pipelines.common import runtime

    return runtime(device, batch_size, workers, bars, deterministic)


def load(model: Path, dataset: Optional[str], data_dir: Optional[str]):
    from ..pipelines.common import load_data_for, load_model

    loaded = load_model(model)
    return loaded, load_data_for(loaded, dataset, data_dir)


def forget_task(data, forget_label: Optional[int], forget: Optional[str], required: bool = True,
                criterion: Optional[str] = None):
    """The Task of --forget-label K or --forget FILE (exactly one of them)."""
    from ..core.tasks import ClassRemoval, SampleRemoval
    from ..data.forget import read_forget, resolve
    from ..pipelines.common import check_label

    if forget_label is not None and forget is not None:
        raise UsageError("give --forget-label or --forget, not both")
    if forget_label is not None:
        check_label(data, forget_label)
        return ClassRemoval(forget_label)
    if forget is not None:
        return SampleRemoval(resolve(read_forget(forget), data), criterion or "privacy")
    if required:
        raise UsageError("name what to forget: --forget-label K or --forget FILE")
    return None


def pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def num(v: Optional[float], fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def metrics_table(title: str, rows: dict[str, dict]) -> Table:
    """forget/test (and retain, F1, MIA) of each model, whichever the reports hold."""
    table = Table(title=Text(title))
    table.add_column("model", overflow="fold")
    any_row = next(iter(rows.values()))
    cols = []
    if "forget" in any_row:
        cols += [("forget acc", lambda r: pct(r["forget"]["accuracy"])), ("forget loss", lambda r: num(r["forget"]["loss"]))]
    if "forget_test" in any_row:
        cols += [("class test acc", lambda r: pct(r["forget_test"]["accuracy"]))]
    if "retain" in any_row:
        cols += [("retain acc", lambda r: pct(r["retain"]["accuracy"]))]
    cols += [("test acc", lambda r: pct(r["test"]["accuracy"])), ("test loss", lambda r: num(r["test"]["loss"]))]
    if "f1" in any_row:
        cols += [("F1", lambda r: num(r.get("f1")))]
    if any("mia" in r for r in rows.values()):
        cols += [("MIA forget", lambda r: pct((r.get("mia") or {}).get("entropy")))]
        if any("held_out" in (r.get("mia") or {}) for r in rows.values()):
            cols += [("MIA held-out", lambda r: pct((r.get("mia") or {}).get("held_out")))]
    for name, _ in cols:
        table.add_column(name, justify="right")
    for name, r in rows.items():
        table.add_row(Text(name), *[fn(r) for _, fn in cols])
    return table


def solver_line(stats: Optional[dict]) -> Optional[str]:
    if not stats or stats.get("solver") in (None, "none"):
        return None
    s = stats
    extra = f", cond. est. {s['cond_estimate']:.2e}" if s.get("cond_estimate") else ""
    line = (f"{s['solver']}: {s['iterations']} iterations, {s['hvp_products']} HVPs, "
            f"rel. residual {s['final_relative_residual']:.2e}{extra}, "
            + ("converged" if s["converged"] else f"NOT converged ({s['message']})"))
    for w in s.get("warnings") or []:
        line += f"; {w}"
    return line


def hvp_note(hessian: Optional[dict]) -> Optional[str]:
    if hessian and hessian.get("hvp_mode_requested") == "auto":
        need, budget = hessian["graph_bytes_estimate"], hessian["graph_budget_bytes"]
        verdict = "keeping them (retain)" if hessian["hvp_mode"] == "retain" else "recomputing them (recompute)"
        return f"hvp-mode auto: first-order graphs need ~{need / 2**20:.0f} MiB, budget {budget / 2**20:.0f} MiB: {verdict}"
    return None


# ---------------------------------------------------------------------------------------------
@app.command()
@handled
def train(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the checkpoint (.safetensors).")],
    config: Annotated[Optional[Path], typer.Option(help="YAML training config (see configs/); options given "
                                                        "here override it.")] = None,
    arch: Annotated[Optional[str], typer.Option(help="Architecture: a built-in name, torchvision:NAME, "
                                                     "package.module:callable or file.py:callable (imported and run).")] = None,
    arch_kwargs: ArchKwargs = None,
    dataset: DatasetOpt = None,
    channels: Channels = None,
    image_size: ImageSize = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override the config's number of epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the config's seed.")] = None,
    exclude_label: Annotated[Optional[int], typer.Option(
        help="Leave this class out of training: the 'retrained without the class' reference.")] = None,
    exclude: Annotated[Optional[str], typer.Option(
        help="Leave these training samples out (a forget-set file, an index list, or -): the retrained reference.")] = None,
    device: Device = "auto",
    workers: Workers = 0,
    data_dir: DataDir = None,
) -> None:
    """Train a model from a YAML config and save a checkpoint that records how it was made."""
    single_process("train")
    from ..config import TrainConfig, load_train_config
    from ..data.forget import read_forget
    from ..models.specs import parse_kwargs
    from ..pipelines.train import run_train

    cfg = load_train_config(config) if config is not None else TrainConfig()
    changes: dict[str, Any] = {"epochs": epochs, "seed": seed, "model": arch, "dataset": dataset,
                               "channels": channels, "image_size": image_size, "mean": floats(mean, "mean"),
                               "std": floats(std, "std")}
    if arch_kwargs is not None:
        changes["arch_kwargs"] = parse_kwargs(arch_kwargs)
    cfg = cfg.replace(**changes)
    excluded = read_forget(exclude) if exclude is not None else None
    with Bars() as bars:
        rt = rt_for(device, 512, workers)
        report = run_train(cfg, out_path, rt, data_dir, exclude_label, excluded, bars.train(cfg.epochs))
    say(f"wrote {report.out}: test accuracy {pct(report.test_accuracy)} ({report.metadata['test_accuracy_on']}), "
        f"validation {pct(report.validation_accuracy)}, {report.seconds:.0f} s")


@app.command("import")
@handled
def import_cmd(
    arch: Annotated[str, typer.Option(help="Architecture: a built-in name, torchvision:NAME, package.module:callable, "
                                           "file.py:callable (your code: imported and run) or export:FILE.pt2.")],
    dataset: Annotated[str, typer.Option(help="Dataset spec: mnist, cifar10, imagefolder:DIR or tensors:FILE.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the gif checkpoint (.safetensors).")],
    weights: Annotated[Optional[Path], typer.Option(help="State dict: safetensors, or torch.save (loaded with "
                                                         "weights_only=True; never unpickles code).")] = None,
    arch_kwargs: ArchKwargs = None,
    channels: Channels = None,
    image_size: ImageSize = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    device: Device = "auto",
    batch_size: BatchSize = 512,
    workers: Workers = 0,
    data_dir: DataDir = None,
) -> None:
    """Turn weights you already have into a gif checkpoint, measuring its test accuracy."""
    single_process("import")
    from ..data.datasets import DatasetSpec
    from ..models.specs import parse_kwargs
    from ..pipelines.train import import_weights

    spec = DatasetSpec.parse(dataset, channels, image_size, floats(mean, "mean"), floats(std, "std"))
    rt = rt_for(device, batch_size, workers)
    report = import_weights(arch, parse_kwargs(arch_kwargs), weights, spec, out_path, rt, data_dir)
    say(f"wrote {report.out}: {arch} on {spec.name}, test accuracy {pct(report.test_accuracy)}, "
        f"validation {pct(report.validation_accuracy)}")
    say(normalisation_line(report.metadata.get("dataset") or {}, given=mean is not None and std is not None,
                           accuracy=report.test_accuracy))


def normalisation_line(record: dict, given: bool, accuracy: Optional[float]) -> str:
    """Which normalisation the imported model was measured with, and where it came from."""
    shown = (f"mean {', '.join(f'{m:.4g}' for m in record.get('mean') or [])}, "
             f"std {', '.join(f'{s:.4g}' for s in record.get('std') or [])}")
    if given:
        return f"normalisation {shown} (given), test accuracy {pct(accuracy)} with it"
    source = ("gif's standard values for this dataset" if record.get("kind") in ("mnist", "cifar10")
              else "computed from the training images")
    return (f"normalisation {shown} ({source}), test accuracy {pct(accuracy)} with it: a model trained with "
            "another normalisation must be given it with --mean/--std")


@app.command("forget-set")
@handled
def forget_set_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the forget-set file (JSON; - for stdout).")],
    dataset: Annotated[Optional[str], typer.Option(help="Dataset spec (default: the --model's dataset).")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="Take the dataset from this checkpoint.")] = None,
    random: Annotated[Optional[float], typer.Option(help="A random share (0 < F < 1) or count (N >= 1) of the "
                                                         "training set.")] = None,
    stratified: Annotated[bool, typer.Option(help="--random: keep each class's share.")] = False,
    label: Annotated[Optional[int], typer.Option(help="The training samples of this class (with --fraction: a "
                                                      "random share of them).")] = None,
    fraction: Annotated[Optional[float], typer.Option(help="--label: the share of the class to take.")] = None,
    files: Annotated[Optional[Path], typer.Option(help="A text file of ImageFolder training paths (class/file), "
                                                       "one per line.")] = None,
    indices: Annotated[Optional[str], typer.Option(help="A text file of training indices (one per line) or -.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random draws.")] = 0,
    data_dir: DataDir = None,
) -> None:
    """Write a forget set: a random share, a class (or part of it), image files, or an index list."""
    single_process("forget-set")
    from ..data.datasets import DatasetSpec, load_data
    from ..data.forget import make_forget_set, read_forget, write_forget
    from ..io.files import STDIO
    from ..pipelines.common import dataset_spec, load_model

    ways = [w for w, v in (("random", random), ("label", label), ("files", files), ("indices", indices)) if v is not None]
    if len(ways) != 1:
        raise UsageError("give exactly one of --random, --label, --files, --indices")
    if (dataset is None) == (model is None):
        raise UsageError("name the data: --dataset SPEC or --model CHECKPOINT")
    spec = DatasetSpec.parse(dataset) if dataset else dataset_spec(load_model(model).meta.get("dataset"), None)
    data = load_data(spec, data_dir)
    how = ways[0]
    kw: dict[str, Any] = {"seed": seed}
    if how == "random":
        kw.update({"fraction": random} if random < 1 else {"count": int(random)}, stratified=stratified)
        if random >= 1 and random != int(random):
            raise UsageError(f"--random takes a share below 1 or a whole count, got {random}")
    elif how == "label":
        kw.update(label=label, fraction=fraction)
    elif how == "files":
        from ..io.files import read_text

        kw["files"] = [line.strip() for line in read_text(files, "file list").splitlines() if line.strip()]
    else:
        kw["indices"] = read_forget(indices)
    fs = make_forget_set(data, how, **kw)
    write_forget(out_path, fs)
    if str(out_path) == STDIO:
        out.to_stderr()
    say(f"wrote {out_path}: {len(fs)} of {data.train_size} training samples of {spec.name} ({how})")


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
    batch_size: BatchSize = 512,
    workers: Workers = 0,
    data_dir: DataDir = None,
    uargs: Any = None,
) -> None:
    """Choose the target parameters J on the forget set and write them as a JSON mask."""
    from ..core.steps import select
    from ..io.files import STDIO
    from ..methods.influence import hessian_data
    from ..pipelines.common import write_mask_file

    args = unlearn_args(uargs)
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
    batch_size: BatchSize = 512,
    workers: Workers = 0,
    data_dir: DataDir = None,
    deterministic: Deterministic = False,
    uargs: Any = None,
) -> None:
    """Compute the influence of the forget set on J (least squares H_J delta = -g) and save it."""
    from ..core.steps import influence, stationarity_warning
    from ..methods.influence import hessian_data, resolve_weight_decay
    from ..pipelines.common import read_mask_for, write_influence_file

    args = unlearn_args(uargs)
    if args.method not in ("gif", "fif", "pif", "if", "grad"):
        raise UsageError(f"method {args.method!r} has no influence vector; use gif, fif, pif, if or grad")
    if uargs.get("target") is None:  # one vector, one scale: the paper's chain
        args = args.replace(target="forget")
    if args.target == "forget-then-remaining":
        raise UsageError("--target forget-then-remaining takes several steps: use remove-class, remove-samples "
                         "or backdoor recover (gif influence computes one vector)")
    J = None
    loaded, data = load(model, dataset, data_dir)
    if args.method != "if":
        if mask is None:
            raise UsageError(f"--mask is required for method {args.method!r} (only 'if' uses every parameter)")
        J, _ = read_mask_for(loaded, mask)
    task = forget_task(data, forget_label, forget)
    wd = resolve_weight_decay(args, loaded.trained_weight_decay)
    with Bars() as bars:
        rt = rt_for(device, batch_size, workers, bars, deterministic)
        run = influence(loaded.model, J, task.target(data), hessian_data(task, data, args), args, rt, wd,
                        task.retain(data), training=task.training(data))
    if rt.dist.is_main:
        write_influence_file(out_path, run, loaded, mask if args.method != "if" else None)
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
    from ..pipelines.common import apply_file, load_model

    scales = unlearn_args(uargs).scales
    if scales is None or len(scales) != 1:
        raise UsageError("--scale takes one number here (the scale to apply), e.g. --scale 26.9")
    scale = scales[0]
    meta = apply_file(load_model(model), influence, scale, out_path)
    say(f"wrote {out_path}: {meta['edit']['selected']} parameters moved, scale {scale:g}")


@app.command("evaluate")
@handled
def evaluate_cmd(
    model: ModelOpt = Path(DEFAULT_MODEL),
    forget_label: Annotated[Optional[int], typer.Option(help="Forgotten class: its test images are the forget set.")] = None,
    forget: Annotated[Optional[str], typer.Option(help="Forgotten training samples (forget-set file, index list or -).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON (- for stdout).")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Also write the gates as JUnit XML (one test case per "
                                                       "threshold) for a CI system's test view.")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Another checkpoint (e.g. the base model) to show beside it.")] = None,
    retrained: Annotated[Optional[Path], typer.Option(help="A model trained without the forget set: gaps, Avg. Gap, "
                                                           "agreement and KL on the forget set.")] = None,
    min_test_acc: Annotated[Optional[float], typer.Option(help="Exit 1 if test accuracy (%) is below this.")] = None,
    max_forget_acc: Annotated[Optional[float], typer.Option(help="Exit 1 if forget accuracy (%) is above this.")] = None,
    max_gap: Annotated[Optional[float], typer.Option(help="Exit 1 if the Avg. Gap to --retrained (points) is above this.")] = None,
    mia: Annotated[bool, typer.Option(help="Report the membership-inference share (an extra pass over the data).")] = True,
    dataset: DatasetOpt = None,
    device: Device = "auto",
    batch_size: BatchSize = 512,
    workers: Workers = 0,
    data_dir: DataDir = None,
) -> None:
    """Loss and accuracy on the forget set and test data, MIA, gaps to a retrained model; gates for CI."""
    from ..io.files import STDIO, write_json
    from ..pipelines.common import load_model
    from ..pipelines.evaluate import Thresholds, evaluate_report

    if str(json_path) == STDIO:
        out.to_stderr()
    rt = rt_for(device, batch_size, workers)
    loaded, data = load(model, dataset, data_dir)
    task = forget_task(data, forget_label, forget, required=False)
    thresholds = Thresholds(min_test_acc, max_forget_acc, max_gap)
    report = evaluate_report(loaded, data, task, rt, load_model(baseline) if baseline else None,
                             load_model(retrained) if retrained else None, thresholds, mia)
    rows = {str(model): report}
    for key in ("baseline", "retrained"):
        if key in report:
            rows[report[key]["model"]] = report[key]
    if rt.dist.is_main:
        out.print(metrics_table(f"evaluate on {data.spec.name}", rows))
        if "retrained" in report and report["retrained"].get("avg_gap") is not None:
            r = report["retrained"]
            say(f"Avg. Gap to the retrained model: {100 * r['avg_gap']:.2f} points; agreement on the forget set "
                f"{pct(r['agreement_forget'])}, KL(retrained || model) there {r['kl_forget']:.4f}")
        if json_path:
            write_json(json_path, report)
        if junit:
            from ..io.junit import write_junit

            write_junit(junit, report)
    if report["violations"]:
        from ..errors import GateFailed

        raise GateFailed("threshold violated: " + "; ".join(report["violations"]))


def method_summary(result, args) -> str:
    """The method and what it chose: J's criterion when it selects one, then its own hyper-parameters."""
    parts = [args.method]
    if result.outcome.selection is not None:
        parts.append(f"{args.criterion} {100 * args.ratio:g}%")
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
    from ..core.steps import stationarity_warning
    from ..pipelines.unlearn import unlearn_to_folder

    def prepare(result, report) -> list:
        shown: list = [(table or metrics_table)(title(result), {"base": report["base"], "edited": report["edited"]})]
        inf = report.get("influence") or {}
        env = result.outcome.influence.environment if result.outcome.influence is not None else {}
        shown += [line for line in (hvp_note({**(inf.get("hessian") or {}), **env}), solver_line(inf.get("stats")))
                  if line]
        if report.get("decision"):
            shown.append(f"{args.method}: {report['decision']}")
        caution = stationarity_warning(inf.get("stationarity"))
        if caution:
            shown.append(("warning", caution))
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
    batch_size: BatchSize = 512,
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
    batch_size: BatchSize = 512,
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
