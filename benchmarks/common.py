"""Shared by the benchmark scripts: loading the shipped models and tasks, one-line progress."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gifcli.core.args import Runtime  # noqa: E402
from gifcli.data.datasets import load_raw  # noqa: E402
from gifcli.data.tensorfile import write_tensors  # noqa: E402
from gifcli.core.tasks import BackdoorRecovery, ClassRemoval, SampleRemoval, Task  # noqa: E402
from gifcli.data.forget import read_forget, resolve  # noqa: E402
from gifcli.pipelines.backdoor import load_backdoor, read_poison  # noqa: E402
from gifcli.core.checkpoints import Loaded, load_model
from gifcli.pipelines.inputs import load_data_for  # noqa: E402

MODEL = ROOT / "checkpoints" / "mnist_cnn.safetensors"
BACKDOOR_MODEL = ROOT / "checkpoints" / "mnist_cnn_backdoor.safetensors"
POISON = ROOT / "checkpoints" / "mnist_backdoor_poison.json"


def task_named(spec: str, data_dir: Optional[str] = None) -> tuple[Loaded, object, Task]:
    """``class:K`` (shipped CNN), ``backdoor`` (shipped backdoored CNN), ``samples:MODEL:FORGET``."""
    kind, _, rest = spec.partition(":")
    if kind == "class":
        loaded = load_model(MODEL)
        return loaded, load_data_for(loaded, None, data_dir), ClassRemoval(int(rest))
    if kind == "backdoor":
        loaded = load_model(BACKDOOR_MODEL)
        bd = load_backdoor(read_poison(POISON), data_dir, load_data_for(loaded, None, data_dir))
        return loaded, bd.data, BackdoorRecovery(bd)
    if kind == "samples":
        model_path, _, forget = rest.partition(":")
        loaded = load_model(model_path)
        data = load_data_for(loaded, None, data_dir)
        return loaded, data, SampleRemoval(resolve(read_forget(forget), data))
    raise SystemExit(f"unknown task {spec!r}")


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def runtime(device: str = "cpu") -> Runtime:
    return Runtime(torch.device(device))


def flipped_mnist(path: Path, source: int, target: int, share: float, seed: int, data_dir: Optional[str] = None,
                  reuse: bool = True) -> tuple[torch.Tensor, int]:
    """MNIST with ``share`` of class ``source``'s training labels flipped to ``target`` (drawn with
    ``seed``), written as a tensors file at ``path`` (kept if there and ``reuse``); returns the
    flipped indices and the size of the class."""
    train = load_raw("mnist", "train", data_dir)
    members = torch.nonzero(train.labels == source).reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    flipped = members[torch.randperm(len(members), generator=gen)[: int(round(share * len(members)))]].sort().values
    if not (reuse and path.exists()):
        labels = train.labels.clone()
        labels[flipped] = target
        test = load_raw("mnist", "test", data_dir)
        write_tensors(path, train.images, labels, test.images, test.labels)
    return flipped, len(members)
