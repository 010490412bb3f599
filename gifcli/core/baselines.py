"""The unlearning methods people compare against, in the same harness as GIF.

Each one searches its hyper-parameters on the validation split by the task's criterion (the
same rule that chooses GIF's scale), within a budget that is recorded: the candidates are tried
from the mildest edit to the strongest, every one is scored, ties go to the milder one. The wall
time a method reports includes its own search.

* ``ssd``: Selective Synaptic Dampening (Foster et al., AAAI 2024), as its reference code
  computes it: importances are the mean over mini-batches of the squared mini-batch gradient, on
  the training data (D) and on the forget set (D_f); every parameter with D_f > alpha D is
  multiplied by min(lambda D / D_f, 1). Searched: alpha x lambda.
* ``finetune``: SGD on the retained training data from the trained model (the model's own
  momentum and weight decay). Searched: learning rate x epochs (scored after each epoch).
* ``neggrad``: gradient ascent on the forget set. Searched: learning rate x passes.
* ``neggrad+``: NegGrad+ (Kurmanji et al., 2023): descent on retained batches and ascent on
  forget batches, ``beta L_retain - (1 - beta) L_forget``. Searched: learning rate x beta.
* ``retrain``: training from scratch on the retained data with the model's own recipe; the
  reference every gap is measured against (no search).
"""
from __future__ import annotations

import copy
import itertools
import math
import time
from typing import Iterator, Optional

import torch
from torch import nn

from ..config import TrainConfig
from ..data.datasets import Data, Split, batches
from ..errors import NonFiniteError, UsageError
from ..models.specs import set_eval
from .args import Runtime, UnlearnArgs
from .methods import METHODS, Method, MethodOutcome, ModelContext
from .steps import best_row, check_finite_model, check_scored, scored
from .tasks import Scorer, Task
from .walk import shard_batches, to_model

SSD_ALPHAS = (1.0, 3.0, 10.0, 30.0, 100.0)
SSD_LAMBDAS = (0.3, 1.0, 3.0)
FINETUNE_LRS = (0.01, 0.05)
FINETUNE_EPOCHS = 2
NEGGRAD_LRS = (1e-4, 1e-3, 1e-2)
NEGGRAD_PASSES = 3
NEGGRAD_PLUS_LRS = (1e-3, 1e-2)
NEGGRAD_PLUS_BETAS = (0.9, 0.99)
NEGGRAD_PLUS_PASSES = 2


def _search(candidates: Iterator[tuple[dict, nn.Module]], scorer: Scorer, rt: Runtime, method: str,
            total: Optional[int]) -> tuple[nn.Module, list[dict]]:
    """Score each (hyper-parameters, model) in turn; keep the best (ties: the earlier, milder one)."""
    rows: list[dict] = []
    best_model, best = None, None
    for order, (hyper, model) in enumerate(candidates):
        row = {"order": order, **hyper, **scored(scorer, model)}
        rows.append(row)
        rt.report("search", len(rows), total, f"{method} {hyper}")
        if best is None or best_row([best, row], order="order") is row:
            best, best_model = row, copy.deepcopy(model)
    if best_model is None:
        raise UsageError(f"{method}: no candidate could be tried")
    check_scored(rows, method)
    return set_eval(best_model), rows


