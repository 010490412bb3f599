"""``neggrad``: gradient ascent on the forget set (searched: learning rate x passes), and
``neggrad+`` (Kurmanji et al., 2023): each step descends on a retained batch and ascends on a
forget batch, ``beta L_retain - (1 - beta) L_forget``; a pass walks the retained data once while
the forget data is cycled (as Kurmanji et al.'s code does), so a small forget set is seen many
times a pass (searched: learning rate x beta x passes)."""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch

from ..core.edit import check_finite_model
from ..core.methods import METHODS, MethodArgs, arg
from ..core.search import SearchMethod, batch_steps, check_count, check_positive, cycle, mean_loss, optimizer, step
from ..errors import NonFiniteError, UsageError
from ..models.specs import set_eval


@dataclass(frozen=True)
class NegGradArgs(MethodArgs):
    cli_prefix = "neggrad"

    lrs: tuple[float, ...] = arg("learning rates of the ascent to search", (1e-4, 1e-3, 1e-2))
    passes: int = arg("passes over the forget set (every pass is a candidate)", 3)

    def validate(self) -> None:
        check_positive("neggrad lrs", self.lrs)
        check_count("neggrad passes", self.passes)


@dataclass(frozen=True)
class NegGradPlusArgs(MethodArgs):
    cli_prefix = "neggrad-plus"

    # 1e-4 too: on a converged MNIST CNN a full pass at 1e-3 already ascends the forget loss until
    # the retained accuracy falls to chance (benchmarks/results/definitions)
    lrs: tuple[float, ...] = arg("learning rates to search", (1e-4, 1e-3, 1e-2))
    betas: tuple[float, ...] = arg("weights beta of the retained loss to search, in (0, 1)", (0.9, 0.99))
    passes: int = arg("passes over the retained data, the forget data cycled (every pass is a candidate)", 1)

    def validate(self) -> None:
        check_positive("neggrad+ lrs", self.lrs)
        check_count("neggrad+ passes", self.passes)
        if not self.betas or not all(isinstance(b, (int, float)) and 0 < b < 1 for b in self.betas):
            raise UsageError(f"neggrad+ betas must be in (0, 1), got {self.betas}")


class NegGrad(SearchMethod):
    name = "neggrad"
    Args = NegGradArgs
    keys = ("lr", "passes")

    def budget(self, args) -> int:
        return len(args.lrs) * args.passes

    def candidates(self, model, task, data, args, rt, ctx):
        forget = task.target(data).split
        steps = batch_steps(len(forget), rt)
        for lr in args.lrs:
            torch.manual_seed(args.seed)  # inside the search's forked random state
            tuned = copy.deepcopy(model).train()
            opt = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=0.9)
            stream = cycle(forget, rt, args.seed)
            for passes in range(1, args.passes + 1):
                try:
                    for _ in range(steps):
                        x, y = next(stream)
                        step(tuned, opt, -mean_loss(tuned, rt, x, y), rt)  # ascent on the forget loss
                    check_finite_model(tuned, "the ascended model")
                except NonFiniteError:
                    break  # diverged: stronger candidates of this learning rate are no better
                yield {"lr": lr, "passes": passes}, set_eval(tuned)
                tuned.train()


class NegGradPlus(SearchMethod):
    name = "neggrad+"
    Args = NegGradPlusArgs
    keys = ("lr", "beta", "passes")

    def budget(self, args) -> int:
        return len(args.lrs) * len(args.betas) * args.passes

    def candidates(self, model, task, data, args, rt, ctx):
        forget, retain = task.target(data).split, task.retain(data)
        steps = batch_steps(len(retain), rt)  # a pass walks the retained data; the forget data cycles
        for lr, beta in itertools.product(args.lrs, sorted(args.betas, reverse=True)):
            torch.manual_seed(args.seed)
            tuned = copy.deepcopy(model).train()
            opt = optimizer(tuned, lr, ctx)
            f_stream, r_stream = cycle(forget, rt, args.seed), cycle(retain, rt, args.seed + 1)
            for passes in range(1, args.passes + 1):
                try:
                    for _ in range(steps):
                        (xf, yf), (xr, yr) = next(f_stream), next(r_stream)
                        loss = beta * mean_loss(tuned, rt, xr, yr) - (1 - beta) * mean_loss(tuned, rt, xf, yf)
                        step(tuned, opt, loss, rt)
                    check_finite_model(tuned, "the ascended model")
                except NonFiniteError:
                    break
                yield {"lr": lr, "beta": beta, "passes": passes}, set_eval(tuned)
                tuned.train()


METHODS.register("neggrad", NegGrad())
METHODS.register("neggrad+", NegGradPlus())
