"""LSMR and the solver defects, against explicit float64 computations."""
import math

import pytest
import torch
from torch import nn

from gifcli.math.hvp import HessianSample, cross_entropy_sum
from gifcli.math.influence import SolverOptions, influence
from gifcli.math.params import IndexSet
from gifcli.math.solvers import cg, lsmr, neumann

from .helpers import TanhMLP, batches_of, explicit_gradient, explicit_hessian

RTOL = 1e-8


def _matrix(m: int, n: int, rank: int, cond: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    s = torch.zeros(min(m, n), dtype=torch.float64)
    s[:rank] = torch.logspace(0, -math.log10(cond), rank, dtype=torch.float64)
    return U[:, : len(s)] @ torch.diag(s) @ V[:, : len(s)].T


def _lsmr(A, b, **kw):
    return lsmr(lambda v: A @ v, lambda u: A.T @ u, b, A.shape[1], **kw)


@pytest.mark.parametrize("m,n,rank", [(30, 12, 12), (30, 12, 7), (12, 12, 12), (10, 25, 10)])
def test_lsmr_matches_minimum_norm_lstsq(m, n, rank):
    A = _matrix(m, n, rank, cond=1e3, seed=m + n + rank)
    b = torch.randn(m, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x, stats = _lsmr(A, b, tol=1e-13, max_iter=500)
    ref = torch.linalg.pinv(A) @ b  # the minimum-norm least-squares solution
    assert stats.converged
    torch.testing.assert_close(x, ref, rtol=1e-7, atol=1e-9)


def test_lsmr_damped_solves_the_regularised_problem():
    A = _matrix(20, 8, 8, cond=1e2, seed=3)
    b = torch.randn(20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lam = 0.3
    x, stats = _lsmr(A, b, tol=1e-14, max_iter=500, damping=lam)
    ref = torch.linalg.solve(A.T @ A + lam * torch.eye(8, dtype=torch.float64), A.T @ b)
    assert stats.converged
    torch.testing.assert_close(x, ref, rtol=RTOL, atol=1e-10)


def test_lsmr_residual_is_monotone_where_cg_swings():
    A = _matrix(80, 40, 40, cond=1e4, seed=5)
    b = torch.randn(80, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    _, s = _lsmr(A, b, tol=1e-14, max_iter=60)
    _, c = cg(lambda v: A.T @ (A @ v), A.T @ b, tol=1e-14, max_iter=60)
    assert all(b2 <= a2 * (1 + 1e-12) for a2, b2 in zip(s.residuals, s.residuals[1:]))
    assert any(b2 > a2 for a2, b2 in zip(c.residuals, c.residuals[1:]))  # what the monotone solver fixes
    # the recorded residual is the true normal-equation residual of the iterate
    x, stats = _lsmr(A, b, tol=1e-14, max_iter=25)
    true = float((A.T @ (b - A @ x)).norm() / (A.T @ b).norm())
    assert abs(true - stats.final_residual) < 1e-9 * max(true, 1.0)


def test_lsmr_estimates_the_condition_number():
    A = _matrix(40, 20, 20, cond=1e3, seed=7)
    b = torch.randn(40, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    _, stats = _lsmr(A, b, tol=1e-14, max_iter=200)
    true = float(torch.linalg.cond(A))
    assert 0.3 * true < stats.cond_estimate <= 1.01 * true


def test_float64_recurrences_with_float32_products():
    A = _matrix(60, 30, 30, cond=3e3, seed=9)
    b = torch.randn(60, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    A32, b32 = A.float(), b.float()
    ref = torch.linalg.lstsq(A, b.unsqueeze(1)).solution.squeeze(1)
    x32, _ = lsmr(lambda v: A32 @ v, lambda u: A32.T @ u, b32, 30, tol=1e-12, max_iter=400)
    x64, s64 = lsmr(lambda v: A32 @ v, lambda u: A32.T @ u, b32, 30, tol=1e-12, max_iter=400,
                    recurrence_dtype=torch.float64)
    assert x64.dtype == torch.float64 and s64.recurrence_dtype == "float64"
    err32 = float((x32.double() - ref).norm() / ref.norm())
    err64 = float((x64 - ref).norm() / ref.norm())
    assert err64 < err32  # the same float32 products, fewer digits lost in the recurrences


def test_cg_zero_start_best_does_not_crash():
    """Every iterate worse than the zero start: CG used to look up 1.0 in its history and raise."""
    A = torch.diag(torch.tensor([1.0, 1000.0], dtype=torch.float64))
    b = torch.tensor([1.0, 0.03], dtype=torch.float64)
    x, stats = cg(lambda v: A @ v, b, tol=1e-12, max_iter=1)
    assert stats.residuals[0] > 1.0 or stats.final_residual <= 1.0
    true = float((b - A @ x).norm() / b.norm())
    assert abs(true - stats.final_residual) < 1e-12 and true <= 1.0


def test_neumann_returns_its_best_iterate_when_it_gives_up():
    A = torch.diag(torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64))
    b = torch.ones(3, dtype=torch.float64)
    # c = 0.45 rho: the top eigen-direction grows by 1.22 per step while the others shrink, so the
    # residual first falls, then diverges; with no restart allowed the best iterate must come back
    b_small_top = torch.tensor([1.0, 1.0, 0.01], dtype=torch.float64)
    x, stats = neumann(lambda v: A @ v, b_small_top, tol=1e-12, max_iter=200, power_iters=60, margin=0.45,
                       max_restarts=0)
    true = float((b_small_top - A @ x).norm() / b_small_top.norm())
    assert not stats.converged and "diverged" in stats.message
    assert true == pytest.approx(min(stats.residuals), rel=1e-9)
    assert true < stats.residuals[-1] and true < 1.0
    # diverging at once: nothing beats the zero start, which is returned
    x, stats = neumann(lambda v: A @ v, b, tol=1e-12, max_iter=50, power_iters=1, margin=0.01, max_restarts=0)
    assert torch.equal(x, torch.zeros(3, dtype=torch.float64)) and stats.final_residual == 1.0


@pytest.fixture()
def problem():
    torch.manual_seed(4)
    model = TanhMLP(3, 4, 3).double()
    x, y = torch.randn(80, 3, dtype=torch.float64), torch.randint(0, 3, (80,))
    batches = batches_of(x, y, 25)
    H = explicit_hessian(model, batches, cross_entropy_sum)
    g = explicit_gradient(model, [(x[:10] + 0.5, y[:10])], cross_entropy_sum) * (10 / 80)
    J = IndexSet.from_indices(HessianSample(model, batches).space, torch.tensor([0, 2, 5, 9, 14, 18, 22, 25, 30]))
    return model, batches, H, g, J


def test_exact_uses_damping(problem):
    model, batches, H, g, J = problem
    hess = HessianSample(model, batches)
    A = H[:, J.indices]
    for lam in (0.0, 10.0):
        got = influence("gif", hess, J, g, SolverOptions(solver="exact", damping=lam)).delta
        ref = torch.linalg.solve(A.T @ A + lam * torch.eye(J.size, dtype=A.dtype) + 1e-300, -A.T @ g) if lam else \
            torch.linalg.lstsq(A, -g.unsqueeze(1)).solution.squeeze(1)
        torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("method", ["gif", "fif", "pif"])
def test_lsmr_on_every_method_matches_explicit(problem, method):
    model, batches, H, g, J = problem
    hess = HessianSample(model, batches)
    idx = J.indices
    ref = {"gif": lambda: torch.linalg.lstsq(H[:, idx], -g.unsqueeze(1)).solution.squeeze(1),
           "fif": lambda: torch.linalg.solve(H[idx][:, idx], -g[idx]),
           "pif": lambda: (-torch.linalg.pinv(H) @ g)[idx]}[method]()
    res = influence(method, hess, J, g, SolverOptions(solver="lsmr", tol=1e-13, max_iter=3000))
    torch.testing.assert_close(res.delta, ref, rtol=1e-5, atol=1e-9)
    assert res.stats.products == 1 + 2 * res.stats.iterations


def test_weight_decay_adds_wd_identity_to_the_hessian(problem):
    model, batches, H, g, J = problem
    wd = 0.05
    names = [n for n, _ in model.named_parameters()]
    # the dumb way: the explicit Hessian of loss + (wd/2)||theta||^2
    from .helpers import flat_loss_fn

    f, theta = flat_loss_fn(model, batches, cross_entropy_sum)
    H_wd = torch.autograd.functional.hessian(lambda t: f(t) + 0.5 * wd * (t * t).sum(), theta)
    hess = HessianSample(model, batches, weight_decay=wd)
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(hess.hvp(v), H_wd @ v, rtol=1e-7, atol=1e-12)
    res = influence("gif", hess, J, g, SolverOptions(solver="lsmr", tol=1e-13, max_iter=3000))
    ref = torch.linalg.lstsq(H_wd[:, J.indices], -g.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(res.delta, ref, rtol=1e-6, atol=1e-10)
    assert names  # the model has parameters to decay


def test_exact_cuts_rounding_noise_and_reports_the_rank():
    """A float32 logreg whose constant input features make weight columns multiples of the bias
    column: exact returns the float64 pseudo-inverse answer and says the rank is short."""
    torch.manual_seed(0)
    d, n = 8, 200
    x = torch.randn(n, d)
    x[:, :3] = -0.4242  # always-zero pixels, normalised: the same constant for every image
    y = torch.randint(0, 3, (n,))
    model = nn.Linear(d, 3)
    batches = batches_of(x, y, 64)
    g32 = HessianSample(model, [(x[:20] * 1.5, y[:20])]).gradient() * (20 / n)
    hess = HessianSample(model, batches)
    space = hess.space
    unit = torch.tensor([0 * d + i for i in range(d)] + [3 * d + 0])  # row 0 of the weight and bias 0
    J = IndexSet.from_indices(space, unit)
    res = influence("gif", hess, J, g32, SolverOptions(solver="exact"))
    H64 = explicit_hessian(model.double(), [(b.double(), t) for b, t in batches], cross_entropy_sum)
    ref = -torch.linalg.pinv(H64[:, J.indices], rtol=1e-10) @ g32.double()
    assert res.stats.rank == J.size - 3 and res.stats.warnings
    torch.testing.assert_close(res.delta.double(), ref, rtol=2e-3, atol=1e-6)
