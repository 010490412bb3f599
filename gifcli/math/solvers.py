"""Solvers for the symmetric positive (semi-)definite systems ``A x = b`` that influence needs.

``A`` is given as a function ``op(x) -> A x`` (each call costs one or two Hessian-vector
products); every solver returns ``(x, SolveStats)``. The dense ``exact`` solve lives in
``influence.py`` because it needs the matrix, not the operator.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

Operator = Callable[[torch.Tensor], torch.Tensor]
Progress = Optional[Callable[[int, int, float], None]]  # (iteration, max_iter, relative residual)

SOLVERS = ("cg", "neumann", "exact")


@dataclass
class SolveStats:
    solver: str
    iterations: int = 0
    operator_calls: int = 0  # applications of A (power iteration included)
    products: int = 0  # Hessian-vector products; filled in by the caller who knows the cost of A
    residuals: list[float] = field(default_factory=list)  # ||b - A x_k|| / ||b|| per iteration
    converged: bool = False
    seconds: float = 0.0
    scale: float = 1.0  # neumann: the c = M^2 that A was divided by (Prop. 1)
    restarts: int = 0
    message: str = ""
    returned_iteration: int = 0  # cg: the iterate returned (1-based; 0 = the last one)

    @property
    def final_residual(self) -> float:
        """Relative residual of the returned solution."""
        if not self.residuals:
            return float("nan")
        return self.residuals[self.returned_iteration - 1] if self.returned_iteration else self.residuals[-1]

    def as_dict(self) -> dict:
        return {
            "solver": self.solver,
            "iterations": self.iterations,
            "operator_calls": self.operator_calls,
            "hvp_products": self.products,
            "final_relative_residual": self.final_residual,
            "residual_history": self.residuals,
            "converged": self.converged,
            "seconds": self.seconds,
            "neumann_scale": self.scale,
            "restarts": self.restarts,
            "returned_iteration": self.returned_iteration or self.iterations,
            "message": self.message,
        }


def _counting(op: Operator, stats: SolveStats) -> Operator:
    def counted(x: torch.Tensor) -> torch.Tensor:
        stats.operator_calls += 1
        return op(x)

    return counted


def power_iteration(op: Operator, like: torch.Tensor, iters: int = 20, seed: int = 0) -> float:
    """Largest eigenvalue of a symmetric PSD operator (an under-estimate after few iterations)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(like.shape, generator=gen, dtype=like.dtype).to(like.device)
    v = v / v.norm()
    lam = 0.0
    for _ in range(iters):
        w = op(v)
        lam = float(w.norm())
        if lam == 0.0 or not math.isfinite(lam):
            break
        v = w / lam
    return lam


def neumann(
    op: Operator,
    rhs: torch.Tensor,
    tol: float = 1e-3,
    max_iter: int = 1000,
    power_iters: int = 20,
    margin: float = 1.1,
    max_restarts: int = 20,
    progress: Progress = None,
) -> tuple[torch.Tensor, SolveStats]:
    """The paper's series (eq. 12) with the scaling of Prop. 1 made automatic.

    Dividing the loss by M divides ``A = H_J^T H_J`` by ``c = M^2``; the series
    ``I_k = b/c + (I - A/c) I_{k-1}`` converges when ``rho(A/c) < 2`` and, by Prop. 1 i, to the
    same solution. ``c`` starts at ``margin`` x a power-iteration estimate of ``rho(A)``; if the
    residual still grows (the estimate was low, or rounding), ``c`` is doubled and the series
    restarts, as the reference code raises its ``normalizer``. ``I_k`` is written as
    ``x_k = x_{k-1} + (b - A x_{k-1}) / c``, so each iteration costs one application of A and the
    residual comes for free.
    """
    stats = SolveStats("neumann")
    start = time.perf_counter()
    A = _counting(op, stats)
    b_norm = float(rhs.norm())
    if b_norm == 0.0:
        stats.converged, stats.seconds = True, time.perf_counter() - start
        return torch.zeros_like(rhs), stats
    rho = power_iteration(A, rhs, power_iters)
    c = margin * rho if rho > 0 else 1.0
    x = torch.zeros_like(rhs)
    while True:
        x = torch.zeros_like(rhs)
        r = rhs.clone()
        best = 1.0
        diverged = False
        while stats.iterations < max_iter:
            x = x + r / c
            r = rhs - A(x)
            rel = float(r.norm()) / b_norm
            stats.iterations += 1
            stats.residuals.append(rel)
            if progress:
                progress(stats.iterations, max_iter, rel)
            if rel <= tol:
                stats.converged = True
                break
            if not math.isfinite(rel) or rel > 2.0 * best:
                diverged = True
                break
            best = min(best, rel)
        if diverged and stats.restarts < max_restarts and stats.iterations < max_iter:
            stats.restarts += 1
            c *= 2.0
            continue
        break
    if diverged:
        stats.message = "diverged"
    elif not stats.converged:
        stats.message = f"stopped at max_iter={max_iter}"
    stats.scale = c
    stats.seconds = time.perf_counter() - start
    return x, stats


def cg(
    op: Operator,
    rhs: torch.Tensor,
    tol: float = 1e-3,
    max_iter: int = 200,
    damping: float = 0.0,
    progress: Progress = None,
) -> tuple[torch.Tensor, SolveStats]:
    """Conjugate gradient on ``(A + damping I) x = b`` for symmetric positive (semi-)definite A.

    Applied to the normal operator ``A = H_J^T H_J`` and ``b = H_J^T r`` it is CGNR/CGLS;
    started at zero it converges to the minimum-norm least-squares solution. Stops when the
    relative residual ``||b - A x|| / ||b||`` reaches ``tol``; stops with ``converged=False``
    if A shows a non-positive curvature (an indefinite system: solve the normal equations or
    add damping). On the normal equations that residual is not monotone (it swung between 1e-2
    and 6e-2 on the MNIST CNN), so when the solve stops unconverged it returns the iterate with
    the smallest residual seen (``stats.returned_iteration``) rather than the last one.
    """
    stats = SolveStats("cg")
    start = time.perf_counter()
    A = _counting(op, stats)
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = float(r @ r)
    b_norm = math.sqrt(rs)
    best_x, best_rel = x, 1.0
    if b_norm == 0.0:
        stats.converged, stats.seconds = True, time.perf_counter() - start
        return x, stats
    while stats.iterations < max_iter:
        Ap = A(p)
        if damping:
            Ap = Ap + damping * p
        curvature = float(p @ Ap)
        if curvature <= 0.0 or not math.isfinite(curvature):
            stats.message = "non-positive curvature: the system is not positive definite"
            break
        alpha = rs / curvature
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = float(r @ r)
        rel = math.sqrt(rs_new) / b_norm
        stats.iterations += 1
        stats.residuals.append(rel)
        if rel < best_rel:
            best_x, best_rel = x, rel
        if progress:
            progress(stats.iterations, max_iter, rel)
        if rel <= tol:
            stats.converged = True
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    if not stats.converged and not stats.message:
        stats.message = f"stopped at max_iter={max_iter}"
    if not stats.converged and stats.residuals and best_rel < stats.residuals[-1]:
        stats.returned_iteration = stats.residuals.index(best_rel) + 1
        stats.message += f"; returned iterate {stats.returned_iteration} (smallest residual)"
        x = best_x
    stats.seconds = time.perf_counter() - start
    return x, stats
