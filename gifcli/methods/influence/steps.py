"""gif's steps: select J -> stationarity -> influence -> scale search (the edit itself is
:func:`gifcli.core.edit.edited_copy`).

Each step takes a model, data splits and a Runtime and returns values; ``gif select``, ``gif
influence`` and ``gif apply`` call these same functions one at a time and the method calls them in
a row, so a hand-run chain and ``remove-class`` give the same weights.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from ...core.args import Runtime, UnlearnArgs
from ...core.edit import check_finite_model, edited_copy, space_of
from ...core.passes import masked_outputs, shard_batches, summed_gradient
from ...core.search import best_row, check_scored, rank, scored
from ...core.tasks import Scorer, Target
from ...data.datasets import BATCH, Split, batches
from ...errors import GifError, NonFiniteError, UsageError
from ...math.hvp import HessianSample, loss_gradient_sum
from ...math.params import IndexSet
from ...math.selection import HOOK_CRITERIA, Selection, SelectionError, gradient_scores, output_sums
from ...math.selection import select as select_J
from ...math.solvers import SolverArgumentError
from ...models.specs import set_eval
from .lstsq import VARIANTS, InfluenceResult
from .lstsq import influence as solve_influence

GRAPH_BUDGET_SHARE = 0.5  # hvp-mode auto: the kept graphs may use this share of free memory


def target_gradient(model: nn.Module, target: Target, pool_size: int, rt: Runtime) -> torch.Tensor:
    """g of the sign convention: the forget samples' summed loss gradient / |Hessian pool|.

    For a relabelling, ``g = grad[L(x, trained labels) - L(x, true labels)]`` / |pool|.
    """
    g, _ = summed_gradient(model, target.split, rt)
    if target.true_labels is not None:
        g_true, _ = summed_gradient(model, target.split.relabel(target.true_labels), rt)
        g = g - g_true
    return g / pool_size


TARGETS = ("auto", "forget", "remaining", "forget-then-remaining", "masked")
# the most re-linearised steps when --newton-steps is not given: toward the masked outputs each step
# moves them part of the way, and on the converged CNN validation kept choosing steps up to the
# seventh; a Newton step on the retained objective converges in fewer (docs/methods.md)
STEP_CAPS = {"masked": 8}
NEWTON_STEPS = 3


def step_cap(given: Optional[int], target: str) -> int:
    """The most steps of an edit whose steps aim at ``target``: ``given``, else the target's cap."""
    return given if given is not None else STEP_CAPS.get(target, NEWTON_STEPS)


