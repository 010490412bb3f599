"""What every command reads first: a checkpoint and its data, checked against each other (classes,
input shape, dataset), and the runtime (device, batch size, the distributed group). Nothing here
prints; the files a method writes are its own (``Method.files``)."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..core.args import Runtime
from ..core.checkpoints import Loaded
from ..data.datasets import BATCH, Data, DatasetSpec, load_data
from ..dist import Dist, from_environment
from ..errors import InputFileError, UsageError


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda without a GPU is an error. Under torchrun with
    CUDA each rank takes the GPU of its LOCAL_RANK."""
    import os

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda asked for, but no CUDA GPU is available (use --device cpu or auto)")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        return torch.device(name)
    raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda")


def runtime(device: str, batch_size: int = BATCH, workers: int = 0, progress=None,
            deterministic: bool = False) -> Runtime:
    """The Runtime of a command: its device, and the distributed group torchrun describes (if any)."""
    import os

    dev = resolve_device(device)
    if deterministic:
        # cuBLAS needs this workspace setting before its first call to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    dist: Dist = from_environment(dev)
    return Runtime(dev, batch_size, workers, dist, progress=progress, deterministic=deterministic)


def dataset_spec(recorded: Any, given: Optional[str]) -> DatasetSpec:
    """The spec to load: the checkpoint's, or ``--dataset`` when it names the same kind of data."""
    spec = DatasetSpec.from_record(recorded)
    if given is None:
        return spec
    other = DatasetSpec.parse(given)
    if other.kind != spec.kind:
        raise UsageError(f"--dataset {other.name} disagrees with the model's dataset {spec.name}")
    # a moved folder or file is fine as long as its content is the recorded one (checked on load)
    return DatasetSpec(spec.kind, other.location or spec.location, spec.channels, spec.size, spec.mean, spec.std)


def load_data_for(loaded: Loaded, dataset: Optional[str], data_dir: Optional[str]) -> Data:
    """The model's data (or ``--dataset``), checked to be the data the model records."""
    data = load_data(dataset_spec(loaded.meta.get("dataset"), dataset), data_dir)
    data.check_record(loaded.meta.get("dataset"), f"model {loaded.path}")
    if data.num_classes != int(loaded.meta.get("num_classes", data.num_classes)):
        raise InputFileError(f"model {loaded.path} has {loaded.meta['num_classes']} classes, "
                             f"{data.spec.name} has {data.num_classes}")
    if list(data.input_shape) != list(loaded.meta.get("input_shape", data.input_shape)):
        raise InputFileError(f"model {loaded.path} takes inputs {loaded.meta['input_shape']}, "
                             f"{data.spec.name} gives {list(data.input_shape)}")
    check_outputs(loaded.model, data, f"model {loaded.path}")
    return data


def check_outputs(model: nn.Module, data: Data, what: str) -> None:
    """The model gives one output per class of the data (one forward pass on two test images)."""
    from ..core.passes import to_model
    from ..data.datasets import batches

    split = data.test_split if len(data.test_split) else data.fit
    x, _ = next(iter(batches(split, 2, 0)))
    from ..models.specs import set_eval

    was_training = model.training
    set_eval(model)  # no BatchNorm statistics move
    try:
        with torch.inference_mode():
            out = model(to_model(x, model))
    finally:
        if was_training:
            try:
                model.train()
            except NotImplementedError:  # a torch.export graph keeps its mode
                pass
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != data.num_classes:
        got = f"outputs of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputFileError(f"{what} gives {got} on {data.spec.name}, which has {data.num_classes} classes "
                             f"(expected ({len(x)}, {data.num_classes}))")


def check_label(data: Data, label: int) -> None:
    data.check_label(label)
