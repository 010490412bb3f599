"""GIF, FIF, PIF and classic IF as linear least-squares problems over a Hessian sample.

Sign convention (used everywhere in gif)
----------------------------------------
``g`` is the gradient of the forget data's share of the training loss: with the Hessian
loss a mean over N training samples, ``g = grad (1/N) sum_{z in F} l(z, theta)``
(= mean forget-loss gradient x |F| / N, as the reference code scales it). Upweighting the
forget data by eps moves theta_J by ``eps * delta`` where ``delta`` solves, in the least-squares
sense, ``H_J delta = -g`` (eq. 5/6/9). Removing the forget data is eps = -1, so

    ``gif apply --scale s`` sets ``theta_J <- theta_J - s * delta``

and ``s > 0`` removes the forget data (``s = 1`` is the first-order estimate of retraining
without it). For a relabel target (backdoor recovery) ``g = grad [L(x, wrong) - L(x, right)]``
scaled by |relabelled| / N, and ``s > 0`` again undoes the wrong labels.

The four variants (``A`` = the matrix whose least-squares problem is solved, b = its target):

* ``gif``: A = H_J (n x k), b = -g, solved via ``H_J^T H_J delta = -H_J^T g`` (eq. 9, 13).
* ``fif``: A = H_JJ (k x k), b = -g_J (eq. 10).
* ``pif``: A = H (n x n), b = -g, then keep J.
* ``if``:  A = H, b = -g, J = all parameters (eq. 2, 7).

Iterative solvers work on the normal equations ``A^T A x = A^T b`` (positive semi-definite
for any loss, which is what makes the series converge, Prop. 1 ii); with ``system="direct"``
the symmetric ``fif``/``pif``/``if`` systems are solved as ``(A + damping I) x = b`` instead.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from .hvp import HessianSample
from .params import IndexSet
from .solvers import SOLVERS, Progress, SolveStats, cg, neumann

METHODS = ("gif", "fif", "pif", "if")
SYSTEMS = ("normal", "direct")
MAX_EXACT_COLUMNS = 5000  # `exact` forms A column by column (one HVP each) and refuses beyond this


@dataclass
class InfluenceResult:
    delta: torch.Tensor  # over J (for `if`: over all parameters)
    index_set: IndexSet
    method: str
    stats: SolveStats


@dataclass(frozen=True)
class SolverOptions:
    solver: str = "cg"
    tol: float = 1e-3
    max_iter: int = 200
    damping: float = 0.0
    system: str = "normal"
    power_iters: int = 20


class _Problem:
    """min_x ||A x - b|| with A applied through Hessian-vector products."""

    def __init__(self, apply: Callable, apply_t: Callable, b: torch.Tensor, n_cols: int, symmetric: bool):
        self.apply, self.apply_t, self.b, self.n_cols, self.symmetric = apply, apply_t, b, n_cols, symmetric


def _problem(method: str, hess: HessianSample, J: IndexSet, g: torch.Tensor) -> _Problem:
    H = hess.hvp
    if method == "gif":
        # eq. (13): H^T H [v; 0] = [H_J^T H_J v; ...]; H is symmetric so H_J^T u = (H u)_J,
        # which only needs J's rows of the product (only=J).
        return _Problem(lambda v: H(J.scatter(v)), lambda u: J.gather(H(u, only=J)), -g, J.size, False)
    if method == "fif":
        op = lambda v: J.gather(H(J.scatter(v), only=J))  # noqa: E731  (H_JJ v, eq. 10)
        return _Problem(op, op, -J.gather(g), J.size, True)
    if method in ("pif", "if"):
        return _Problem(H, H, -g, g.numel(), True)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def _dense_columns(apply: Callable, n_cols: int, like: torch.Tensor) -> torch.Tensor:
    cols = []
    for j in range(n_cols):
        e = torch.zeros(n_cols, dtype=like.dtype, device=like.device)
        e[j] = 1.0
        cols.append(apply(e).detach().to("cpu", torch.float64))
    return torch.stack(cols, dim=1)


def _solve_exact(problem: _Problem, like: torch.Tensor) -> tuple[torch.Tensor, SolveStats]:
    stats = SolveStats("exact")
    start = time.perf_counter()
    if problem.n_cols > MAX_EXACT_COLUMNS:
        raise ValueError(
            f"the exact solver forms {problem.n_cols} Hessian columns; it refuses above "
            f"{MAX_EXACT_COLUMNS} (use --solver cg)"
        )
    A = _dense_columns(problem.apply, problem.n_cols, like)
    b = problem.b.detach().to("cpu", torch.float64)
    # gelsd: minimum-norm least squares, so a singular H gives the pseudo-inverse answer.
    x = torch.linalg.lstsq(A, b.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    rel = float((A.T @ (A @ x - b)).norm() / max(float((A.T @ b).norm()), 1e-300))
    stats.iterations, stats.operator_calls = 1, problem.n_cols
    stats.residuals, stats.converged = [rel], True
    stats.seconds = time.perf_counter() - start
    return x.to(like.device, like.dtype), stats


def solve_problem(
    problem: _Problem, options: SolverOptions, like: torch.Tensor, progress: Progress = None
) -> tuple[torch.Tensor, SolveStats]:
    if options.solver not in SOLVERS:
        raise ValueError(f"unknown solver {options.solver!r}; choose from {SOLVERS}")
    if options.system not in SYSTEMS:
        raise ValueError(f"unknown system {options.system!r}; choose from {SYSTEMS}")
    if options.solver == "exact":
        return _solve_exact(problem, like)
    if options.system == "direct":
        if not problem.symmetric:
            raise ValueError("gif's H_J is not square: it is always solved through the normal equations")
        op, rhs = problem.apply, problem.b
    else:
        op = lambda v: problem.apply_t(problem.apply(v))  # noqa: E731  A^T A v: two HVPs
        rhs = problem.apply_t(problem.b)
    if options.solver == "cg":
        return cg(op, rhs, options.tol, options.max_iter, options.damping, progress)
    if options.damping:
        damped = lambda v: op(v) + options.damping * v  # noqa: E731
        return neumann(damped, rhs, options.tol, options.max_iter, options.power_iters, progress=progress)
    return neumann(op, rhs, options.tol, options.max_iter, options.power_iters, progress=progress)


def influence(
    method: str,
    hess: HessianSample,
    J: IndexSet,
    g: torch.Tensor,
    options: SolverOptions = SolverOptions(),
    progress: Progress = None,
) -> InfluenceResult:
    """The influence ``delta`` over J of the target gradient ``g`` (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if method == "if":
        J = IndexSet.everything(hess.space)
    if J.size == 0:
        raise ValueError("the index set J is empty")
    problem = _problem(method, hess, J, g)
    before = hess.products
    x, stats = solve_problem(problem, options, g, progress)
    stats.products = hess.products - before
    delta = J.gather(x) if method == "pif" else x
    return InfluenceResult(delta.detach(), J, method, stats)


def forget_gradient(
    mean_forget_gradient: torch.Tensor, forget_count: int, train_count: int
) -> torch.Tensor:
    """g of the sign convention: the mean forget-loss gradient x |F| / N."""
    return mean_forget_gradient * (forget_count / train_count)


def relabel_gradient(
    mean_wrong_gradient: torch.Tensor, mean_right_gradient: torch.Tensor, count: int, train_count: int
) -> torch.Tensor:
    """g = grad[L(x, wrong) - L(x, right)] x |relabelled| / N (backdoor recovery)."""
    return (mean_wrong_gradient - mean_right_gradient) * (count / train_count)


def apply_update(theta_J: torch.Tensor, delta: torch.Tensor, scale: float) -> torch.Tensor:
    """theta_J - scale * delta: scale > 0 removes the forget data (module docstring)."""
    return theta_J - scale * delta.to(theta_J.dtype)
