from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gifcli.cli import app


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner, args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": "mlp", "hidden": 16, "dataset": "mnist", "epochs": 3, "batch_size": 32,
                                    "lr": 0.05, "scheduler": "none", "seed": 0}))
    return path


@pytest.fixture(scope="session")
def tiny_model(runner, tiny_config, fake_mnist, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    r = invoke(runner, ["train", "--config", tiny_config, "--out", out, "--data-dir", fake_mnist, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return out


def refused(r, needle, out=None, code=1):
    """One line naming the problem, the exit code, no traceback, and no output (nor temporary) file."""
    assert r.exit_code == code, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert needle.lower() in r.output.lower(), r.output
    if out is not None:
        assert not (out.exists() and out.is_file()), f"{out} was written"
        assert not list(out.parent.glob(f".{out.name}.*")), "a temporary file was left behind"


def hand_accuracy(checkpoint, data_dir, split: str = "test", labels=None, exclude=None) -> float:
    """A checkpoint's accuracy computed the simple way, outside gif's evaluation code: the raw
    uint8 MNIST-layout images, scaled and normalised with the mean/std the checkpoint records,
    one forward pass. ``labels``: only these classes; ``exclude``: all but this class."""
    import torch

    from gifcli import load_checkpoint
    from gifcli.data.datasets import load_raw

    model, meta = load_checkpoint(checkpoint)
    raw = load_raw("mnist", split, str(data_dir), download=False)
    keep = torch.ones(len(raw.labels), dtype=torch.bool)
    if labels is not None:
        keep &= torch.isin(raw.labels, torch.tensor(list(labels)))
    if exclude is not None:
        keep &= raw.labels != exclude
    mean, std = meta["dataset"]["mean"][0], meta["dataset"]["std"][0]
    x = (raw.images[keep].float() / 255.0 - mean) / std
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    return float((pred == raw.labels[keep]).double().mean())
