"""``finetune``: SGD on the retained training data from the trained model, with the model's own
momentum and weight decay. Searched on validation: learning rate x epochs (scored after each)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..core.methods import METHODS, MethodArgs, arg
from ..core.search import SearchMethod, batch_steps, check_count, check_positive, cycle, mean_loss, optimizer, step
from ..models.specs import set_eval


@dataclass(frozen=True)
class FinetuneArgs(MethodArgs):
    cli_prefix = "finetune"

    lrs: tuple[float, ...] = arg("learning rates to search", (0.01, 0.05))
    epochs: int = arg("passes over the retained data (every pass is a candidate)", 2)

    def validate(self) -> None:
        check_positive("finetune lrs", self.lrs)
        check_count("finetune epochs", self.epochs)


class Finetune(SearchMethod):
    name = "finetune"
    Args = FinetuneArgs
    keys = ("lr", "epochs")

    def budget(self, args) -> int:
        return len(args.lrs) * args.epochs

    def candidates(self, model, task, data, args, rt, ctx):
        retain = task.retain(data)
        steps = batch_steps(len(retain), rt)
        for lr in args.lrs:
            torch.manual_seed(args.seed)  # inside the search's forked random state
            tuned = copy.deepcopy(model).train()
            opt = optimizer(tuned, lr, ctx)
            stream = cycle(retain, rt, args.seed)
            for epoch in range(1, args.epochs + 1):
                for _ in range(steps):
                    x, y = next(stream)
                    step(tuned, opt, mean_loss(tuned, rt, x, y), rt)
                yield {"lr": lr, "epochs": epoch}, set_eval(tuned)
                tuned.train()


METHODS.register("finetune", Finetune())