def soft_cross_entropy_sum(outputs_: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_i CE(z_i, q_i) = -sum_i sum_k q_ik log softmax(z_i)_k, for soft targets q."""
    return -(targets.to(outputs_.dtype) * torch.log_softmax(outputs_, 1)).sum()


def masked_target_gradient(model: nn.Module, target: Target, wanted: torch.Tensor, pool_size: int,
                           rt: Runtime) -> torch.Tensor:
    """The right-hand side of ``--target masked``: minus the gradient of sum_i CE(z(x_i), q_i) over the
    forget samples, / |Hessian pool|, with ``wanted`` the fixed target rows q (:func:`masked_outputs`
    of the unedited model). Minus, so that ``theta_J - scale * delta`` descends toward q under gif's
    sign convention (delta solves H_J delta = -rhs). At the unedited weights it is the paper's g with
    each image weighted by p / (1 - p), p the model's probability of the masked label."""
    split = target.split
    positions = rt.dist.shard(torch.arange(len(split)))
    rows = wanted[positions]

    def pairs():
        done = 0
        for x, _ in batches(split, BATCH, rt.workers, positions):
            yield x, rows[done:done + len(x)]
            done += len(x)

    total, _ = loss_gradient_sum(model, pairs(), soft_cross_entropy_sum, rt.dist.sum if rt.dist.enabled else None)
    if not bool(torch.isfinite(total).all()):
        raise NonFiniteError("the gradient toward the masked outputs is not finite")
    return -total / pool_size
# the stationarity check warns when the training objective's gradient at theta is larger than the
# forget set's own: there the forget gradient alone no longer stands for minus the remaining one
STATIONARITY_WARN_RATIO = 1.0


def retained_gradient(model: nn.Module, retain: Split, samples: int, seed: int, pool_size: int, rt: Runtime,
                      weight_decay: float = 0.0) -> tuple[torch.Tensor, int]:
    """G = grad of the retained objective, normalised like ``g``: sum over ``retain`` of the loss
    gradient / |Hessian pool| (+ weight_decay * theta, the objective's decay term).

    Estimated on ``samples`` of ``retain`` drawn under ``seed`` (all of it for 0 or more than it
    holds), scaled up by |retain| / samples. Returns (G, the number of samples it was measured on).
    """
    part = retain if samples <= 0 or samples >= len(retain) else retain.sample(samples, seed)
    if len(part) == 0:
        raise GifError("no retained training data to measure the training loss's gradient on")
    total, n = summed_gradient(model, part, rt)
    G = total * (len(retain) / (n * pool_size))
    if weight_decay:
        G = G + weight_decay * parameters_to_vector(model.parameters()).detach().to(G.dtype)
    return G, n


def gradients(model: nn.Module, target: Target, pool_size: int, retain: Split, args: UnlearnArgs, rt: Runtime,
              weight_decay: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(g, G, the stationarity record): the forget gradient and the retained objective's gradient
    (:func:`retained_gradient`), both normalised by |Hessian pool|; g + G is the training objective's."""
    g = target_gradient(model, target, pool_size, rt)
    G, n = retained_gradient(model, retain, args.gradient_samples, args.seed, pool_size, rt, weight_decay)
    training = float((g + G).norm())
    record = {"target": args.target, "forget_gradient_norm": float(g.norm()),
              "training_gradient_norm": training, "retained_gradient_norm": float(G.norm()),
              "ratio": training / max(float(g.norm()), 1e-300), "samples": n, "retained_size": len(retain),
              "weight_decay": weight_decay}
    return g, G, record


# ---------------------------------------------------------------------------------------------
# how far the model is from a stationary point of its training objective
STATIONARITY_COHERENCE = 0.05  # above it, the model is off its optimum (measured: see docs/methods.md)
STATIONARITY_BATCH = 128  # the batch whose means give the per-sample gradients' spread
STATIONARITY_UNBOUNDED = 1e6  # recorded when the gradients have no spread but a non-zero mean
STATIONARITY_START = 2048  # the first sample; doubled while the decision is within two standard errors


def gradient_coherence(model: nn.Module, training: Split, seed: int, rt: Runtime, weight_decay: float = 0.0,
                       start: int = STATIONARITY_START, threshold: float = STATIONARITY_COHERENCE) -> dict:
    """How far ``model`` is from a stationary point of its training objective, in a unit that does
    not depend on the forget set: the coherence ``c = |mu| / sigma`` of the per-sample gradients,
    with ``mu`` their mean (+ weight_decay * theta) and ``sigma^2`` the trace of their covariance.

    A converged model's mean gradient is at the level of its own sampling noise (``c`` near 0); a
    model still descending has a mean that stands out of the noise. ``sigma^2`` comes from the spread
    of means over batches of :data:`STATIONARITY_BATCH`; ``|mu|^2`` is debiased by the noise a mean
    of ``n`` samples carries (``sigma^2 / n``). The sample starts at ``start`` samples of
    ``training`` (drawn under ``seed``) and doubles while ``c`` is within two standard errors
    (``1 / sqrt(n)``) of ``threshold``, up to the whole training set.
    Returns the record: ``coherence``, ``standard_error``, ``samples``, ``stationary`` and the norms.
    """
    order = torch.randperm(len(training), generator=torch.Generator().manual_seed(seed + 7))
    local: Optional[torch.Tensor] = None  # this rank's summed gradient
    squares, count_batches, count, used = 0.0, 0, 0, 0
    target = min(start, len(training))
    batch = max(1, min(STATIONARITY_BATCH, target // 4))  # at least four batches to measure their spread
    theta = parameters_to_vector(model.parameters()).detach() if weight_decay else None
    while True:
        block = order[used:target].sort().values
        used = target
        for x, y in batches(training.where(block), batch, rt.workers, rt.dist.shard(torch.arange(len(block)))):
            s, k = loss_gradient_sum(model, [(x, y)], rt.loss)
            s = s.double()
            squares += float((s / k).pow(2).sum())
            count_batches, count = count_batches + 1, count + k
            local = s if local is None else local + s
        total = rt.dist.sum(local.clone()) if local is not None else None
        if total is None:
            raise GifError("no training data to measure the model's stationarity on")
        squares_all, k_all, n = rt.dist.sum_scalars(squares, count_batches, count)
        mean_loss_gradient = total / n
        mean = mean_loss_gradient if theta is None else mean_loss_gradient + weight_decay * theta.to(total.dtype)
        # the trace of the covariance of one batch's mean gradient, then of one sample's
        batch_spread = (squares_all - k_all * float(mean_loss_gradient.pow(2).sum())) / max(k_all - 1, 1)
        sigma2 = max(batch_spread, 0.0) * batch
        mean2 = float(mean.pow(2).sum())
        if sigma2 > 0:
            coherence = math.sqrt(max(mean2 / sigma2 - 1.0 / n, 0.0))
        else:  # every sample's gradient the same: stationary exactly when that gradient is zero
            coherence = 0.0 if mean2 == 0 else STATIONARITY_UNBOUNDED
        error = 1.0 / math.sqrt(n)
        decided = abs(coherence - threshold) > 2 * error
        if decided or target >= len(training):
            break
        target = min(2 * target, len(training))
    return {"coherence": coherence, "threshold": threshold, "standard_error": error, "samples": int(n), "batch": batch,
            "training_size": len(training), "mean_gradient_norm": math.sqrt(mean2),
            "sample_gradient_spread": math.sqrt(sigma2), "resolved": decided,
            "stationary": coherence <= threshold, "weight_decay": weight_decay}



def stationarity_record(coherence: dict, g: torch.Tensor, pool_size: int) -> dict:
    """What the edit's files record of the model's stationarity: the coherence measurement and, in
    the units of ``g`` (summed over the forget set / |Hessian pool|), the training objective's
    gradient estimated from the same sample (debiased: the part that stands out of the sampling
    noise) and its ratio to the forget set's own."""
    # the mean gradient's norm less the noise a mean of `samples` carries: 0 where it is all noise
    debiased = coherence["coherence"] * coherence["sample_gradient_spread"]
    training = debiased * coherence["training_size"] / pool_size
    forget = float(g.norm())
    return {**coherence, "forget_gradient_norm": forget, "training_gradient_norm": training,
            "ratio": training / max(forget, 1e-300)}


def resolve_target(requested: str, stationary: bool, step: int = 1, at_optimum: str = "forget") -> str:
    """The gradient a step's edit is of: ``auto`` is the task's target at a stationary point
    (``at_optimum``: the paper's ``forget``, or ``masked`` for a class) and ``remaining`` (a Newton
    step on the retained objective) off it."""
    if requested == "auto":
        return at_optimum if stationary else "remaining"
    if requested == "forget-then-remaining":
        return "forget" if step == 1 else "remaining"
    return requested


def right_hand_side(model: nn.Module, target: Target, pool_size: int, retain: Split, args: UnlearnArgs,
                    rt: Runtime, weight_decay: float = 0.0, training: Optional[Split] = None
                    ) -> tuple[torch.Tensor, dict]:
    """The gradient the influence is of, and the stationarity record.

    ``forget`` (the paper's): ``g``, the forget samples' gradient. ``remaining``: ``-G``, minus
    the retained objective's gradient at theta, so that ``theta - delta`` is a Newton step on the
    retained objective; at a stationary point of the training objective (g + G = 0) the two agree,
    elsewhere only ``remaining`` points at the retained data's optimum. ``auto`` measures the
    model's stationarity on ``training`` (:func:`gradient_coherence`) and takes ``forget`` at a
    stationary point, ``remaining`` off it. ``forget-then-remaining`` is ``forget`` here.
    """
    if args.target == "auto" and training is None:
        raise UsageError("--target auto measures the model's stationarity on its training data: none was given")
    if args.target == "remaining" or training is None:
        g, G, record = gradients(model, target, pool_size, retain, args, rt, weight_decay)
        return (-G if args.target == "remaining" else g), record
    g = target_gradient(model, target, pool_size, rt)
    record = stationarity_record(gradient_coherence(model, training, args.seed, rt, weight_decay), g, pool_size)
    mode = resolve_target(args.target, record["stationary"])
    record["target"] = mode
    if mode == "remaining":
        G, n = retained_gradient(model, retain, args.gradient_samples, args.seed, pool_size, rt, weight_decay)
        record.update({"retained_gradient_norm": float(G.norm()), "retained_samples": n})
        return -G, record
    if mode == "masked":
        return masked_target_gradient(model, target, masked_outputs(model, target.split, rt), pool_size, rt), record
    return g, record


def stationarity_warning(record: Optional[dict]) -> Optional[str]:
    """A one-line warning when the edit is the paper's (``forget``) on a model off its optimum."""
    if not record or record.get("target") != "forget":
        return None
    if "coherence" in record:
        if record["stationary"]:
            return None
        return (f"the model is off a stationary point of its training loss: its gradients' coherence "
                f"{record['coherence']:.3f} > {record['threshold']:g} on {record['samples']} samples; "
                f"--target auto or remaining takes Newton steps on the retained data")
    if record["ratio"] <= STATIONARITY_WARN_RATIO:
        return None
    return (f"the model is far from a stationary point of its training loss: |grad L(theta)| = "
            f"{record['training_gradient_norm']:.3g}, {record['ratio']:.1f}x the forget set's |g| = "
            f"{record['forget_gradient_norm']:.3g}; --target remaining takes a Newton step on the retained data")


def select(model: nn.Module, target: Target, args: UnlearnArgs, rt: Runtime, pool_size: int) -> Selection:
    """J chosen on the forget samples by ``args.criterion`` at ``args.ratio``."""
    scores = None
    try:
        if args.criterion in HOOK_CRITERIA:
            sums, count = output_sums(model, shard_batches(target.split, rt), args.output_score)
            for s in sums.values():
                rt.dist.sum(s)
            count = int(rt.dist.sum_scalars(count)[0])
            scores = {n: s.cpu() / max(count, 1) for n, s in sums.items()}
        elif args.criterion == "topk-gradients":
            scores = gradient_scores(model, target_gradient(model, target, pool_size, rt).cpu())
        selection = select_J(model, args.criterion, args.ratio, scores, args.seed, args.threshold)
    except SelectionError as exc:
        raise UsageError(str(exc)) from None
    if selection.J.size == 0:
        raise UsageError(f"ratio {args.ratio:g} selects no parameter of this model: raise --ratio")
    return selection


# ---------------------------------------------------------------------------------------------
@dataclass
class InfluenceRun:
    """The influence vector over J and what produced it (no timings in ``info``: see io/files.py)."""

    delta: torch.Tensor
    J: IndexSet
    info: dict = field(default_factory=dict)  # what decided the result: goes into the influence file
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)  # what this machine had (memory budget): report only
    hessian_seconds: float = 0.0  # of ``seconds``: drawing the Hessian sample (and its preconditioner)


def free_memory(device: torch.device) -> int:
    """Bytes free on the device (CUDA: the driver's count; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def hessian_sample(model: nn.Module, pool: Split, args: UnlearnArgs, rt: Runtime,
                   weight_decay: float = 0.0) -> tuple[HessianSample, dict]:
    """The Hessian sample (``args.hessian_samples`` of ``pool`` under ``args.seed``), this rank's shard.

    Its batches are decoded once into CPU memory (the sample is what the Hessian is of) and
    moved to the device as products use them. ``hvp_mode auto`` keeps the first-order graphs
    when their measured size fits the budget, and recomputes them otherwise (recorded).
    """
    sample = pool.sample(args.hessian_samples, args.seed)
    if len(sample) == 0:
        raise GifError("the Hessian pool is empty: no training data remains")
    positions = rt.dist.shard(torch.arange(len(sample)))
    local = list(batches(sample, BATCH, rt.workers, positions))
    mode = args.hvp_mode if args.hvp_mode != "auto" else "retain"
    hess = HessianSample(model, local, rt.loss, mode=mode, total=len(sample),
                         reduce=rt.dist.sum if rt.dist.enabled else None, weight_decay=weight_decay)
    info: dict = {"samples": len(sample), "seed": args.seed, "batch_size": BATCH, "pool_size": len(pool),
                  "data": args.hessian_data, "hvp_mode": mode, "weight_decay": weight_decay,
                  "ranks": rt.dist.world}
    if args.hvp_mode == "auto":
        per_batch = hess.graph_bytes()
        # every rank decides alike: the largest need against the smallest budget
        need, neg_budget = rt.dist.max_scalars(per_batch * len(local),
                                               -(args.memory_budget or GRAPH_BUDGET_SHARE * free_memory(rt.device)))
        budget = -neg_budget
        if need > budget:
            hess.mode = "recompute"
        info.update({"hvp_mode": hess.mode, "hvp_mode_requested": "auto", "graph_bytes_estimate": int(need)})
        info["_budget"] = int(budget)  # the machine's, not the run's: kept out of the files
    return hess, info


def influence(model: nn.Module, J: Optional[IndexSet], target: Target, pool: Split, args: UnlearnArgs,
              rt: Runtime, weight_decay: float = 0.0, retain: Optional[Split] = None,
              rhs: Optional[tuple[torch.Tensor, dict]] = None, training: Optional[Split] = None) -> InfluenceRun:
    """delta over J: the least-squares solution of ``A delta = b`` for ``args.method`` (lstsq.py).

    ``retain``: the data a retrained model is trained on (default: ``pool``); the retained
    objective's gradient is measured on it (``args.target``, :func:`right_hand_side`).
    ``rhs``: (the gradient, its stationarity record) computed by the caller instead.
    """
    if rhs is None:
        model = set_eval(model.to(rt.device))
        check_finite_model(model)
        rhs = right_hand_side(model, target, len(pool), pool if retain is None else retain, args, rt, weight_decay,
                              training)
    return influences(model, J, target, pool, args, rt, weight_decay, [rhs])[0]


def influences(model: nn.Module, J: Optional[IndexSet], target: Target, pool: Split, args: UnlearnArgs,
               rt: Runtime, weight_decay: float, rhs: Sequence[tuple[torch.Tensor, dict]]) -> list[InfluenceRun]:
    """:func:`influence` of several right-hand sides (gradient, stationarity record) at one theta:
    one Hessian sample (and one preconditioner) serves every solve."""
    start = time.perf_counter()
    model = set_eval(model.to(rt.device))
    check_finite_model(model)
    if args.method == "grad":  # the first-order baseline: delta = -g_J
        if J is None:
            raise UsageError("method grad needs an index set J")
        out = []
        for g, stationarity in rhs:
            stats = {"solver": "none", "iterations": 0, "hvp_products": 0, "converged": True}
            info = {"method": "grad", "solver": "none", "stats": stats, "target": target.describe,
                    "gradient_norm": float(g.norm()), "stationarity": stationarity, "device": str(rt.device),
                    "dtype": str(g.dtype).replace("torch.", "")}
            out.append(InfluenceRun(-J.gather(g).detach().cpu(), J, info, time.perf_counter() - start, stats))
        return out
    if args.method not in VARIANTS:
        raise UsageError(f"method {args.method!r} has no influence vector; use one of gif, fif, pif, if, grad")
    if J is None:
        J = IndexSet.everything(space_of(model))
    hess, hinfo = hessian_sample(model, pool, args, rt, weight_decay)
    environment = {"graph_budget_bytes": hinfo.pop("_budget")} if "_budget" in hinfo else {}
    runs: list[InfluenceRun] = []
    try:
        P, pinfo = None, None
        if args.preconditioner == "kfac":
            from ...math.kfac import preconditioner

            rt.report("precondition", 0, None, "K-FAC factors")
            kfac = preconditioner(model, hess.batches, rt.loss, hess.n_samples, J, weight_decay, args.kfac_damping,
                                  hess.reduce if rt.dist.enabled else None, args.seed)
            P, pinfo = kfac.apply, kfac.info
        setup = time.perf_counter() - start

        def progress(i: int, total: int, residual: float) -> None:
            rt.report("solve", i, total, f"rel. residual {residual:.2e}")

        for g, stationarity in rhs:
            t0 = time.perf_counter()
            try:
                result: InfluenceResult = solve_influence(args.method, hess, J, g, args.solver_options(), progress, P)
            except (SolverArgumentError, SelectionError) as exc:
                raise UsageError(str(exc)) from None
            stats = result.stats
            if not bool(torch.isfinite(result.delta).all()):
                raise NonFiniteError(f"the {args.solver} solver produced non-finite values "
                                     f"({stats.message or 'diverged'})")
            info = {
                "method": args.method,
                "solver": args.solver,
                "solver_options": {"tol": args.tol, "max_iter": args.max_iter, "damping": args.damping,
                                   "recurrence": args.recurrence, "preconditioner": args.preconditioner},
                "stats": stats.as_dict(with_seconds=False),
                "target": target.describe,
                "hessian": hinfo,
                "gradient_norm": float(g.norm()),
                "stationarity": stationarity,
                "device": str(rt.device),
                "deterministic": rt.deterministic,
                "dtype": str(g.dtype).replace("torch.", ""),
                "sign_convention": "gif apply sets theta_J <- theta_J - scale * delta; scale > 0 removes the target",
            }
            if pinfo is not None:
                info["preconditioner"] = pinfo
            seconds = (time.perf_counter() - t0) + (setup if not runs else 0.0)
            runs.append(InfluenceRun(result.delta.detach().cpu(), result.index_set, info, seconds, stats.as_dict(),
                                     environment, setup if len(runs) == 0 else 0.0))
    finally:
        hess.release()
    return runs


SEARCH_START = 1.0  # the scale search's first candidate
SEARCH_FACTOR = 4.0  # its bracketing step; refined by x2, x2^(1/2), x2^(1/4) around the best
SEARCH_REFINE = (2.0, 2 ** 0.5, 2 ** 0.25)
SEARCH_WALK = 8  # bracketing steps at most in each direction (4^8: from 1 to 65 536 or 1.5e-5)


def sweep_scales(model: nn.Module, J: IndexSet, delta: torch.Tensor, scales: Optional[Sequence[float]],
                 score: Scorer, rt: Optional[Runtime] = None, extend: int = 12,
                 unedited: Optional[dict] = None) -> tuple[float, list[dict]]:
    """Choose the scale of ``theta_J <- theta_J - scale * delta`` by ``score`` (rows with
    ``objective`` and ``feasible``); returns the best scale and every row scored.

    ``scales`` None: :func:`search_scale` (bracket, then refine). A list: each is scored; if the
    best sits at an end, the grid is extended past it by factors of 2 (at most ``extend`` times)
    while the objective improves, and the best is refined at x 2^(+-1/4) and x 2^(+-1/8). A single
    given scale is scored and returned as it is.
    """
    if scales is None:
        return search_scale(model, J, delta, score, rt, unedited)
    if not scales:
        raise UsageError("no scale to try")
    grid = sorted(float(s) for s in scales)
    rows: list[dict] = []

    def run(s: float) -> dict:
        row = {"scale": s, **scored(score, edited_copy(model, J, delta, s))}
        rows.append(row)
        if rt is not None:
            rt.report("sweep", len(rows), max(len(grid), len(rows)), f"scale {s:g}")
        return row

    for s in grid:
        run(s)
    varied = len({(r.get("feasible", True), r["objective"]) for r in rows}) > 1
    if len(grid) > 1 and varied:
        best = best_row(rows)
        for end, factor in ((grid[0], 0.5), (grid[-1], 2.0)):
            s, last = end, best
            for _ in range(extend if best["scale"] == end else 0):
                s *= factor
                row = run(round(s, 12))
                if best_row([row, last]) is last:
                    break
                last = row
        for step in (2 ** 0.25, 2 ** 0.125):  # refine between grid points
            best = best_row(rows)
            for s in (best["scale"] / step, best["scale"] * step):
                if all(abs(r["scale"] - s) > 1e-9 * s for r in rows):
                    run(round(s, 12))
    rows.sort(key=lambda r: r["scale"])
    check_scored(rows, "the scale search")
    return best_row(rows)["scale"], rows


def _same(a: dict, b: dict) -> bool:
    """Two rows the criterion cannot tell apart (the same feasibility, shortfall and objective)."""
    return rank(a) == rank(b)


def _beats(row: dict, other: dict) -> bool:
    return not _same(row, other) and best_row([row, other]) is row


def search_scale(model: nn.Module, J: IndexSet, delta: torch.Tensor, score: Scorer, rt: Optional[Runtime] = None,
                 unedited: Optional[dict] = None) -> tuple[float, list[dict]]:
    """The scale chosen by bracketing, then refining, in log scale.

    From :data:`SEARCH_START`, scales go up by x :data:`SEARCH_FACTOR` while the objective improves
    or stays where the unedited model's is (``unedited``: nothing forgotten yet), and down while a
    smaller scale is better or, given ``unedited``, until the score is the unedited model's (nothing
    changes below). The best of the bracket is then
    refined by x2, x sqrt(2) and x 2^(1/4) on each side; a level whose neighbours score the same as
    the best (the criterion cannot change the choice) ends the refinement. Where no scale of the
    bracket beats the unedited model (a window narrower than a factor 4), the midpoints of the walked
    scales are scored, then theirs, before refining. Ties go to the smaller scale. About 10-16
    candidates where the fixed grid scored forty-five.
    """
    rows: list[dict] = []

    def run(s: float) -> dict:
        s = float(f"{s:.12g}")
        for r in rows:
            if r["scale"] == s:
                return r
        row = {"scale": s, **scored(score, edited_copy(model, J, delta, s))}
        rows.append(row)
        if rt is not None:
            rt.report("sweep", len(rows), None, f"scale {s:g}")
        return row

    def walk(s: float, factor: float) -> None:
        """Step by ``factor`` from ``s`` while the new row is better (or, going up, as flat as the
        unedited model: nothing has changed yet)."""
        last = run(s)
        for _ in range(SEARCH_WALK):
            row = run(last["scale"] * factor)
            better = not _same(row, last) and best_row([row, last]) is row
            if factor > 1:  # up: on while better, or while nothing has changed yet
                go_on = better or (unedited is not None and _same(row, unedited) and _same(last, unedited))
            else:  # down: on until nothing changes any more (the edit's useful window may lie below a
                # plateau of broken models that improves slowly toward 1: measured on the backdoor)
                go_on = better or (unedited is not None and not _same(row, unedited))
            if not go_on:
                return
            last = row

    run(SEARCH_START)
    walk(SEARCH_START, SEARCH_FACTOR)
    # down as well, always, to where the edit no longer changes the validation score
    walk(SEARCH_START, 1 / SEARCH_FACTOR)
    if unedited is not None and not any(_beats(r, unedited) for r in rows):
        # nothing on the bracket beat the unedited model: the useful window is narrower than a step
        # (forgetting and breaking the model a factor 4 apart): score the midpoints, then theirs
        for _ in range(2):
            walked = sorted(r["scale"] for r in rows)
            for low, high in zip(walked, walked[1:]):
                run(math.sqrt(low * high))
            if any(_beats(r, unedited) for r in rows):
                break
    for step in SEARCH_REFINE:
        best = best_row(rows)
        sides = [run(best["scale"] / step), run(best["scale"] * step)]
        if all(_same(r, best) for r in sides):
            break
    rows.sort(key=lambda r: r["scale"])
    check_scored(rows, "the scale search")
    return best_row(rows)["scale"], rows


def dead_share(J: IndexSet, g: torch.Tensor) -> float:
    """Share of J whose forget gradient is exactly zero (parameters the edit cannot move usefully)."""
    return float((J.gather(g.cpu()) == 0).double().mean()) if J.size else 0.0


