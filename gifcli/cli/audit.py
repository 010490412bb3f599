"""gif audit: the unlearning challenge's forgetting score of a method."""
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..errors import UsageError
from .app import Bars, app, handled, out, say, single_process
from .options import ALL, unlearn_args, with_options
from .shared import BATCH, BatchSize, DataDir, Device, Workers, pct, rt_for


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
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
    uargs: Any = None,
) -> None:
    """The unlearning challenge's forgetting score of a method: N models unlearned by it against N retrained."""
    single_process("audit")
    from ..config import TrainConfig, load_train_config
    from ..core.checkpoints import load_model
    from ..data.forget import read_forget
    from ..io.files import check_folder_creatable, folder_lock, make_folder, write_json
    from ..pipelines.audit import AuditPlan, audit, histogram

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
    check_folder_creatable(folder)
    check_folder_creatable(store)
    # the store and the output folder are this run's until it ends: a second audit on either is refused at once
    with folder_lock(store), folder_lock(folder):
        with Bars() as bars:
            rt = rt_for(device, batch_size, workers, bars)
            record = audit(plan, store, rt, data_dir, jobs, bars)
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
