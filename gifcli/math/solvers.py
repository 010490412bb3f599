"""Iterative solvers for the linear systems influence needs, applied through operators only.

A system is given by functions (each call costs one or two Hessian-vector products); every
solver returns ``(x, SolveStats)``. The dense ``exact`` solve lives in ``gifcli/methods/influence/lstsq.py`` because
it needs the matrix, not the operator.

* :func:`lsmr` (Fong & Saunders, 2011) on ``min ||A x - b||^2 + damping ||x||^2`` with ``A`` and
  ``A^T`` as operators: one application of each per iteration. The normal-equation residual
  ``||A^T r_k - damping x_k||`` it reports decreases monotonically, so the last iterate is the best.
* :func:`cg` on a symmetric positive semi-definite ``(M + damping I) x = c`` (on GIF's normal
  equations this is CGNR); its residual is not monotone there, so a solve stopped early returns
  its smallest-residual iterate.
* :func:`neumann`: the paper's series (eq. 12) with Prop. 1's scaling made automatic.

``recurrence_dtype`` keeps a solver's own vectors and scalars in that precision (float64 by
choice) while the operator runs in the model's dtype: products stay as cheap as they are, and
the recurrences stop losing digits to rounding.

All three report the same quantity, the relative residual of the normal equations
``||c - (M + damping I) x|| / ||c||`` (with ``M = A^T A``, ``c = A^T b``). A small residual does
not bound the error in x when the system is ill-conditioned: the error can be as large as the
condition number times the residual. LSMR records an estimate of cond(A).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

Operator = Callable[[torch.Tensor], torch.Tensor]
Progress = Optional[Callable[[int, int, float], None]]  # (iteration, max_iter, relative residual)



# Fong & Saunders' conlim (SciPy's default). Their atol and btol are the relative accuracy of A's
# entries and of b: by default the machine epsilon of the products' dtype (a float32 model's
# products carry no more digits than that, a float64 test's carry all of them).
LSMR_CONLIM = 1e8


class SolverArgumentError(ValueError):
    """A solver asked for something it cannot do (an argument error, not a numerical failure)."""


@dataclass
class SolveStats:
    solver: str
    iterations: int = 0
    operator_calls: int = 0  # applications of A or M (power iteration included)
    products: int = 0  # Hessian-vector products; filled in by the caller who knows the cost of A
    residuals: list[float] = field(default_factory=list)  # relative normal-equation residual per iteration
    converged: bool = False
    seconds: float = 0.0
    scale: float = 1.0  # neumann: the c = M^2 that A was divided by (Prop. 1)
    restarts: int = 0
    message: str = ""
    returned_iteration: int = 0  # the iterate returned (1-based; 0 = the last one)
    cond_estimate: Optional[float] = None  # lsmr: estimate of cond(A); exact: of the columns
    rank: Optional[int] = None  # exact: numerical rank of the matrix solved
    recurrence_dtype: str = "float32"
    warnings: list[str] = field(default_factory=list)
    stop_rule: str = ""  # lsmr: which of its stopping rules ended the solve
    returned_zero: bool = False  # cg/neumann: no iterate beat the zero start, which was returned
    true_residual: Optional[float] = None  # preconditioned solves: the unpreconditioned residual of the result

    @property
    def final_residual(self) -> float:
        """Relative residual of the returned solution."""
        if self.returned_zero:
            return 1.0  # x = 0: the residual is the right-hand side itself
        if not self.residuals:
            return 0.0 if self.converged else float("nan")
        return self.residuals[self.returned_iteration - 1] if self.returned_iteration else self.residuals[-1]

    def as_dict(self, with_seconds: bool = True) -> dict:
        out = {
            "solver": self.solver,
            "iterations": self.iterations,
            "operator_calls": self.operator_calls,
            "hvp_products": self.products,
            "final_relative_residual": self.final_residual,
            "residual_history": self.residuals,
            "converged": self.converged,
            "neumann_scale": self.scale,
            "restarts": self.restarts,
            "returned_iteration": 0 if self.returned_zero else (self.returned_iteration or self.iterations),
            "returned_zero": self.returned_zero,
            "stop_rule": self.stop_rule,
            "cond_estimate": self.cond_estimate,
            "rank": self.rank,
            "recurrence_dtype": self.recurrence_dtype,
            "warnings": self.warnings,
            "message": self.message,
        }
        if self.true_residual is not None:
            out["unpreconditioned_residual"] = self.true_residual
        if with_seconds:
            out["seconds"] = self.seconds
        return out


def _in_dtype(op: Operator, work: torch.dtype, dtype: torch.dtype) -> Operator:
    """``op`` evaluated in ``work`` (the model's dtype), taking and giving ``dtype`` vectors."""
    if work == dtype:
        return op
    return lambda v: op(v.to(work)).to(dtype)


def _counting(op: Operator, stats: SolveStats) -> Operator:
    def counted(x: torch.Tensor) -> torch.Tensor:
        stats.operator_calls += 1
        return op(x)

    return counted


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


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
    recurrence_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, SolveStats]:
    """The paper's series (eq. 12) with the scaling of Prop. 1 made automatic.

    Dividing the loss by M divides ``A = H_J^T H_J`` by ``c = M^2``; the series
    ``I_k = b/c + (I - A/c) I_{k-1}`` converges when ``rho(A/c) < 2`` and, by Prop. 1 i, to the
    same solution. ``c`` starts at ``margin`` x a power-iteration estimate of ``rho(A)``; if the
    residual still grows (the estimate was low, or rounding), ``c`` is doubled and the series
    restarts, as the reference code raises its ``normalizer``. ``I_k`` is written as
    ``x_k = x_{k-1} + (b - A x_{k-1}) / c``, so each iteration costs one application of A and the
    residual comes for free. An unconverged solve returns the smallest-residual iterate seen.
    """
    work = rhs.dtype
    dtype = recurrence_dtype or work
    stats = SolveStats("neumann", recurrence_dtype=_dtype_name(dtype))
    start = time.perf_counter()
    A = _counting(_in_dtype(op, work, dtype), stats)
    rhs = rhs.to(dtype)
    b_norm = float(rhs.norm())
    if b_norm == 0.0 or not math.isfinite(b_norm):
        return _trivial(rhs, stats, start, b_norm)
    rho = power_iteration(A, rhs, power_iters)
    c = margin * rho if rho > 0 and math.isfinite(rho) else 1.0
    best_x, best_rel, best_at = torch.zeros_like(rhs), 1.0, 0  # the zero start has residual 1
    diverged = False
    while True:
        x = torch.zeros_like(rhs)
        r = rhs.clone()
        best_here = 1.0
        diverged = False
        while stats.iterations < max_iter:
            x = x + r / c
            r = rhs - A(x)
            rel = float(r.norm()) / b_norm
            stats.iterations += 1
            stats.residuals.append(rel)
            if progress:
                progress(stats.iterations, max_iter, rel)
            if rel < best_rel:
                best_x, best_rel, best_at = x, rel, stats.iterations
            if rel <= tol:
                stats.converged = True
                break
            if not math.isfinite(rel) or rel > 2.0 * best_here:
                diverged = True
                break
            best_here = min(best_here, rel)
        if diverged and stats.restarts < max_restarts and stats.iterations < max_iter:
            stats.restarts += 1
            c *= 2.0
            continue
        break
    if diverged:
        stats.message = "diverged"
    elif not stats.converged:
        stats.message = f"stopped at max_iter={max_iter}"
    if not stats.converged and best_at != stats.iterations:
        if best_at == 0:
            stats.message += "; no iterate improved on the zero start, returned zero"
            stats.returned_zero = True
        else:
            stats.returned_iteration = best_at
            stats.message += f"; returned iterate {best_at} (smallest residual)"
        x = best_x
    stats.scale = c
    stats.seconds = time.perf_counter() - start
    return x, stats


