"""The steps every unlearning chain shares: select J -> influence -> (scale sweep) -> apply.

Each step takes a model, data splits and a Runtime and returns values; the CLI's ``select``,
``influence`` and ``apply`` commands call these same functions one at a time, the core's
``run`` calls them in a row, so a hand-run chain and ``remove-class`` give the same weights.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..data.datasets import BATCH, Split, batches
from ..errors import GifError, NonFiniteError, UsageError
from ..math.hvp import HessianSample
from ..math.influence import METHODS as INFLUENCE_METHODS, InfluenceResult, apply_update, influence as solve_influence
from ..math.params import IndexSet, ParamSpace
from ..math.selection import HOOK_CRITERIA, Selection, SelectionError, gradient_scores, output_sums, select as select_J
from ..math.solvers import SolverArgumentError
from ..models.specs import set_eval
from .args import Runtime, UnlearnArgs
from .tasks import Scorer, Target
from .walk import shard_batches, summed_gradient

DEFAULT_SCALES = tuple(round(2 ** (k / 2), 6) for k in range(-20, 23))  # 2^-10 .. 2^11, x sqrt(2)
GRAPH_BUDGET_SHARE = 0.5  # hvp-mode auto: the kept graphs may use this share of free memory


def space_of(model: nn.Module) -> ParamSpace:
    return ParamSpace.of(list(model.named_parameters()))


def check_finite_model(model: nn.Module, what: str = "the model") -> None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise NonFiniteError(f"{what} has NaN or infinite values in {name}")


# ---------------------------------------------------------------------------------------------
def target_gradient(model: nn.Module, target: Target, pool_size: int, rt: Runtime) -> torch.Tensor:
    """g of the sign convention: the forget samples' summed loss gradient / |Hessian pool|.

    For a relabelling, ``g = grad[L(x, trained labels) - L(x, true labels)]`` / |pool|.
    """
    g, _ = summed_gradient(model, target.split, rt)
    if target.true_labels is not None:
        g_true, _ = summed_gradient(model, target.split.relabel(target.true_labels), rt)
        g = g - g_true
    return g / pool_size


TARGETS = ("forget", "remaining", "forget-then-remaining")
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


def right_hand_side(model: nn.Module, target: Target, pool_size: int, retain: Split, args: UnlearnArgs,
                    rt: Runtime, weight_decay: float = 0.0) -> tuple[torch.Tensor, dict]:
    """The gradient the influence is of, and the stationarity record.

    ``forget`` (the paper's): ``g``, the forget samples' gradient. ``remaining``: ``-G``, minus
    the retained objective's gradient at theta, so that ``theta - delta`` is a Newton step on the
    retained objective; at a stationary point of the training objective (g + G = 0) the two agree,
    elsewhere only ``remaining`` points at the retained data's optimum.
    ``forget-then-remaining`` is ``forget`` here: the method's later steps switch to ``remaining``.
    """
    g, G, record = gradients(model, target, pool_size, retain, args, rt, weight_decay)
    return (-G if args.target == "remaining" else g), record


def stationarity_warning(record: Optional[dict]) -> Optional[str]:
    """A one-line warning when the model is far from a stationary point and the target is ``forget``."""
    if not record or record.get("target") != "forget" or record["ratio"] <= STATIONARITY_WARN_RATIO:
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
              rhs: Optional[tuple[torch.Tensor, dict]] = None) -> InfluenceRun:
    """delta over J: the least-squares solution of ``A delta = b`` for ``args.method`` (math/influence.py).

    ``retain``: the data a retrained model is trained on (default: ``pool``); the retained
    objective's gradient is measured on it (``args.target``, :func:`right_hand_side`).
    ``rhs``: (the gradient, its stationarity record) computed by the caller instead.
    """
    if rhs is None:
        model = set_eval(model.to(rt.device))
        check_finite_model(model)
        rhs = right_hand_side(model, target, len(pool), pool if retain is None else retain, args, rt, weight_decay)
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
    if args.method not in INFLUENCE_METHODS:
        raise UsageError(f"method {args.method!r} has no influence vector; use one of gif, fif, pif, if, grad")
    if J is None:
        J = IndexSet.everything(space_of(model))
    hess, hinfo = hessian_sample(model, pool, args, rt, weight_decay)
    environment = {"graph_budget_bytes": hinfo.pop("_budget")} if "_budget" in hinfo else {}
    runs: list[InfluenceRun] = []
    try:
        P, pinfo = None, None
        if args.preconditioner == "kfac":
            from ..math.kfac import preconditioner

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
                                     environment))
    finally:
        hess.release()
    return runs


# ---------------------------------------------------------------------------------------------
def edited_copy(model: nn.Module, J: IndexSet, delta: torch.Tensor, scale: float) -> nn.Module:
    """A copy of ``model`` with theta_J <- theta_J - scale * delta (refuses non-finite results)."""
    if not math.isfinite(scale):
        raise UsageError(f"scale must be a finite number, got {scale}")
    edited = copy.deepcopy(model)
    theta = parameters_to_vector(edited.parameters()).detach()
    idx = J.indices.to(theta.device)
    theta[idx] = apply_update(theta[idx], delta.to(theta.device), scale)
    if not bool(torch.isfinite(theta[idx]).all()):
        raise NonFiniteError(f"scale {scale:g} makes the edited weights overflow (NaN or infinite values)")
    vector_to_parameters(theta, edited.parameters())
    return set_eval(edited)


def best_row(rows: Sequence[dict], order: str = "scale") -> dict:
    """The feasible row with the best objective; ties go to the smaller ``order`` (the milder edit).

    A diverged row (objective None: the candidate's outputs were not finite) is never preferred
    to one that was scored; :func:`check_scored` refuses a search in which every candidate diverged.
    """
    return max(rows, key=lambda r: (r["objective"] is not None, bool(r.get("feasible", True)),
                                    -math.inf if r["objective"] is None else r["objective"], -r[order]))


def scored(score: Scorer, model: nn.Module) -> dict:
    """``score(model)``, or a diverged row when the model's outputs or loss are not finite."""
    try:
        return score(model)
    except NonFiniteError as e:
        return {"feasible": False, "objective": None, "diverged": str(e)}


def check_scored(rows: Sequence[dict], what: str) -> None:
    """Refuse a search whose every candidate diverged (there is nothing to choose)."""
    if rows and all(r["objective"] is None for r in rows):
        raise NonFiniteError(f"{what}: every candidate diverged ({rows[-1]['diverged']})")


def sweep_scales(model: nn.Module, J: IndexSet, delta: torch.Tensor, scales: Sequence[float], score: Scorer,
                 rt: Optional[Runtime] = None, extend: int = 12) -> tuple[float, list[dict]]:
    """Evaluate ``score`` (rows with ``objective`` and ``feasible``) at each scale; return the best.

    If the best scale sits at an end of the grid, the grid is extended past that end by factors of
    2 (at most ``extend`` times) while the objective keeps improving: the useful range depends
    on |delta|. Then the best scale is refined with its neighbours at x 2^(+-1/4) and x 2^(+-1/8).
    A single given scale is scored and returned as it is.
    """
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


def parse_scales(text: str) -> Optional[list[float]]:
    """'auto' -> None (the default grid, chosen on validation); '1,2,5' -> [1.0, 2.0, 5.0]."""
    if text.strip() == "auto":
        return None
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--scale must be 'auto', a number or a comma-separated list, got {text!r}") from None
    if not vals or not all(math.isfinite(v) for v in vals):
        raise UsageError(f"--scale must be 'auto', a number or a comma-separated list, got {text!r}")
    return vals


def dead_share(J: IndexSet, g: torch.Tensor) -> float:
    """Share of J whose forget gradient is exactly zero (parameters the edit cannot move usefully)."""
    return float((J.gather(g.cpu()) == 0).double().mean()) if J.size else 0.0


