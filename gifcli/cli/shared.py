"""What the commands share: the options every command takes (as Annotated types), the default
models, loading a model with its data and a forget request, and the tables and number formats
they print."""
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..data.datasets import BATCH  # noqa: F401  (every walk's default batch, for the commands)
from ..core.metrics import COLUMNS, column
from ..errors import UsageError
from ..parsing import percent

DEFAULT_MODEL = "checkpoints/mnist_cnn.safetensors"
BACKDOOR_MODEL = "checkpoints/mnist_cnn_backdoor.safetensors"

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


def rt_for(device: str, batch_size: int, workers: int, bars=None, deterministic: bool = False):
    from ..pipelines.inputs import runtime

    return runtime(device, batch_size, workers, bars, deterministic)


def load(model: Path, dataset: Optional[str], data_dir: Optional[str]):
    from ..core.checkpoints import load_model
    from ..pipelines.inputs import load_data_for

    loaded = load_model(model)
    return loaded, load_data_for(loaded, dataset, data_dir)


def forget_task(data, forget_label: Optional[int], forget: Optional[str], required: bool = True,
                criterion: Optional[str] = None):
    """The Task of --forget-label K or --forget FILE (exactly one of them)."""
    from ..core.tasks import ClassRemoval, SampleRemoval
    from ..data.forget import read_forget, resolve
    from ..pipelines.inputs import check_label

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
    return percent(v)


def num(v: Optional[float], fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def metrics_table(title: str, rows: dict[str, dict]) -> Table:
    """forget/test (and retain, F1, MIA) of each model, whichever the reports hold."""
    table = Table(title=Text(title))
    table.add_column("model", overflow="fold")
    shown = ["forget acc", "forget loss", "class test acc", "retain acc", "test acc", "test loss", "F1", "MIA entropy",
             "MIA held-out"]
    labels = {"MIA entropy": "MIA forget"}
    cols = [(labels.get(name, name), lambda r, n=name: pct(column(r, n)) if COLUMNS[n][1] else num(column(r, n)))
            for name in shown
            if name in ("test acc", "test loss") or any(column(r, name) is not None for r in rows.values())]
    for name, _ in cols:
        table.add_column(name, justify="right")
    for name, r in rows.items():
        table.add_row(Text(name), *[fn(r) for _, fn in cols])
    return table


# ---------------------------------------------------------------------------------------------


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