def _trivial(rhs: torch.Tensor, stats: SolveStats, start: float, b_norm: float) -> tuple[torch.Tensor, SolveStats]:
    if not math.isfinite(b_norm):
        stats.message = "the right-hand side is not finite"
        return torch.full_like(rhs, float("nan")), stats
    stats.converged, stats.seconds = True, time.perf_counter() - start
    stats.message = "the right-hand side is zero"
    return torch.zeros_like(rhs), stats


def cg(
    op: Operator,
    rhs: torch.Tensor,
    tol: float = 1e-3,
    max_iter: int = 200,
    damping: float = 0.0,
    progress: Progress = None,
    recurrence_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, SolveStats]:
    """Conjugate gradient on ``(A + damping I) x = b`` for symmetric positive (semi-)definite A.

    Applied to the normal operator ``A = H_J^T H_J`` and ``b = H_J^T r`` it is CGNR/CGLS;
    started at zero it converges to the minimum-norm least-squares solution. Stops when the
    relative residual ``||b - A x|| / ||b||`` reaches ``tol``; stops with ``converged=False``
    if A shows a non-positive curvature (an indefinite system: solve the normal equations or
    add damping). On the normal equations that residual is not monotone (it swung between 1e-2
    and 6e-2 on the MNIST CNN), so an unconverged solve returns the iterate with the smallest
    residual seen (``stats.returned_iteration``; the zero start counts, with residual 1).
    """
    work = rhs.dtype
    dtype = recurrence_dtype or work
    stats = SolveStats("cg", recurrence_dtype=_dtype_name(dtype))
    start = time.perf_counter()
    A = _counting(_in_dtype(op, work, dtype), stats)
    b = rhs.to(dtype)
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = float(r @ r)
    b_norm = math.sqrt(rs)
    if b_norm == 0.0 or not math.isfinite(b_norm):
        return _trivial(b, stats, start, b_norm)
    best_x, best_rel, best_at = x, 1.0, 0
    while stats.iterations < max_iter:
        Ap = A(p)
        if damping:
            Ap = Ap + damping * p
        curvature = float(p @ Ap)
        if not math.isfinite(curvature):
            stats.message = "the operator returned non-finite values"
            x = torch.full_like(b, float("nan"))
            stats.seconds = time.perf_counter() - start
            return x, stats
        if curvature <= 0.0:
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
            best_x, best_rel, best_at = x, rel, stats.iterations
        if progress:
            progress(stats.iterations, max_iter, rel)
        if rel <= tol:
            stats.converged = True
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    if not stats.converged and not stats.message:
        stats.message = f"stopped at max_iter={max_iter}"
    if not stats.converged and best_at != stats.iterations:
        if best_at == 0:
            stats.message += "; no iterate improved on the zero start, returned zero"
            stats.returned_zero = True
        else:
            stats.returned_iteration = best_at
            stats.message += f"; returned iterate {best_at} (smallest residual)"
        x = best_x
    stats.seconds = time.perf_counter() - start
    return x, stats


