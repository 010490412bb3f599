"""The dumb way: explicit Hessians and gradients in float64, for reference answers."""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


def flat_loss_fn(model: nn.Module, batches, loss_sum):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    numels = [p.numel() for _, p in model.named_parameters()]
    total = sum(len(y) for _, y in batches)

    def f(flat: torch.Tensor) -> torch.Tensor:
        parts = [c.view(s) for c, s in zip(torch.split(flat, numels), shapes)]
        params = dict(zip(names, parts))
        out = 0.0
        for x, y in batches:
            out = out + loss_sum(functional_call(model, params, (x,)), y)
        return out / total

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return f, theta


def explicit_hessian(model, batches, loss_sum) -> torch.Tensor:
    f, theta = flat_loss_fn(model, batches, loss_sum)
    return torch.autograd.functional.hessian(f, theta)


def explicit_gradient(model, batches, loss_sum) -> torch.Tensor:
    f, theta = flat_loss_fn(model, batches, loss_sum)
    theta = theta.clone().requires_grad_(True)
    return torch.autograd.grad(f(theta), theta)[0]


class TanhMLP(nn.Module):
    def __init__(self, d_in=3, hidden=4, classes=3):
        super().__init__()
        self.l1 = nn.Linear(d_in, hidden)
        self.l2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


def batches_of(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]
