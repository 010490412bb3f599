"""gif compare: a grid of methods on one forget request, read from options and a YAML file
checked as the options are."""
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import UsageError
from ..parsing import comma_list
from .app import Bars, app, handled, out, say
from .options import ALL, unlearn_args, with_options
from .shared import (BATCH, DEFAULT_MODEL, BatchSize, DataDir, Deterministic, Device, ForgetFile, ForgetLabel, Workers,
                     forget_task, load, rt_for)

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
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
    uargs: Any = None,
) -> None:
    """Unlearning methods side by side on one forget request and several seeds, against retraining."""
    from ..core.checkpoints import load_model
    from ..core.tasks import BackdoorRecovery, SampleRemoval
    from ..data.forget import make_forget_set, resolve
    from ..pipelines.backdoor import check_model_poison, load_backdoor, read_poison
    from ..pipelines.compare import compare
    from ..pipelines.compare import plot as plot_results

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
    from ..config import read_yaml

    return read_yaml(path, empty_ok=True)


def compare_config(path: Optional[Path], given: dict) -> dict:
    """The YAML's keys (compare's own and the generated unlearning options, each checked and converted
    as its command-line option is), under the options given."""
    from .options import option_specs

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
    from ..pipelines.compare import DEFAULT_CRITERIA, DEFAULT_RATIOS, DEFAULT_SEEDS, CompareConfig
    from .options import option_specs

    method_list = comma_list(cfg.get("methods"), str, "methods") or list(CompareConfig.default_methods())
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
                         tuple(comma_list(cfg.get("criteria"), str, "criteria") or DEFAULT_CRITERIA),
                         tuple(comma_list(cfg.get("ratios"), float, "ratios") or DEFAULT_RATIOS),
                         tuple(comma_list(cfg.get("seeds"), int, "seeds") or DEFAULT_SEEDS), svc)
    plan.cells()  # every combination is checked before any work
    return plan
