"""A user's own model and data, written the way a user would have them: a model module outside
gifcli, PNG files in an ImageFolder, a tensors file, weights saved by plain PyTorch."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gifcli.data.datasets import load_raw

USER_MODULE = '''
import torch
from torch import nn


class SmallNet(nn.Module):
    """A user's own CNN: two convolutions, max-pooling, one hidden layer."""

    def __init__(self, channels=1, classes=3, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.hidden = nn.Linear(2 * width * 7 * 7, 32)
        self.out = nn.Linear(32, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def build(channels=1, classes=3, width=8):
    return SmallNet(channels, classes, width)


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (a projection when the shape changes), then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class ResBN(nn.Module):
    """A user's BatchNorm + residual net: a stem and two residual blocks, global pooling."""

    def __init__(self, channels=1, classes=4, width=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = Block(width, width, 2)
        self.block2 = Block(width, 2 * width, 2)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def build_resbn(channels=1, classes=4, width=16):
    return ResBN(channels, classes, width)


def broken(**kwargs):
    raise RuntimeError("this architecture cannot be built")
'''


def write_user_module(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "netdef.py"
    path.write_text(USER_MODULE)
    return path


def digits(data_dir: Optional[Path], per_class_train: int, per_class_test: int, labels: list[int], seed: int = 0):
    """uint8 (N, 28, 28) MNIST images of ``labels`` (real MNIST where found, else the fake digits)."""
    out = {}
    rng = np.random.default_rng(seed)
    for split, per in (("train", per_class_train), ("test", per_class_test)):
        raw = load_raw("mnist", split, str(data_dir) if data_dir else None, download=False)
        xs, ys = [], []
        for k in labels:
            idx = torch.nonzero(raw.labels == k).reshape(-1).numpy()
            take = rng.choice(idx, size=min(per, len(idx)), replace=False)
            xs.append(raw.images[take, 0])
            ys.append(torch.full((len(take),), labels.index(k), dtype=torch.int64))
        out[split] = (torch.cat(xs), torch.cat(ys))
    return out


def write_image_folder(root: Path, arrays: dict, classes: list[str]) -> Path:
    """``root/{train,test}/<class>/<n>.png`` from uint8 (N, 28, 28) images."""
    from PIL import Image

    for split, (x, y) in arrays.items():
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(x, y)):
            Image.fromarray(img.numpy(), mode="L").save(root / split / classes[int(label)] / f"{i:05d}.png")
    return root


def train_plain(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 8, lr: float = 0.05,
                seed: int = 0, cosine: bool = False) -> torch.nn.Module:
    """Plain PyTorch training, as a user would do it before gif exists (SGD, momentum 0.9, weight
    decay 5e-4, batch 32; a constant learning rate, or cosine-annealed over the epochs)."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if cosine else None
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 32):
            idx = perm[i:i + 32]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
    return model.eval()
