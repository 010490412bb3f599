"""``retrain``: training from scratch without the forget set, with the model's own recipe: the
reference every gap is measured against (no search)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..core.methods import METHODS, Method, MethodArgs, MethodOutcome
from ..errors import UsageError
from ..models.specs import set_eval


@dataclass(frozen=True)
class RetrainArgs(MethodArgs):
    """Retraining takes no arguments of its own: the recipe is the model's (its seed is offset by
    the run's seed)."""


class Retrain(Method):
    name = "retrain"
    Args = RetrainArgs
    reference = True  # gif compare measures every other cell of a seed against this one

    def unlearn(self, model, task, data, args, rt, ctx):
        from ..models.train import train_model

        if ctx.build is None or ctx.train_config is None:
            raise UsageError("retrain needs the model's architecture and training recipe (a checkpoint made by gif "
                             "train records both)")
        start = time.perf_counter()
        cfg = TrainConfig.from_dict({**ctx.train_config, "seed": int(ctx.train_config.get("seed", 0)) + args.seed})
        devices = [rt.device] if rt.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the caller's random state is left as it was
            torch.manual_seed(cfg.seed)
            fresh = ctx.build().to(rt.device)
            train_model(fresh, task.retain(data), cfg, rt.device, None, rt.workers)
        return MethodOutcome(set_eval(fresh), {"epochs": cfg.epochs, "seed": cfg.seed}, [], {},
                             time.perf_counter() - start)


METHODS.register("retrain", Retrain())