def _sym_ortho(a: float, b: float) -> tuple[float, float, float]:
    """A stable Givens rotation: (c, s, r) with [c s; -s c] [a; b] = [r; 0] (as LSQR/LSMR use it)."""
    if b == 0.0:
        return math.copysign(1.0, a) if a != 0.0 else 1.0, 0.0, abs(a)
    if a == 0.0:
        return 0.0, math.copysign(1.0, b), abs(b)
    if abs(b) > abs(a):
        tau = a / b
        s = math.copysign(1.0, b) / math.sqrt(1.0 + tau * tau)
        return s * tau, s, b / s
    tau = b / a
    c = math.copysign(1.0, a) / math.sqrt(1.0 + tau * tau)
    return c, c * tau, a / c


def lsmr(
    apply_a: Operator,
    apply_at: Operator,
    b: torch.Tensor,
    n_cols: int,
    tol: float = 1e-3,
    max_iter: int = 200,
    damping: float = 0.0,
    progress: Progress = None,
    recurrence_dtype: Optional[torch.dtype] = None,
    atol: Optional[float] = None,
    btol: Optional[float] = None,
    conlim: float = LSMR_CONLIM,
) -> tuple[torch.Tensor, SolveStats]:
    """LSMR (Fong & Saunders 2011) on ``min ||A x - b||^2 + damping ||x||^2``.

    ``apply_a(v)`` is ``A v`` (``v`` of length ``n_cols``), ``apply_at(u)`` is ``A^T u``. Each
    iteration applies each once; the first ``A^T b`` costs one more. The recurrences and the
    estimates of ||r||, ||A||, cond(A) and ||x|| follow SciPy's ``scipy.sparse.linalg.lsmr``
    (same variable names), with torch vectors. It stops at the first of (``stats.stop_rule``):

    * ``tol``: gif's rule, the relative normal-equation residual ``||A^T r - damping x|| /
      ||A^T b|| <= tol`` (monotone in LSMR, so the last iterate is the best);
    * Fong & Saunders' ``btol`` (a compatible system: ``||r|| <= btol ||b|| + atol ||A|| ||x||``),
      ``atol`` (a least-squares solution: ``||A^T r|| <= atol ||A|| ||r||``), and their
      machine-precision forms (as if atol = btol = eps); ``atol`` and ``btol`` default to the
      machine epsilon of ``b``'s dtype, the accuracy the products have;
    * ``conlim``: the estimate of cond([A; sqrt(damping) I]) passed ``conlim`` (not converged:
      the solve stopped because the system is too ill-conditioned for more iterations to help);
    * ``max_iter`` (not converged); an exhausted Krylov subspace counts as converged only when one
      of the residual tests above holds.
    """
    work = b.dtype
    dtype = recurrence_dtype or work
    stats = SolveStats("lsmr", recurrence_dtype=_dtype_name(dtype))
    start = time.perf_counter()
    A = _counting(_in_dtype(apply_a, work, dtype), stats)
    At = _counting(_in_dtype(apply_at, work, dtype), stats)
    damp = math.sqrt(damping) if damping > 0 else 0.0
    ctol = 1.0 / conlim if conlim > 0 else 0.0
    eps = torch.finfo(work).eps
    atol = eps if atol is None else atol
    btol = eps if btol is None else btol

    u = b.to(dtype).clone()
    normb = beta = float(u.norm())
    x = torch.zeros(n_cols, dtype=dtype, device=b.device)
    if not math.isfinite(beta):
        return _trivial(x, stats, start, beta)
    if beta > 0:
        u = u / beta
        v = At(u)
        alpha = float(v.norm())
    else:
        v, alpha = torch.zeros_like(x), 0.0
    if alpha > 0:
        v = v / alpha
    normar0 = alpha * beta
    if normar0 == 0.0 or not math.isfinite(normar0):
        return _trivial(x, stats, start, normar0)

    zetabar, alphabar = alpha * beta, alpha
    rho, rhobar, cbar, sbar = 1.0, 1.0, 1.0, 0.0
    h, hbar = v.clone(), torch.zeros_like(x)
    # estimates of ||r||, ||A||, cond(A) (SciPy's names)
    betadd, betad, rhodold, tautildeold, thetatilde, zeta, d = beta, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0
    normA2 = alpha * alpha
    maxrbar, minrbar = 0.0, 1e100
    rule = ""
    while stats.iterations < max_iter:
        u = A(v) - alpha * u
        beta = float(u.norm())
        if beta > 0:
            u = u / beta
            v = At(u) - beta * v
            alpha = float(v.norm())
            if alpha > 0:
                v = v / alpha
        if not (math.isfinite(alpha) and math.isfinite(beta)):
            stats.message = "the operator returned non-finite values"
            stats.seconds = time.perf_counter() - start
            return torch.full_like(x, float("nan")), stats
        chat, shat, alphahat = _sym_ortho(alphabar, damp)
        rhoold = rho
        c, s, rho = _sym_ortho(alphahat, beta)
        thetanew = s * alpha
        alphabar = c * alpha
        rhobarold = rhobar
        zetaold = zeta
        thetabar = sbar * rho
        rhotemp = cbar * rho
        cbar, sbar, rhobar = _sym_ortho(cbar * rho, thetanew)
        zeta = cbar * zetabar
        zetabar = -sbar * zetabar
        hbar = h - (thetabar * rho / (rhoold * rhobarold)) * hbar
        x = x + (zeta / (rho * rhobar)) * hbar
        h = v - (thetanew / rho) * h
        # ||r||: rotations Qhat_{k,2k+1}, Q_{k,k+1}, Qtilde_{k-1}
        betaacute, betacheck = chat * betadd, -shat * betadd
        betahat, betadd = c * betaacute, -s * betaacute
        thetatildeold = thetatilde
        ctildeold, stildeold, rhotildeold = _sym_ortho(rhodold, thetabar)
        thetatilde = stildeold * rhobar
        rhodold = ctildeold * rhobar
        betad = -stildeold * betad + ctildeold * betahat
        tautildeold = (zetaold - thetatildeold * tautildeold) / rhotildeold
        taud = (zeta - thetatilde * tautildeold) / rhodold
        d = d + betacheck * betacheck
        normr = math.sqrt(d + (betad - taud) ** 2 + betadd * betadd)
        # ||A|| and cond(A)
        normA2 += beta * beta
        normA = math.sqrt(normA2)
        normA2 += alpha * alpha
        maxrbar = max(maxrbar, rhobarold)
        if stats.iterations > 0:
            minrbar = min(minrbar, rhobarold)
        condA = max(maxrbar, rhotemp) / max(min(minrbar, rhotemp), 1e-300)
        stats.cond_estimate = condA
        normar, normx = abs(zetabar), float(x.norm())
        rel = normar / normar0
        stats.iterations += 1
        stats.residuals.append(rel)
        if progress:
            progress(stats.iterations, max_iter, rel)
        if beta == 0.0 or alpha == 0.0:
            # no new direction: the recurrences now claim an exact answer; believe only the
            # residual itself (two more products)
            r_true = b.to(dtype) - A(x)
            ne = At(r_true) - damping * x
            true_rel = float(ne.norm()) / normar0
            stats.residuals[-1] = true_rel
            rule = "tol" if true_rel <= tol else "exhausted"
            break
        rule = _lsmr_rule(rel, tol, normr, normar, normA, normx, normb, condA, atol, btol, ctol)
        if rule:
            break
    stats.stop_rule = rule or "max_iter"
    stats.converged = stats.stop_rule in LSMR_CONVERGED
    stats.message = LSMR_MESSAGES[stats.stop_rule].format(max_iter=max_iter, conlim=conlim)
    stats.seconds = time.perf_counter() - start
    return x, stats


