"""The paper's models, small enough to read at once, registered by name.

Every model is rebuilt from its architecture spec (see specs.py), the data's input shape and
class count, and the recorded keyword arguments, which every checkpoint stores before its weights.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..registry import Registry

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")


class PaperCNN(nn.Module):
    """The paper's custom CNN: four 3x3 stride-2 convolutions (1->32->64->128->256) and one Linear."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths=(32, 64, 128, 256)) -> None:
        super().__init__()
        layers, c = [], input_shape[0]
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n = self.features(torch.zeros(1, *input_shape)).numel()
        self.fc = nn.Linear(n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class MLP(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        n = 1
        for d in input_shape:
            n *= d
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LogReg(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        n = 1
        for d in input_shape:
            n *= d
        self.linear = nn.Linear(n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 (3x3 stem, no max-pool), as in the paper's code; 1 or 3 channels."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.linear(self.pool(out).flatten(1))


class VGG11(nn.Module):
    """CIFAR-style VGG-11 with BatchNorm; ceil-mode pooling so 28x28 inputs work too."""

    CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers, c = [], input_shape[0]
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


# Built-ins register exactly as a user's architecture would: a builder called with the data's
# input shape and class count, plus the checkpoint's recorded keyword arguments.
ARCHITECTURES.register("cnn", lambda input_shape, num_classes, widths=(32, 64, 128, 256): PaperCNN(
    input_shape, num_classes, tuple(widths)))
ARCHITECTURES.register("mlp", lambda input_shape, num_classes, hidden=128: MLP(input_shape, num_classes, hidden))
ARCHITECTURES.register("logreg", lambda input_shape, num_classes: LogReg(input_shape, num_classes))
ARCHITECTURES.register("resnet18", lambda input_shape, num_classes: ResNet18(input_shape, num_classes))
ARCHITECTURES.register("vgg11", lambda input_shape, num_classes: VGG11(input_shape, num_classes))
