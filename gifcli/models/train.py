"""Training loop and evaluation: return values, print nothing."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from ..config import TrainConfig

# (epoch, epochs, step, steps, running loss, running accuracy)
TrainProgress = Optional[Callable[[int, int, int, int, float, float], None]]


@dataclass
class TrainResult:
    seconds: float
    history: list[dict] = field(default_factory=list)  # per epoch: loss, accuracy, lr


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), cfg.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.t_max)
    return None


def train_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    progress: TrainProgress = None,
) -> TrainResult:
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = _scheduler(opt, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = math.ceil(len(y) / cfg.batch_size)
    result = TrainResult(0.0)
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(y), generator=gen)
        total_loss, correct, seen = 0.0, 0, 0
        for step in range(steps):
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            out = model(xb)
            loss = nn.functional.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            seen += len(idx)
            if not math.isfinite(total_loss):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {total_loss})")
            if progress:
                progress(epoch + 1, cfg.epochs, step + 1, steps, total_loss / seen, correct / seen)
        result.history.append(
            {"epoch": epoch + 1, "loss": total_loss / seen, "accuracy": correct / seen, "lr": opt.param_groups[0]["lr"]}
        )
        if sched:
            sched.step()
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


@torch.inference_mode()
def loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy; (nan, nan) on an empty set."""
    if len(y) == 0:
        return float("nan"), float("nan")
    model.eval()
    device = next(model.parameters()).device
    total, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        out = model(xb)
        total += float(nn.functional.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    return total / len(y), correct / len(y)


@torch.inference_mode()
def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)])
