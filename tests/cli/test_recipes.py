"""The paper's recipes as configs a user runs: VGG-11 on CIFAR-10 (Table 2), end to end on a tiny
CIFAR-shaped ``tensors:`` file (CIFAR-10 itself is not needed to check the path)."""
import json
from pathlib import Path

import torch
import yaml

from gifcli import load_checkpoint
from gifcli.data.tensorfile import write_tensors

from .conftest import invoke

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


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
    recipe = yaml.safe_load((CONFIGS / "cifar10_vgg11.yaml").read_text())
    ckpt = tmp_path / "vgg11.safetensors"
    r = invoke(runner, ["train", "--config", CONFIGS / "cifar10_vgg11.yaml", "--dataset", f"tensors:{data}",
                        "--epochs", 1, "--out", ckpt, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    model, meta = load_checkpoint(ckpt)
    assert type(model).__name__ == "VGG11" and meta["input_shape"] == [3, 32, 32]
    trained = meta["train_config"]
    for key in ("lr", "momentum", "weight_decay", "batch_size", "scheduler"):  # the recipe, as recorded
        assert trained[key] == recipe[key], (key, trained)
    run = tmp_path / "run"
    r = invoke(runner, ["remove-class", "--label", 3, "--model", ckpt, "--hessian-samples", 32, "--max-iter", 5,
                        "--newton-steps", 1, "--scale", "1,4,16", "--out-dir", run, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = json.loads((run / "report.json").read_text())
    assert report["influence"]["stats"]["hvp_products"] > 0
    assert report["model"] == str(ckpt)