class SearchMethod(Method):
    """A method whose candidates are edited models, scored on validation by the task's criterion."""

    keys: tuple[str, ...] = ()

    def candidates(self, model: nn.Module, task: Task, data: Data, args: UnlearnArgs, rt: Runtime,
                   ctx: ModelContext) -> Iterator[tuple[dict, nn.Module]]:
        raise NotImplementedError

    def budget(self) -> Optional[int]:
        return None

    def unlearn(self, model: nn.Module, task: Task, data: Data, args: UnlearnArgs, rt: Runtime,
                ctx: ModelContext) -> MethodOutcome:
        start = time.perf_counter()
        scorer = task.scorer(args.scale_criterion, data, model, rt)
        edited, rows = _search(self.candidates(model, task, data, args, rt, ctx), scorer, rt, self.name,
                               self.budget())
        best = best_row(rows, order="order")
        hyper = {k: best[k] for k in self.keys}
        return MethodOutcome(edited, {**hyper, "search_budget": len(rows)}, rows, None, None,
                             time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
def importances(model: nn.Module, split: Split, rt: Runtime) -> list[torch.Tensor]:
    """SSD's importance: the mean over mini-batches of the squared mini-batch-mean loss gradient."""
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    n = torch.zeros((), dtype=torch.float64, device=params[0].device)
    for x, y in shard_batches(split, rt):
        model.zero_grad(set_to_none=True)
        out = model(to_model(x, model))
        (rt.loss(out, y.to(out.device)) / len(y)).backward()
        for t, p in zip(total, params):
            if p.grad is not None:
                t += p.grad.detach() ** 2
        n += 1
    model.zero_grad(set_to_none=True)
    for t in total:
        rt.dist.sum(t)
    count = float(rt.dist.sum(n))
    return [t / max(count, 1.0) for t in total]


def dampen(model: nn.Module, train_imp: list[torch.Tensor], forget_imp: list[torch.Tensor], alpha: float,
           lam: float) -> nn.Module:
    """SSD's edit: theta_i *= min(lam D_i / D_f,i, 1) wherever D_f,i > alpha D_i (a copy)."""
    edited = copy.deepcopy(model)
    with torch.no_grad():
        for p, d, df in zip(edited.parameters(), train_imp, forget_imp):
            where = df > alpha * d
            factor = torch.clamp(lam * d[where] / df[where], max=1.0)
            p[where] = p[where] * factor
    return set_eval(edited)


class SSD(SearchMethod):
    name = "ssd"
    keys = ("alpha", "lambda")

    def budget(self) -> int:
        return len(SSD_ALPHAS) * len(SSD_LAMBDAS)

    def candidates(self, model, task, data, args, rt, ctx):
        model = set_eval(model)
        d = importances(model, data.fit, rt)  # the data the model was trained on, forget set included
        df = importances(model, task.target(data).split, rt)
        # mildest first: a large alpha selects few parameters, a large lambda dampens them little
        for alpha, lam in itertools.product(sorted(SSD_ALPHAS, reverse=True), sorted(SSD_LAMBDAS, reverse=True)):
            yield {"alpha": alpha, "lambda": lam}, dampen(model, d, df, alpha, lam)


# ---------------------------------------------------------------------------------------------
def _optimizer(model: nn.Module, lr: float, ctx: ModelContext) -> torch.optim.Optimizer:
    cfg = ctx.train_config or {}
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                           weight_decay=float(cfg.get("weight_decay", 0.0)))