def _lsmr_rule(rel: float, tol: float, normr: float, normar: float, normA: float, normx: float, normb: float,
               condA: float, atol: float, btol: float, ctol: float) -> str:
    """Which stopping rule holds, in Fong & Saunders' order of precedence (SciPy's istop 1..6)."""
    test1 = normr / normb
    test2 = normar / (normA * normr) if normA * normr != 0 else math.inf
    test3 = 1.0 / condA
    t1 = test1 / (1.0 + normA * normx / normb)
    rtol = btol + atol * normA * normx / normb
    if rel <= tol:
        return "tol"
    if test1 <= rtol:
        return "btol"
    if test2 <= atol:
        return "atol"
    if test3 <= ctol:
        return "conlim"
    if 1.0 + t1 <= 1.0:
        return "btol_eps"
    if 1.0 + test2 <= 1.0:
        return "atol_eps"
    if 1.0 + test3 <= 1.0:
        return "conlim_eps"
    return ""


LSMR_CONVERGED = frozenset({"tol", "btol", "atol", "btol_eps", "atol_eps"})
LSMR_MESSAGES = {
    "tol": "",
    "btol": "A x = b holds to btol (a compatible system)",
    "atol": "a least-squares solution to atol: ||A^T r|| <= atol ||A|| ||r||",
    "btol_eps": "A x = b holds to machine precision",
    "atol_eps": "a least-squares solution to machine precision",
    "conlim": "stopped: the condition estimate exceeds conlim={conlim:g}",
    "conlim_eps": "stopped: the condition estimate exceeds 1/eps",
    "exhausted": "the Krylov subspace is exhausted but no residual test holds",
    "max_iter": "stopped at max_iter={max_iter}",
}
