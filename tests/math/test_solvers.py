"""LSMR and the solver defects, against explicit float64 computations."""
import math

import pytest
import torch
from torch import nn

from gifcli.math.hvp import HessianSample, cross_entropy_sum
from gifcli.methods.influence.lstsq import SolverOptions, influence
from gifcli.math.params import IndexSet
from gifcli.math.solvers import cg, lsmr, neumann

from .helpers import TanhMLP, batches_of, explicit_gradient, explicit_hessian

RTOL = 1e-8
EXACT_CLOSED_FORM_RTOL = 1e-3  # float32 columns against the float64 closed form


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
    """LSMR's estimate is a lower bound that grows with the iterations; SciPy's implementation of
    the same recurrences gives the same estimate while the Lanczos vectors are still orthogonal."""
    sl = pytest.importorskip("scipy.sparse.linalg")
    A = _matrix(40, 20, 20, cond=1e3, seed=7)
    b = torch.randn(40, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    true = float(torch.linalg.cond(A))
    _, early = _lsmr(A, b, tol=0.0, max_iter=10, atol=0.0, btol=0.0, conlim=0.0)
    ref = sl.lsmr(A.numpy(), b.numpy(), atol=0.0, btol=0.0, conlim=0.0, maxiter=10)
    assert early.cond_estimate == pytest.approx(ref[6], rel=1e-3)
    _, late = _lsmr(A, b, tol=1e-14, max_iter=200)
    assert early.cond_estimate < late.cond_estimate <= 1.01 * true and late.cond_estimate > 0.1 * true


SCIPY_ISTOP = {1: "btol", 2: "atol", 3: "conlim", 4: "btol_eps", 5: "atol_eps", 6: "conlim_eps", 7: "max_iter"}


@pytest.mark.parametrize("case", ["btol", "atol", "conlim", "max_iter"])
def test_lsmr_stops_by_fong_and_saunders_rules(case):
    """Each rule fires on a system made for it, at SciPy's iteration and with SciPy's istop; only
    the residual rules count as converged."""
    sl = pytest.importorskip("scipy.sparse.linalg")
    gen = torch.Generator().manual_seed(11)
    if case == "btol":  # compatible: b in the range of A
        A = _matrix(30, 12, 12, cond=1e2, seed=1)
        b = A @ torch.randn(12, generator=gen, dtype=torch.float64)
        kw = dict(atol=1e-10, btol=1e-7, conlim=1e8)
    elif case == "atol":  # incompatible: ||r|| stays large, A^T r goes to zero
        A = _matrix(30, 12, 12, cond=1e2, seed=2)
        b = torch.randn(30, generator=gen, dtype=torch.float64)
        kw = dict(atol=1e-7, btol=1e-10, conlim=1e8)
    elif case == "conlim":
        A = _matrix(30, 12, 12, cond=1e9, seed=3)
        b = torch.randn(30, generator=gen, dtype=torch.float64)
        kw = dict(atol=1e-12, btol=1e-12, conlim=1e3)
    else:
        A = _matrix(30, 12, 12, cond=1e6, seed=4)
        b = torch.randn(30, generator=gen, dtype=torch.float64)
        kw = dict(atol=1e-14, btol=1e-14, conlim=1e12)
    max_iter = 5 if case == "max_iter" else 300
    _, stats = _lsmr(A, b, tol=0.0, max_iter=max_iter, **kw)
    ref = sl.lsmr(A.numpy(), b.numpy(), maxiter=max_iter, **kw)
    assert stats.stop_rule == case == SCIPY_ISTOP[ref[1]], (stats.stop_rule, ref[1])
    assert stats.iterations == ref[2]
    assert stats.converged == (case in ("btol", "atol"))
    if not stats.converged:
        assert stats.message and "converged" not in stats.message


def test_lsmr_never_calls_an_exhausted_subspace_converged_without_its_residual():
    """A^T's second product comes back (as rounding can make it) exactly along the previous
    direction, so alpha = 0: the recurrences see no new direction. The residual test does not
    hold at that iterate, so the solve is not converged (it used to be reported converged)."""
    A = _matrix(20, 8, 8, cond=10.0, seed=5)
    b = torch.randn(20, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    # the first Golub-Kahan step, computed as lsmr computes it
    u1 = b / float(b.norm())
    v1 = A.T @ u1
    alpha1 = float(v1.norm())
    v1 = v1 / alpha1
    beta2 = float((A @ v1 - alpha1 * u1).norm())
    calls = []

    def at(u):
        calls.append(1)
        return beta2 * v1 if len(calls) == 2 else A.T @ u

    x, stats = lsmr(lambda v: A @ v, at, b, 8, tol=1e-8, max_iter=50)
    true_rel = float((A.T @ (b - A @ x)).norm() / (A.T @ b).norm())
    assert stats.stop_rule == "exhausted" and not stats.converged and stats.iterations == 1
    assert stats.final_residual == pytest.approx(true_rel, rel=1e-9) and true_rel > 1e-2


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
    """Every iterate worse than the zero start: CG returns zero and says so, and its residual
    history holds only what was computed (no padded 1.0)."""
    A = torch.diag(torch.tensor([1.0, 1000.0], dtype=torch.float64))
    b = torch.tensor([1.0, 0.03], dtype=torch.float64)
    x, stats = cg(lambda v: A @ v, b, tol=1e-12, max_iter=1)
    # the one iterate, by hand: alpha = b.b / b.Ab, x1 = alpha b
    alpha = float(b @ b) / float(b @ A @ b)
    first = float((b - A @ (alpha * b)).norm() / b.norm())
    assert first > 1.0  # so the zero start is the best
    assert stats.residuals == pytest.approx([first], rel=1e-12) and len(stats.residuals) == stats.iterations
    assert torch.equal(x, torch.zeros(2, dtype=torch.float64)) and stats.returned_zero
    assert stats.final_residual == 1.0 and stats.as_dict()["returned_iteration"] == 0


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
    assert stats.returned_zero and len(stats.residuals) == stats.iterations and stats.residuals[0] > 1.0


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


def softmax_regression_hessian(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy Hessian of softmax regression in closed form, float64, in
    nn.Linear's parameter order (weight row by row, then bias):
    H[(c,i),(e,j)] = mean_n (p_c delta_ce - p_c p_e) x_i x_j, with x_d = 1 for the bias."""
    x = x.double()
    n, d = x.shape
    classes = weight.shape[0]
    p = torch.softmax(x @ weight.double().T + bias.double(), dim=1)
    curvature = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (n, C, C)
    xa = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    H = torch.einsum("nce,ni,nj->ciej", curvature, xa, xa).reshape(classes * (d + 1), classes * (d + 1)) / n
    order = [c * (d + 1) + i for c in range(classes) for i in range(d)] + [c * (d + 1) + d for c in range(classes)]
    return H[order][:, order]


def _float32_softmax_regression(constant_features: int):
    torch.manual_seed(0)
    d, classes, n = 500, 4, 2000
    x = torch.randn(n, d) * torch.logspace(0, -2.8, d)  # feature scales spread: H_J's cond ~1e4
    x[:, :constant_features] = -0.4242  # always-zero pixels, normalised: a constant for every image
    y = torch.randint(0, classes, (n,))
    model = nn.Linear(d, classes)
    with torch.no_grad():
        model.weight.mul_(3.0)
    batches = batches_of(x, y, 500)
    g = HessianSample(model, [(x[:100] * 1.5, y[:100])]).gradient() * (100 / n)
    hess = HessianSample(model, batches)
    J = IndexSet.from_indices(hess.space, torch.tensor(list(range(0, d, 4)) + [classes * d]))  # row 0, bias 0
    H = softmax_regression_hessian(model.weight.detach(), model.bias.detach(), x)
    return hess, J, g, H[:, J.indices]


def test_exact_keeps_every_real_direction_of_an_ill_conditioned_float32_system():
    """A float32 softmax regression whose H_J (2004 x 126) has cond ~1e4: the old cut-off
    eps32 x max(n, k) x s_max = 2.4e-4 s_max dropped real directions; the cut now follows the
    columns' measured error, and the answer matches the float64 closed form."""
    hess, J, g, A = _float32_softmax_regression(constant_features=0)
    s = torch.linalg.svdvals(A)
    assert 5e3 < float(s[0] / s[-1]) < 5e4  # the case is as ill-conditioned as intended
    true_rank = int(torch.linalg.matrix_rank(A))
    res = influence("gif", hess, J, g, SolverOptions(solver="exact"))
    ref = torch.linalg.lstsq(A, -g.double().unsqueeze(1)).solution.squeeze(1)
    assert res.stats.rank == true_rank == J.size and not res.stats.warnings
    assert float((res.delta.double() - ref).norm() / ref.norm()) < EXACT_CLOSED_FORM_RTOL


def test_exact_returns_the_minimum_norm_answer_of_a_rank_deficient_system():
    """Nine constant features make their weight columns multiples of the bias column (three of
    them are in J: the true rank is |J| - 3, counted by the float64 closed form, not assumed);
    exact returns the minimum-norm least-squares answer with a warning."""
    hess, J, g, A = _float32_softmax_regression(constant_features=9)
    true_rank = int(torch.linalg.matrix_rank(A))
    assert true_rank == J.size - 3
    res = influence("gif", hess, J, g, SolverOptions(solver="exact"))
    ref = torch.linalg.pinv(A, rtol=1e-10) @ -g.double()
    assert res.stats.rank == true_rank and res.stats.warnings
    assert float((res.delta.double() - ref).norm() / ref.norm()) < EXACT_CLOSED_FORM_RTOL
