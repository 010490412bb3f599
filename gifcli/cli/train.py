"""gif train, gif import, gif forget-set: make a model, bring one in, write a forget set."""
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import UsageError
from ..parsing import comma_list
from .app import Bars, app, handled, out, say, single_process
from .shared import (BATCH, ArchKwargs, BatchSize, Channels, DataDir, DatasetOpt, Device, ImageSize, MeanOpt, StdOpt,
                     Workers, pct, rt_for)


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
                               "channels": channels, "image_size": image_size, "mean": comma_list(mean, float, "mean"),
                               "std": comma_list(std, float, "std")}
    if arch_kwargs is not None:
        changes["arch_kwargs"] = parse_kwargs(arch_kwargs)
    cfg = cfg.replace(**changes)
    excluded = read_forget(exclude) if exclude is not None else None
    with Bars() as bars:
        rt = rt_for(device, BATCH, workers)
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
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
) -> None:
    """Turn weights you already have into a gif checkpoint, measuring its test accuracy."""
    single_process("import")
    from ..data.datasets import DatasetSpec
    from ..models.specs import parse_kwargs
    from ..pipelines.train import import_weights

    spec = DatasetSpec.parse(dataset, channels, image_size, comma_list(mean, float, "mean"), comma_list(std, float, "std"))
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
    from ..core.checkpoints import load_model
    from ..data.datasets import DatasetSpec, load_data
    from ..data.forget import make_forget_set, read_forget, write_forget
    from ..io.files import STDIO
    from ..pipelines.inputs import dataset_spec

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
