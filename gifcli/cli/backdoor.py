"""gif backdoor poison | train | recover | evaluate."""
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .app import Bars, app, handled, out, say, single_process
from .edit import method_summary, run_to_folder
from .options import ALL, unlearn_args, with_options
from .shared import (BACKDOOR_MODEL, BATCH, BatchSize, DataDir, Deterministic, Device, ModelOpt, Workers,
                     backdoor_table, pct, rt_for)

backdoor_app = typer.Typer(help="Implant a trigger, train the backdoored model, recover it with GIF (section 5.3).",
                           no_args_is_help=True, rich_markup_mode=None)
app.add_typer(backdoor_app, name="backdoor")


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
        rt = rt_for(device, BATCH, 0)
        report = train_backdoor(cfg, poison, out_path, rt, data_dir, true_labels, bars.train(cfg.epochs))
    say(f"wrote {report.out}: clean test accuracy {pct(report.test_accuracy)}, {report.seconds:.0f} s")


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
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
    deterministic: Deterministic = False,
    uargs: Any = None,
) -> None:
    """Undo the backdoor: relabel GIF on the poisoned images, scale chosen on training-set validation."""
    from ..core.checkpoints import load_model
    from ..core.tasks import BackdoorRecovery
    from ..pipelines.backdoor import check_model_poison, load_backdoor, read_poison
    from ..pipelines.inputs import load_data_for

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
    from ..core.checkpoints import load_model
    from ..io.files import STDIO, write_json
    from ..pipelines.backdoor import evaluate_backdoor

    if str(json_path) == STDIO:
        out.to_stderr()
    report = evaluate_backdoor(load_model(model), poison, rt_for(device, BATCH, 0), data_dir)
    out.print(backdoor_table("backdoor evaluation", {str(model): report}))
    if json_path:
        write_json(json_path, report)