def _cycle(split: Split, rt: Runtime, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches of ``split``, forever (a new seeded order each pass)."""
    for epoch in itertools.count():
        perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        yield from batches(split, rt.batch_size if rt.batch_size <= 256 else 256, rt.workers,
                           rt.dist.shard(perm))


def _step(model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, rt: Runtime) -> None:
    """One optimiser step; with several ranks the gradients are averaged over them first."""
    if not math.isfinite(float(loss.detach())):
        raise NonFiniteError("the method's training loss is not finite (the learning rate is too large?)")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if rt.dist.enabled:
        for p in model.parameters():
            if p.grad is not None:
                rt.dist.sum(p.grad).div_(rt.dist.world)
    opt.step()


def _mean_loss(model: nn.Module, rt: Runtime, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(to_model(x, model))
    return rt.loss(out, y.to(out.device)) / len(y)


class Finetune(SearchMethod):
    name = "finetune"
    keys = ("lr", "epochs")

    def budget(self) -> int:
        return len(FINETUNE_LRS) * FINETUNE_EPOCHS

    def candidates(self, model, task, data, args, rt, ctx):
        retain = task.retain(data)
        steps = math.ceil(len(retain) / min(rt.batch_size, 256) / rt.dist.world)
        for lr in FINETUNE_LRS:
            torch.manual_seed(args.seed)
            tuned = copy.deepcopy(model).train()
            opt = _optimizer(tuned, lr, ctx)
            stream = _cycle(retain, rt, args.seed)
            for epoch in range(1, FINETUNE_EPOCHS + 1):
                for _ in range(steps):
                    x, y = next(stream)
                    _step(tuned, opt, _mean_loss(tuned, rt, x, y), rt)
                yield {"lr": lr, "epochs": epoch}, set_eval(tuned)
                tuned.train()


class NegGrad(SearchMethod):
    name = "neggrad"
    keys = ("lr", "passes")

    def budget(self) -> int:
        return len(NEGGRAD_LRS) * NEGGRAD_PASSES

    def candidates(self, model, task, data, args, rt, ctx):
        forget = task.target(data).split
        steps = math.ceil(len(forget) / min(rt.batch_size, 256) / rt.dist.world)
        for lr in NEGGRAD_LRS:
            torch.manual_seed(args.seed)
            tuned = copy.deepcopy(model).train()
            opt = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=0.9)
            stream = _cycle(forget, rt, args.seed)
            for passes in range(1, NEGGRAD_PASSES + 1):
                try:
                    for _ in range(steps):
                        x, y = next(stream)
                        _step(tuned, opt, -_mean_loss(tuned, rt, x, y), rt)  # ascent on the forget loss
                    check_finite_model(tuned, "the ascended model")
                except NonFiniteError:
                    break  # diverged: stronger candidates of this learning rate are no better
                yield {"lr": lr, "passes": passes}, set_eval(tuned)
                tuned.train()


class NegGradPlus(SearchMethod):
    name = "neggrad+"
    keys = ("lr", "beta", "passes")

    def budget(self) -> int:
        return len(NEGGRAD_PLUS_LRS) * len(NEGGRAD_PLUS_BETAS) * NEGGRAD_PLUS_PASSES

    def candidates(self, model, task, data, args, rt, ctx):
        forget, retain = task.target(data).split, task.retain(data)
        steps = math.ceil(len(forget) / min(rt.batch_size, 256) / rt.dist.world)
        for lr, beta in itertools.product(NEGGRAD_PLUS_LRS, sorted(NEGGRAD_PLUS_BETAS, reverse=True)):
            torch.manual_seed(args.seed)
            tuned = copy.deepcopy(model).train()
            opt = _optimizer(tuned, lr, ctx)
            f_stream, r_stream = _cycle(forget, rt, args.seed), _cycle(retain, rt, args.seed + 1)
            for passes in range(1, NEGGRAD_PLUS_PASSES + 1):
                try:
                    for _ in range(steps):
                        (xf, yf), (xr, yr) = next(f_stream), next(r_stream)
                        loss = beta * _mean_loss(tuned, rt, xr, yr) - (1 - beta) * _mean_loss(tuned, rt, xf, yf)
                        _step(tuned, opt, loss, rt)
                    check_finite_model(tuned, "the ascended model")
                except NonFiniteError:
                    break
                yield {"lr": lr, "beta": beta, "passes": passes}, set_eval(tuned)
                tuned.train()


class Retrain(Method):
    """Training from scratch without the forget set, with the model's own recipe (no search)."""

    name = "retrain"

    def unlearn(self, model, task, data, args, rt, ctx):
        from ..models.train import train_model

        if ctx.build is None or ctx.train_config is None:
            raise UsageError("retrain needs the model's architecture and training recipe (a checkpoint made by gif "
                             "train records both)")
        start = time.perf_counter()
        cfg = TrainConfig.from_dict({**ctx.train_config, "seed": int(ctx.train_config.get("seed", 0)) + args.seed})
        torch.manual_seed(cfg.seed)
        fresh = ctx.build().to(rt.device)
        train_model(fresh, task.retain(data), cfg, rt.device, None, rt.workers)
        return MethodOutcome(set_eval(fresh), {"epochs": cfg.epochs, "seed": cfg.seed}, [], None, None,
                             time.perf_counter() - start)


for _method in (SSD(), Finetune(), NegGrad(), NegGradPlus(), Retrain()):
    METHODS.register(_method.name, _method)

