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

* ``gif``: A = H_J (n x k), b = -g (eq. 9, 13): ``A v = H [v; 0]``, ``A^T u = (H u)_J``.
* ``fif``: A = H_JJ (k x k), b = -g_J (eq. 10).
* ``pif``: A = H (n x n), b = -g, then keep J.
* ``if``:  A = H, b = -g, J = all parameters (eq. 2, 7).

``lsmr`` solves the least-squares problem itself; ``cg`` and ``neumann`` work on the normal
equations ``A^T A x = A^T b`` (positive semi-definite for any loss, which is what makes the series
converge, Prop. 1 ii), or with ``system="direct"`` on the symmetric ``fif``/``pif``/``if`` systems
``(A + damping I) x = b``. ``damping`` regularises the least-squares problem
(``min ||A x - b||^2 + damping ||x||^2``); the training objective's weight decay is a property of
H instead (``HessianSample(weight_decay=...)``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ...math.hvp import HessianSample
from ...math.params import IndexSet
from ...math.solvers import Progress, SolverArgumentError, SolveStats, cg, lsmr, neumann
from ...registry import Registry

VARIANTS = ("gif", "fif", "pif", "if")  # the paper's least-squares problems (module docstring)
SYSTEMS = ("normal", "direct")
MAX_EXACT_BYTES = 2 << 30  # `exact` forms A in float64, column by column; it refuses above this


@dataclass
class InfluenceResult:
    delta: torch.Tensor  # over J (for `if`: over all parameters)
    index_set: IndexSet
    method: str
    stats: SolveStats


@dataclass(frozen=True)
class SolverOptions:
    solver: str = "lsmr"
    tol: float = 1e-3
    max_iter: int = 200
    damping: float = 0.0
    system: str = "normal"
    power_iters: int = 20
    recurrence_dtype: torch.dtype | None = torch.float64  # None: the model's dtype
    max_exact_bytes: int = MAX_EXACT_BYTES


class _Problem:
    """min_x ||A x - b|| with A (n_rows x n_cols) applied through Hessian-vector products."""

    def __init__(self, apply: Callable, apply_t: Callable, b: torch.Tensor, n_cols: int, symmetric: bool,
                 square_rows: Optional[torch.Tensor] = None):
        self.apply, self.apply_t, self.b, self.n_cols, self.symmetric = apply, apply_t, b, n_cols, symmetric
        # rows of A that form a block that is symmetric in exact arithmetic (gif: J's rows of H_J,
        # i.e. H_JJ); None when A itself is square and symmetric
        self.square_rows = square_rows


def _problem(method: str, hess: HessianSample, J: IndexSet, g: torch.Tensor) -> _Problem:
    H = hess.hvp
    if method == "gif":
        # eq. (13): H^T H [v; 0] = [H_J^T H_J v; ...]; H is symmetric so H_J^T u = (H u)_J,
        # which only needs J's rows of the product (only=J).
        return _Problem(lambda v: H(J.scatter(v)), lambda u: J.gather(H(u, only=J)), -g, J.size, False,
                        J.indices.to("cpu"))
    if method == "fif":
        op = lambda v: J.gather(H(J.scatter(v), only=J))  # noqa: E731  (H_JJ v, eq. 10)
        return _Problem(op, op, -J.gather(g), J.size, True)
    if method in ("pif", "if"):
        return _Problem(H, H, -g, g.numel(), True)
    raise SolverArgumentError(f"unknown method {method!r}; choose from {', '.join(VARIANTS)}")


def _dense_columns(apply: Callable, n_cols: int, like: torch.Tensor) -> torch.Tensor:
    cols = []
    for j in range(n_cols):
        e = torch.zeros(n_cols, dtype=like.dtype, device=like.device)
        e[j] = 1.0
        cols.append(apply(e).detach().to("cpu", torch.float64))
    return torch.stack(cols, dim=1)


def column_noise(A: torch.Tensor, square_rows: Optional[torch.Tensor]) -> float:
    """An estimate of ||E||_2, the rounding error of the computed columns A = A_true + E.

    A Hessian is symmetric, so the block B of A that should be symmetric (H_JJ for gif, all of A
    for fif/pif/if) shows the error directly: (B - B^T) / 2 holds only rounding. Its entries give
    the error's scale sigma; an n x k matrix of such errors has a spectral norm of about
    sigma (sqrt(n) + sqrt(k)).
    """
    B = A if square_rows is None else A[square_rows]
    k = B.shape[0]
    if k < 2 or B.shape[0] != B.shape[1]:
        return 0.0
    skew = 0.5 * (B - B.T)
    sigma = float(skew.norm()) * math.sqrt(2.0 / (k * (k - 1)))
    return sigma * (math.sqrt(A.shape[0]) + math.sqrt(A.shape[1]))


# singular values below this many times the estimated error are noise: on float32 softmax
# regressions (tests/math/test_solvers.py) the actual ||E||_2 was 6-15x the estimate (the
# symmetric part of the error is invisible to it), so 50 keeps a margin above the noise while a
# direction 1e4 below s_max is still far above the cut
NOISE_SAFETY = 50.0


def _solve_exact(problem: _Problem, options: SolverOptions, like: torch.Tensor) -> tuple[torch.Tensor, SolveStats]:
    """Minimum-norm (damped) least squares by an SVD of the explicit columns, in float64.

    Singular values at the level of the columns' own error are noise, not signal: they are cut.
    That level is measured, not assumed (:func:`column_noise`: how far the Hessian block that must
    be symmetric is from it), with float64's rounding of the SVD as a floor. The numerical rank
    is recorded, with a warning when it is below the number of columns.
    """
    stats = SolveStats("exact", recurrence_dtype="float64")
    start = time.perf_counter()
    n_rows = int(problem.b.numel())
    need = 8 * n_rows * problem.n_cols * 2 + 8 * problem.n_cols ** 2  # A, its SVD factors
    if need > options.max_exact_bytes:
        raise SolverArgumentError(
            f"the exact solver would hold a {n_rows} x {problem.n_cols} float64 matrix and its SVD "
            f"(~{need / 2**30:.1f} GiB, limit {options.max_exact_bytes / 2**30:.1f} GiB): use --solver lsmr")
    A = _dense_columns(problem.apply, problem.n_cols, like)
    b = problem.b.detach().to("cpu", torch.float64)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    s_max = float(S.max()) if S.numel() else 0.0
    noise = column_noise(A, problem.square_rows)
    cutoff = max(NOISE_SAFETY * noise, torch.finfo(torch.float64).eps * max(A.shape) * s_max)
    keep = S > cutoff
    stats.rank = int(keep.sum())
    s = S[keep]
    gain = s / (s * s + options.damping)
    x = Vh[keep].T @ (gain * (U[:, keep].T @ b))
    atb = A.T @ b
    res = A.T @ (A @ x - b) + options.damping * x
    stats.residuals = [float(res.norm() / max(float(atb.norm()), 1e-300))]
    stats.iterations, stats.operator_calls, stats.converged = 1, problem.n_cols, True
    stats.cond_estimate = float(s.max() / s.min()) if s.numel() else None
    stats.message = f"columns' error ~{noise:.2e} (s_max {s_max:.2e}); singular values below {cutoff:.2e} cut"
    if stats.rank < problem.n_cols:
        stats.warnings.append(f"the matrix has numerical rank {stats.rank} < {problem.n_cols} columns: "
                              "the minimum-norm solution was returned")
    stats.seconds = time.perf_counter() - start
    return x.to(like.device, like.dtype), stats


# ---------------------------------------------------------------------------------------------
# the solver registry: a solver is one function (problem, options, like, progress) -> (x, stats)
SolverFn = Callable[[_Problem, SolverOptions, torch.Tensor, Progress], tuple[torch.Tensor, SolveStats]]
SOLVERS: Registry[SolverFn] = Registry("solver")


def register_solver(name: str) -> Callable[[SolverFn], SolverFn]:
    """``@register_solver("mine")`` on ``solve(problem, options, like, progress) -> (x, SolveStats)``:
    ``--solver mine`` then solves min ||A x - b|| (``problem.apply``/``apply_t``/``b``/``n_cols``)."""
    return SOLVERS.register(name)


def _normal_system(problem: _Problem, options: SolverOptions):
    """The square system CG and Neumann solve: the normal equations, or H itself (``direct``)."""
    if options.system == "direct":
        if not problem.symmetric:
            raise SolverArgumentError("gif's H_J is not square: it is solved as least squares (normal equations)")
        return problem.apply, problem.b
    return (lambda v: problem.apply_t(problem.apply(v))), problem.apply_t(problem.b)  # A^T A v: two HVPs


@register_solver("lsmr")
def _lsmr(problem: _Problem, options: SolverOptions, like: torch.Tensor, progress: Progress):
    return lsmr(problem.apply, problem.apply_t, problem.b, problem.n_cols, options.tol, options.max_iter,
                options.damping, progress, options.recurrence_dtype)


@register_solver("cg")
def _cg(problem: _Problem, options: SolverOptions, like: torch.Tensor, progress: Progress):
    op, rhs = _normal_system(problem, options)
    return cg(op, rhs, options.tol, options.max_iter, options.damping, progress, options.recurrence_dtype)


@register_solver("neumann")
def _neumann(problem: _Problem, options: SolverOptions, like: torch.Tensor, progress: Progress):
    op, rhs = _normal_system(problem, options)
    damped = (lambda v: op(v) + options.damping * v) if options.damping else op  # noqa: E731
    return neumann(damped, rhs, options.tol, options.max_iter, options.power_iters, progress=progress,
                   recurrence_dtype=options.recurrence_dtype)


register_solver("exact")(lambda problem, options, like, progress: _solve_exact(problem, options, like))


def solve_problem(
    problem: _Problem, options: SolverOptions, like: torch.Tensor, progress: Progress = None
) -> tuple[torch.Tensor, SolveStats]:
    if options.solver not in SOLVERS:
        raise SolverArgumentError(f"unknown solver {options.solver!r}; choose from {', '.join(SOLVERS)}")
    if options.system not in SYSTEMS:
        raise SolverArgumentError(f"unknown system {options.system!r}; choose from {', '.join(SYSTEMS)}")
    if not (options.damping >= 0 and math.isfinite(options.damping)):
        raise SolverArgumentError(f"damping must be a finite number >= 0, got {options.damping}")
    return SOLVERS.get(options.solver)(problem, options, like, progress)


def _preconditioned(problem: _Problem, P: Callable) -> _Problem:
    """min ||A P y - b|| (x = P y) for a symmetric positive definite P on the columns' space."""
    return _Problem(lambda y: problem.apply(P(y)), lambda u: P(problem.apply_t(u)), problem.b, problem.n_cols,
                    False, None)


def true_residual(problem: _Problem, x: torch.Tensor) -> float:
    """||A^T (b - A x)|| / ||A^T b||, the unpreconditioned normal-equation residual (three products)."""
    x = x.to(problem.b.dtype)
    ne = problem.apply_t(problem.b - problem.apply(x)).double()
    return float(ne.norm()) / max(float(problem.apply_t(problem.b).double().norm()), 1e-300)


def influence(
    method: str,
    hess: HessianSample,
    J: IndexSet,
    g: torch.Tensor,
    options: SolverOptions = SolverOptions(),
    progress: Progress = None,
    preconditioner: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> InfluenceResult:
    """The influence ``delta`` over J of the target gradient ``g`` (see the module docstring).

    ``preconditioner``: ``P v`` for a symmetric positive definite P on J-vectors (kfac.py); the
    solver then works on ``min ||A P y - b||`` and ``delta = P y``. Its stopping rule reads the
    preconditioned residual; the unpreconditioned one is measured at the end (three more
    products, counted) and recorded as ``stats.true_residual``.
    """
    if method not in VARIANTS:
        raise SolverArgumentError(f"unknown method {method!r}; choose from {', '.join(VARIANTS)}")
    if method == "if":
        J = IndexSet.everything(hess.space)
    if J.size == 0:
        raise SolverArgumentError("the index set J is empty")
    problem = _problem(method, hess, J, g)
    if preconditioner is not None:
        if options.solver == "exact":
            raise SolverArgumentError("the exact solver needs no preconditioner")
        if options.system == "direct":
            raise SolverArgumentError("a preconditioner works on the least-squares (normal) system, not --system direct")
        if options.damping:
            raise SolverArgumentError("--damping with a preconditioner would regularise the preconditioned variable; "
                                      "use one or the other")
        if method == "pif" or method == "if":
            raise SolverArgumentError("the preconditioner is built for J's columns: use it with gif or fif")
    before = hess.products
    if preconditioner is None:
        x, stats = solve_problem(problem, options, g, progress)
    else:
        y, stats = solve_problem(_preconditioned(problem, preconditioner), options, g, progress)
        x = preconditioner(y.to(g.dtype)).to(y.dtype)
        stats.true_residual = true_residual(problem, x)
    stats.products = hess.products - before
    x = x.to(g.dtype)
    delta = J.gather(x) if method == "pif" else x
    return InfluenceResult(delta.detach(), J, method, stats)
