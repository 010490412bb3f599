"""Training loop: SGD over a Split streamed through a DataLoader; returns values, prints nothing."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from ..config import TrainConfig
from ..data.datasets import Split, batches
from ..errors import NonFiniteError

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
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.t_max or cfg.epochs)
    return None


def train_model(model: nn.Module, split: Split, cfg: TrainConfig, device: torch.device,
                progress: TrainProgress = None, workers: int = 0) -> TrainResult:
    """Train ``model`` in place on ``split`` with ``cfg``'s SGD recipe (seeded: same seed, same
    weights). Random layers draw from torch's generator seeded with ``cfg.seed`` inside a forked
    random state: the caller's is left as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        return _train(model, split, cfg, device, progress, workers)


def _train(model: nn.Module, split: Split, cfg: TrainConfig, device: torch.device, progress: TrainProgress,
           workers: int) -> TrainResult:
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = _scheduler(opt, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = math.ceil(len(split) / cfg.batch_size)
    result = TrainResult(0.0)
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(split), generator=gen)
        total_loss, correct, seen = 0.0, 0, 0
        for step, (xb, yb) in enumerate(batches(split, cfg.batch_size, workers, perm)):
            xb, yb = xb.to(device, next(model.parameters()).dtype), yb.to(device)
            out = model(xb)
            loss = nn.functional.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            seen += len(yb)
            if not math.isfinite(total_loss):
                raise NonFiniteError(f"training diverged at epoch {epoch + 1} (loss {total_loss}); lower the lr")
            if progress:
                progress(epoch + 1, cfg.epochs, step + 1, steps, total_loss / seen, correct / seen)
        result.history.append(
            {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1),
             "lr": opt.param_groups[0]["lr"]}
        )
        if sched:
            sched.step()
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
