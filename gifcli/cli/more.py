"""gif backdoor (poison, train, recover, evaluate), gif compare and gif spectrum."""
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..errors import InputFileError, UsageError
from .app import ALL, Bars, app, handled, out, say, single_process, unlearn_args, with_options
from .commands import (DEFAULT_MODEL, BatchSize, DataDir, DatasetOpt, Deterministic, Device, ForgetFile, ForgetLabel,
                       ModelOpt, Workers, forget_task, load, method_summary, pct, rt_for,
                       run_to_folder)

backdoor_app = typer.Typer(help="Implant a trigger, train the backdoored model, recover it with GIF (section 5.3).",
                           no_args_is_help=True, rich_markup_mode=None)
app.add_typer(backdoor_app, name="backdoor")
BACKDOOR_MODEL = "checkpoints/mnist_cnn_backdoor.safetensors"


@backdoor_app.command("poison")
@handled
def backdoor_poison(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the poison index file (JSON).")],
    fraction: Annotated[float, typer.Option(help="Share of training images to poison, in (0, 1).")] = 0.3,
    target_label: Annotated[int, typer.Option(help="Label the triggered images are given.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of numpy's choice of the poisoned images (appendix C: 1).")] = 1,
    dataset: Annotated[str, typer.Option(help="mnist, cifar10 or tensors:FILE (uint8 images).")] = "mnist",
    data_dir: DataDir = None,
) -> None:
    """Choose the poisoned training images and record them, the trigger and the target label."""
    single_process("backdoor poison")
    from ..io.files import write_json
    from ..pipelines.backdoor import make_poison_doc

    doc = make_poison_doc(dataset, fraction, target_label, seed, data_dir)
    write_json(out_path, doc)
    say(f"wrote {out_path}: {doc['count']} of {doc['train_size']} {dataset} training images poisoned, "
        f"target label {target_label}, seed {seed}")


