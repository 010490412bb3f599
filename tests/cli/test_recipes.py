"""The paper's recipes as configs a user runs: VGG-11 on CIFAR-10 (Table 2), end to end on a tiny
CIFAR-shaped ``tensors:`` file (CIFAR-10 itself is not needed to check the path)."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from gifcli import load_checkpoint
from gifcli.data.tensorfile import write_tensors

from .conftest import invoke

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def train_recipe(runner, tmp_path, config: str, data, epochs: int, keys: tuple):
    """Train the shipped recipe ``config`` on ``data`` for ``epochs``; check that ``keys`` are recorded
    as the recipe has them; return (checkpoint, model, metadata)."""
    recipe = yaml.safe_load((CONFIGS / config).read_text())
    ckpt = tmp_path / "model.safetensors"
    r = invoke(runner, ["train", "--config", CONFIGS / config, "--dataset", f"tensors:{data}",
                        "--epochs", epochs, "--out", ckpt, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    model, meta = load_checkpoint(ckpt)
    trained = meta["train_config"]
    for key in keys:  # the recipe, as recorded
        assert trained[key] == recipe[key], (key, trained)
    return ckpt, model, meta


def test_vgg11_cifar_recipe_trains_and_removes_a_class(runner, tmp_path):
    gen = torch.Generator().manual_seed(0)
    classes = 10
    # class k: a noisy image whose mean colour depends on k, so one epoch learns something
    def images(per_class):
        y = torch.arange(classes).repeat_interleave(per_class)
        base = torch.stack([torch.tensor([k % 3, (k // 3) % 3, k / 9], dtype=torch.float32) for k in y.tolist()])
        x = base[:, :, None, None] * 80 + torch.rand(len(y), 3, 32, 32, generator=gen) * 90
        return x.clamp(0, 255).to(torch.uint8), y

    (tx, ty), (vx, vy) = images(12), images(3)
    data = tmp_path / "cifar_shaped.safetensors"
    write_tensors(data, tx, ty, vx, vy, [f"c{k}" for k in range(classes)])
    ckpt, model, meta = train_recipe(runner, tmp_path, "cifar10_vgg11.yaml", data, 1,
                                     ("lr", "momentum", "weight_decay", "batch_size", "scheduler"))
    assert type(model).__name__ == "VGG11" and meta["input_shape"] == [3, 32, 32]
    run = tmp_path / "run"
    r = invoke(runner, ["remove-class", "--label", 3, "--model", ckpt, "--hessian-samples", 32, "--max-iter", 5,
                        "--newton-steps", 1, "--scale", "1,4,16", "--out-dir", run, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = json.loads((run / "report.json").read_text())
    assert report["influence"]["stats"]["hvp_products"] > 0
    assert report["model"] == str(ckpt)


def test_resnet18_mnist_recipe_is_torchvisions_model_on_repeated_grey(runner, tmp_path):
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat_interleave(6)
    x = (torch.rand(len(y), 28, 28, generator=gen) * 60 + y[:, None, None] * 19).clamp(0, 255).to(torch.uint8)
    data = tmp_path / "mnist_shaped.safetensors"
    write_tensors(data, x, y, x[::3], y[::3], [str(k) for k in range(10)])
    _, model, meta = train_recipe(runner, tmp_path, "mnist_resnet18.yaml", data, 2,
                                  ("lr", "momentum", "weight_decay", "batch_size", "scheduler", "channels"))
    import torchvision

    assert isinstance(model, torchvision.models.ResNet) and meta["input_shape"] == [3, 28, 28]
    assert model.conv1.in_channels == 3 and model.conv1.kernel_size == (7, 7)  # torchvision's own stem, unchanged
    # the cosine schedule spans the run's epochs, also when --epochs overrides the recipe's
    assert [h["lr"] for h in meta["history"]] == pytest.approx([0.1, 0.05])


@pytest.mark.parametrize("path", sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")
                                        if "epochs" in yaml.safe_load(p.read_text())))
def test_every_training_recipe_shipped_is_a_valid_config(path):
    from gifcli.config import load_train_config

    cfg = load_train_config(CONFIGS / path)
    assert cfg.epochs == yaml.safe_load((CONFIGS / path).read_text())["epochs"]