@backdoor_app.command("train")
@handled
def backdoor_train(
    poison: Annotated[Path, typer.Option(help="Poison file from 'gif backdoor poison'.")],
    config: Annotated[Path, typer.Option(help="YAML training config (configs/mnist_cnn_backdoor.yaml).")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the checkpoint.")],
    true_labels: Annotated[bool, typer.Option("--true-labels", help="Train on the triggered images with their true "
                                                                    "labels: the retraining baseline.")] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Override the config's number of epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the config's seed.")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Train on the poisoned training set (backdoored model) or on its true labels (--true-labels)."""
    single_process("backdoor train")
    from ..config import load_train_config
    from ..pipelines.backdoor import train_backdoor

    cfg = load_train_config(config).replace(epochs=epochs, seed=seed)
    with Bars() as bars:
        rt = rt_for(device, 512, 0)
        report = train_backdoor(cfg, poison, out_path, rt, data_dir, true_labels, bars.train(cfg.epochs))
    say(f"wrote {report.out}: clean test accuracy {pct(report.test_accuracy)}, {report.seconds:.0f} s")


def backdoor_table(title: str, rows: dict[str, dict]) -> Table:
    table = Table(title=Text(title))
    table.add_column("model", overflow="fold")
    for c in ("BD data w/ BD label", "BD data w/ true label", "clean test", "attack success"):
        table.add_column(c, justify="right")
    for name, r in rows.items():
        name = {"base": "backdoored", "edited": "recovered"}.get(name, name)
        table.add_row(Text(name), pct(r["bd_data_backdoor_label_accuracy"]), pct(r["bd_data_true_label_accuracy"]),
                      pct(r["test_accuracy"]), pct(r["attack_success_rate"]))
    return table


@backdoor_app.command("recover")
@handled
@with_options(ALL)
def backdoor_recover(
    poison: Annotated[Path, typer.Option(help="Poison file the model was trained with.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the recovered checkpoint.")],
    model: ModelOpt = Path(BACKDOOR_MODEL),
    run_dir: Annotated[Optional[Path], typer.Option(help="Folder for mask, influence and report "
                                                         "(default runs/backdoor-recover).")] = None,
    device: Device = "auto",
    batch_size: BatchSize = 512,
    workers: Workers = 0,
    data_dir: DataDir = None,
    deterministic: Deterministic = False,
    uargs: Any = None,
) -> None:
    """Undo the backdoor: relabel GIF on the poisoned images, scale chosen on training-set validation."""
    from ..core.tasks import BackdoorRecovery
    from ..pipelines.backdoor import check_model_poison, load_backdoor, read_poison
    from ..pipelines.common import load_data_for, load_model

    args = unlearn_args(uargs)
    loaded = load_model(model)
    doc = read_poison(poison)
    check_model_poison(loaded, doc)
    bd = load_backdoor(doc, data_dir, load_data_for(loaded, None, data_dir))
    run_to_folder(loaded, bd.data, BackdoorRecovery(bd), args, run_dir or Path("runs/backdoor-recover"),
                  "backdoor-recover", lambda r: f"backdoor recovery: {method_summary(r, args)}",
                  device, batch_size, workers, deterministic, edited_out=out_path, table=backdoor_table)


@backdoor_app.command("evaluate")
@handled
def backdoor_evaluate(
    poison: Annotated[Path, typer.Option(help="Poison file that defines the BD data and the trigger.")],
    model: ModelOpt = Path(BACKDOOR_MODEL),
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics as JSON (- for stdout).")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Table 3's columns (BD data w/ BD label, w/ true label, clean test) and the attack success rate."""
    from ..io.files import STDIO, write_json
    from ..pipelines.backdoor import evaluate_backdoor
    from ..pipelines.common import load_model

    if str(json_path) == STDIO:
        out.to_stderr()
    report = evaluate_backdoor(load_model(model), poison, rt_for(device, 512, 0), data_dir)
    out.print(backdoor_table("backdoor evaluation", {str(model): report}))
    if json_path:
        write_json(json_path, report)


def csv(text: Optional[str], cast, name: str) -> Optional[list]:
    if text is None:
        return None
    try:
        vals = [cast(t.strip()) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be a comma-separated list, got {text!r}") from None
    if not vals:
        raise UsageError(f"--{name} is empty")
    return vals


COMPARE_KEYS = {"model", "forget_label", "forget", "random", "poison", "retrained", "methods", "criteria", "ratios",
                "seeds", "data_dir", "paper", "svc", "plot"}  # compare's own keys; the unlearning options' keys are generated


@app.command("compare")
@handled
@with_options(ALL, skip=("method", "seed"))
def compare_cmd(
    out_dir: Annotated[Path, typer.Option(help="Folder for results.json, results.md, results.png and every cell's files.")],
    config: Annotated[Optional[Path], typer.Option(help="YAML with any of these options, by their names with _ "
                                                        "(configs/paper/); options given here win.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help=f"Model checkpoint (default {DEFAULT_MODEL}).")] = None,
    forget_label: ForgetLabel = None,
    forget: ForgetFile = None,
    random: Annotated[Optional[float], typer.Option(help="Forget a random share of the training set, drawn anew "
                                                         "for each seed.")] = None,
    poison: Annotated[Optional[Path], typer.Option(help="Backdoor recovery: the poison file the model was trained "
                                                        "with.")] = None,
    retrained: Annotated[Optional[Path], typer.Option(help="A model trained without the forget set (else the "
                                                           "'retrain' cells are the reference).")] = None,
    methods: Annotated[Optional[str], typer.Option(help="Comma-separated registered methods (default "
                                                        "gif,fif,pif,grad).")] = None,
    criteria: Annotated[Optional[str], typer.Option(help="Grid: comma-separated criteria of J for the methods that "
                                                         "select one (default topk-outputs).")] = None,
    ratios: Annotated[Optional[str], typer.Option(help="Grid: comma-separated modification ratios for the methods "
                                                       "that select J (default 0.05,0.1,0.3,0.5).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated seeds: the forget-set draw (--random) and "
                                                      "each method's randomness (default 0).")] = None,
    svc: Annotated[Optional[bool], typer.Option(help="Also run the SVC membership attacks (five features per row; "
                                                     "default on).")] = None,
    plot: Annotated[Optional[bool], typer.Option(help="Write results.png (needs the 'plot' extra: matplotlib; default "
                                                      "on).")] = None,
    deterministic: Deterministic = False,
    device: Device = "auto",
    batch_size: BatchSize = 512,
    workers: Workers = 0,
    data_dir: DataDir = None,
    uargs: Any = None,
) -> None:
    """Unlearning methods side by side on one forget request and several seeds, against retraining."""
    from ..core.tasks import BackdoorRecovery, SampleRemoval
    from ..data.forget import make_forget_set, resolve
    from ..pipelines.backdoor import check_model_poison, load_backdoor, read_poison
    from ..pipelines.common import load_model
    from ..pipelines.compare import plot as plot_results
    from ..pipelines.compare import compare

    given = {"model": model, "forget_label": forget_label, "forget": forget, "random": random, "poison": poison,
             "retrained": retrained, "methods": methods, "criteria": criteria, "ratios": ratios, "seeds": seeds,
             "data_dir": data_dir, "svc": svc, "plot": plot, **uargs}
    cfg = compare_config(config, given)
    svc, plot = cfg.get("svc", True), cfg.get("plot", True)
    label, forget_path, share, poison_path = (cfg.get(k) for k in ("forget_label", "forget", "random", "poison"))
    if len([g for g in (label, forget_path, share, poison_path) if g is not None]) != 1:
        raise UsageError("name one forget request: --forget-label, --forget, --random or --poison")
    plan = compare_plan(cfg, svc)
    data_root = cfg.get("data_dir")
    loaded, data = load(Path(cfg.get("model") or DEFAULT_MODEL), None, data_root)
    scale_criterion = cfg.get("scale_criterion")
    if poison_path is not None:
        doc = read_poison(poison_path)
        check_model_poison(loaded, doc)
        bd = load_backdoor(doc, data_root, data)
        data, task = bd.data, BackdoorRecovery(bd)
    elif share is not None:
        share = float(share)

        def task(seed: int):  # a forget set drawn for each seed
            return SampleRemoval(resolve(make_forget_set(data, "random", fraction=share, seed=seed), data),
                                 scale_criterion or "privacy")
    else:
        task = forget_task(data, None if label is None else int(label), forget_path, criterion=scale_criterion)
    retrained_path = cfg.get("retrained")
    from ..io.files import folder_lock

    with folder_lock(out_dir), Bars() as bars:  # one comparison into a folder at a time
        rt = rt_for(device, batch_size, workers, bars, deterministic)
        result = compare(loaded, data, task, plan, rt, out_dir, load_model(retrained_path) if retrained_path else None)
    if not rt.dist.is_main:
        return
    png = plot_results(result, out_dir / "results.png") if plot else None
    out.print((out_dir / "results.md").read_text())
    say(f"wrote {out_dir}/results.json, results.md" + (", results.png" if png else
                                                        (" (no plot: install the 'plot' extra)" if plot else "")))


COMPARE_TYPES = {"forget_label": int, "random": float, "svc": bool, "plot": bool}  # the rest of COMPARE_KEYS: text


def config_value(path: Path, key: str, value: Any, kind: Any) -> Any:
    """A YAML value as the command line would have parsed it: the option's own type, or a usage error
    naming the key and the value."""
    import typing

    args = [a for a in typing.get_args(kind) if a is not type(None)]
    kind = args[0] if args and typing.get_origin(kind) is typing.Union else kind
    if isinstance(value, (dict, type(None))):
        raise UsageError(f"config {path}: {key}: {value!r} is not a value for this option")
    if isinstance(value, list):
        if kind is not str or any(isinstance(v, (list, dict)) for v in value):
            raise UsageError(f"config {path}: {key}: a list is not a value for this option")
        return ",".join(str(v) for v in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise UsageError(f"config {path}: {key}: {value!r} is not true or false")
        return value
    if kind in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
        if not ok:
            raise UsageError(f"config {path}: {key}: {value!r} is not {'an integer' if kind is int else 'a number'}")
        return kind(value)
    if isinstance(value, bool):  # a YAML true/false where text belongs
        raise UsageError(f"config {path}: {key}: {value!r} is not a value for this option")
    return str(value)


def read_yaml_config(path: Path) -> dict:
    """A YAML mapping, read without anchors or aliases (a few hundred bytes of nested aliases expand to
    gigabytes: a compare config never needs them)."""
    import yaml

    try:
        text = path.read_text()
        if any(isinstance(t, (yaml.AliasToken, yaml.AnchorToken)) for t in yaml.scan(text)):
            raise UsageError(f"config {path} uses YAML anchors or aliases (&, *), which gif does not expand: "
                             "write the values out")
        cfg = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        raise InputFileError(f"cannot read config {path}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(cfg, dict):
        raise InputFileError(f"config {path} is not a YAML mapping")
    return cfg


def compare_config(path: Optional[Path], given: dict) -> dict:
    """The YAML's keys (compare's own and the generated unlearning options, each checked and converted
    as its command-line option is), under the options given."""
    from .app import option_specs

    cfg: dict = {}
    if path is not None:
        raw = read_yaml_config(path)
        kinds = {s.dest: s.cli_type for s in option_specs() if s.dest not in ("method", "seed")}
        kinds.update({k: COMPARE_TYPES.get(k, str) for k in COMPARE_KEYS})
        unknown = sorted(str(k) for k in raw if k not in kinds)
        if unknown:
            raise UsageError(f"config {path}: unknown keys {', '.join(unknown)} (the keys are compare's options, "
                             "with _ for -)")
        cfg = {k: config_value(path, k, v, kinds[k]) for k, v in raw.items()}
    return {**cfg, **{k: v for k, v in given.items() if v is not None}}


def compare_plan(cfg: dict, svc: bool):
    """The CompareConfig of a comparison: each method's arguments from the generated options, the grid."""
    from ..core.methods import METHODS
    from ..pipelines.compare import CompareConfig
    from .app import option_specs

    method_list = csv(cfg.get("methods") or "gif,fif,pif,grad", str, "methods")
    specs = option_specs()
    for spec in specs:  # an option none of the compared methods has is a mistake, not something to ignore
        if spec.methods and cfg.get(spec.dest) is not None and not set(spec.methods) & set(method_list):
            raise UsageError(f"{spec.flag} is an option of {', '.join(spec.methods)}, none of which is compared")
    arguments = {}
    for m in method_list:
        METHODS.get(m)
        values = {s.dest: cfg.get(s.dest) for s in specs if m in s.methods}
        arguments[m] = unlearn_args({"method": m, "scale_criterion": cfg.get("scale_criterion"), **values})
    plan = CompareConfig(tuple(method_list), arguments,
                         tuple(csv(cfg.get("criteria") or "topk-outputs", str, "criteria")),
                         tuple(csv(cfg.get("ratios") or "0.05,0.1,0.3,0.5", float, "ratios")),
                         tuple(csv(cfg.get("seeds") if cfg.get("seeds") is not None else "0", int, "seeds")), svc)
    plan.cells()  # every combination is checked before any work
    return plan


@app.command("spectrum")
@handled
@with_options(("hessian_samples", "hvp_mode", "seed"), helps={"seed": "Seed of the Hessian sample and the start "
                                                                      "vector."})
def spectrum_cmd(
    model: ModelOpt = Path(DEFAULT_MODEL),
    top: Annotated[int, typer.Option(help="How many eigenvalues of largest magnitude to report.")] = 100,
    steps: Annotated[Optional[int], typer.Option(help="Lanczos steps (default 2 x --top).")] = None,
    l2: Annotated[str, typer.Option(help="Comma-separated L2 weights lambda: eigenvalues of H + lambda I.")] = "0",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the eigenvalues as JSON (- for stdout).")] = None,
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG (needs matplotlib).")] = None,
    dataset: DatasetOpt = None,
    device: Device = "auto",
    workers: Workers = 0,
    data_dir: DataDir = None,
    uargs: Any = None,
) -> None:
    """Top Hessian eigenvalues by Lanczos (same HVPs) and the share of negative ones per L2 weight (Figure 3)."""
    from ..io.files import STDIO, write_json
    from ..pipelines.spectrum import plot_spectrum, spectrum

    if str(json_path) == STDIO:
        out.to_stderr()
    lams = csv(l2, float, "l2")
    args = unlearn_args(uargs)  # the Hessian sample as gif's influence draws it
    loaded, data = load(model, dataset, data_dir)
    with Bars() as bars:
        rt = rt_for(device, 512, workers, bars)
        result = spectrum(loaded, data, args.hessian_samples, top, steps, lams, args.seed, rt, args.hvp_mode)
    if not rt.dist.is_main:
        return
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
        say("no plot: matplotlib is not installed (pip install -e '.[plot]')")


@app.command("audit")
@handled
@with_options(ALL, skip=("seed",))
def audit_cmd(
    forget: Annotated[str, typer.Option(help="The training samples to forget: a forget-set file, an index list, "
                                             "or -.")],
    config: Annotated[Optional[Path], typer.Option(help="The training recipe (YAML, as gif train takes); default: "
                                                        "the recipe --model records.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="Take the recipe from this checkpoint.")] = None,
    models: Annotated[int, typer.Option(help="N: models a side (unlearned and retrained). Scores compare only at "
                                             "the same N.")] = 8,
    first_seed: Annotated[int, typer.Option(help="Seed of the first original model (then +1 each).")] = 0,
    store: Annotated[Path, typer.Option(help="Model store: trained, retrained and unlearned models, reused "
                                             "across methods and runs (a killed audit resumes from it).")] =
        Path("runs/audit-store"),
    out_dir: Annotated[Optional[Path], typer.Option(help="Where audit.json and epsilons.png go (default "
                                                         "runs/audit-METHOD).")] = None,
    jobs: Annotated[int, typer.Option(help="Trainings run in this many processes at once (the CPU threads are "
                                           "split between them).")] = 1,
    plot: Annotated[bool, typer.Option(help="Write epsilons.png (needs the 'plot' extra: matplotlib).")] = True,
    device: Device = "auto",
    batch_size: BatchSize = 512,
    workers: Workers = 0,
    data_dir: DataDir = None,
    uargs: Any = None,
) -> None:
    """The unlearning challenge's forgetting score of a method: N models unlearned by it against N retrained."""
    single_process("audit")
    from ..config import TrainConfig, load_train_config
    from ..data.forget import read_forget
    from ..io.files import write_json
    from ..pipelines.audit import AuditPlan, audit, histogram
    from ..pipelines.common import load_model

    if (config is None) == (model is None):
        raise UsageError("name the recipe: --config YAML or --model CHECKPOINT (its recorded recipe)")
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if config is not None:
        recipe = load_train_config(config)
    else:
        recorded = load_model(model).meta.get("train_config")
        if not recorded:
            raise UsageError(f"{model} records no training recipe (imported weights): pass --config")
        recipe = TrainConfig.from_dict(recorded)
    args = unlearn_args(uargs)
    plan = AuditPlan(recipe, read_forget(forget), args, models, first_seed,
                     args.scale_criterion or "privacy")
    folder = out_dir or Path(f"runs/audit-{args.method}")
    with Bars() as bars:
        rt = rt_for(device, batch_size, workers, bars)
        record = audit(plan, store, rt, data_dir, jobs, bars)
    from ..io.files import make_folder

    make_folder(folder)
    write_json(folder / "audit.json", record)
    png = histogram(record, folder / "epsilons.png") if plot else None
    table = Table(title=Text(f"audit of {args.method}: {models} unlearned against {models} retrained models"))
    for c in ("forget score F", "final score", "retain acc (unl. / retr.)", "test acc (unl. / retr.)"):
        table.add_column(c, justify="right")
    ra, ta = record["retain_accuracy"], record["test_accuracy"]
    table.add_row(f"{record['forget_score']:.4f}", f"{record['final_score']:.4f}",
                  f"{pct(ra['unlearned'])} / {pct(ra['retrained'])}", f"{pct(ta['unlearned'])} / {pct(ta['retrained'])}")
    out.print(table)
    say(f"{record['note']}; {record['forget_in_training']} forget examples scored")
    say(f"wrote {folder / 'audit.json'}" + (f", {png}" if png else "") +
        f" ({record['seconds']['total']:.0f} s, {record['store']['trained_now']} models trained now)")
