import pytest
import torch
from torch import nn

from gifcli.math.hvp import HessianSample, cross_entropy_sum, mse_sum
from gifcli.methods.influence.lstsq import SolverOptions, influence
from gifcli.math.params import IndexSet
from gifcli.math.solvers import SolverArgumentError, cg

from .helpers import TanhMLP, batches_of, explicit_gradient, explicit_hessian

RTOL = 1e-5
TIGHT = SolverOptions(solver="cg", tol=1e-12, max_iter=2000)
LSMR = SolverOptions(solver="lsmr", tol=1e-12, max_iter=2000)
EXACT = SolverOptions(solver="exact")


@pytest.fixture()
def problem():
    torch.manual_seed(4)
    model = TanhMLP(3, 4, 3).double()  # 31 parameters
    x, y = torch.randn(80, 3, dtype=torch.float64), torch.randint(0, 3, (80,))
    batches = batches_of(x, y, 25)
    forget = [(x[:10] + 0.5, y[:10])]
    H = explicit_hessian(model, batches, cross_entropy_sum)
    g = explicit_gradient(model, forget, cross_entropy_sum) * (10 / 80)
    hess = HessianSample(model, batches)
    gen = torch.Generator().manual_seed(5)
    J = IndexSet.from_indices(hess.space, torch.randperm(H.shape[0], generator=gen)[:9])
    return hess, H, g, J


@pytest.mark.parametrize("options", [TIGHT, LSMR, EXACT])
def test_gif_is_least_squares_of_H_J(problem, options):
    hess, H, g, J = problem
    ref = torch.linalg.lstsq(H[:, J.indices], -g.unsqueeze(1)).solution.squeeze(1)
    res = influence("gif", hess, J, g, options)
    torch.testing.assert_close(res.delta, ref, rtol=RTOL, atol=1e-9)
    assert res.stats.converged


@pytest.mark.parametrize("options", [TIGHT, LSMR, EXACT])
def test_fif_solves_H_JJ(problem, options):
    hess, H, g, J = problem
    idx = J.indices
    ref = torch.linalg.solve(H[idx][:, idx], -g[idx])
    torch.testing.assert_close(influence("fif", hess, J, g, options).delta, ref, rtol=RTOL, atol=1e-9)


@pytest.mark.parametrize("options", [TIGHT, LSMR, EXACT])
def test_pif_is_projected_pinv(problem, options):
    hess, H, g, J = problem
    ref = (-torch.linalg.pinv(H) @ g)[J.indices]
    torch.testing.assert_close(influence("pif", hess, J, g, options).delta, ref, rtol=RTOL, atol=1e-8)


def test_gif_with_all_parameters_is_classic_influence():
    # softmax cross-entropy has a null direction (a shift of all logits), so use a regression
    # loss whose Hessian is invertible, as eq. (7) assumes
    torch.manual_seed(7)
    model = TanhMLP(3, 4, 2).double()
    x, y = torch.randn(60, 3, dtype=torch.float64), torch.randn(60, 2, dtype=torch.float64)
    batches = batches_of(x, y, 25)
    H = explicit_hessian(model, batches, mse_sum)
    assert torch.linalg.matrix_rank(H) == H.shape[0]
    g = explicit_gradient(model, [(x[:6], y[:6] + 1.0)], mse_sum) * (6 / 60)
    hess = HessianSample(model, batches, mse_sum)
    ref = -torch.linalg.solve(H, g)  # eq. (7)
    everything = IndexSet.everything(hess.space)
    torch.testing.assert_close(influence("gif", hess, everything, g, TIGHT).delta, ref, rtol=RTOL, atol=1e-8)
    torch.testing.assert_close(influence("if", hess, everything, g, TIGHT).delta, ref, rtol=RTOL, atol=1e-8)


def test_hvp_count_of_gif_cg(problem):
    hess, _, g, J = problem
    res = influence("gif", hess, J, g, SolverOptions(solver="cg", tol=1e-6, max_iter=50))
    # one product for the right-hand side H_J^T g, then two per CG iteration (eq. 13)
    assert res.stats.products == 1 + 2 * res.stats.iterations


def test_cg_direct_with_damping(problem):
    hess, H, g, J = problem
    idx = J.indices
    lam = 0.5
    HJJ = H[idx][:, idx]
    ev = torch.linalg.eigvalsh(HJJ)
    assert ev.min() + lam > 0  # the damped system is SPD, so plain CG applies
    ref = torch.linalg.solve(HJJ + lam * torch.eye(len(idx), dtype=H.dtype), -g[idx])
    opts = SolverOptions(solver="cg", tol=1e-12, max_iter=500, damping=lam, system="direct")
    torch.testing.assert_close(influence("fif", hess, J, g, opts).delta, ref, rtol=RTOL, atol=1e-9)


def _well_conditioned(scale: float):
    torch.manual_seed(6)
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(200, 3, dtype=torch.float64), torch.randint(0, 2, (200,))
    loss = lambda out, t: scale * cross_entropy_sum(out, t)  # noqa: E731
    hess = HessianSample(model, batches_of(x, y, 64), loss)
    g = HessianSample(model, [(x[:20] * 1.3, y[:20])], loss).gradient() * (20 / 200)
    J = IndexSet.from_indices(hess.space, torch.tensor([0, 2, 4, 6]))
    return hess, g, J


def test_neumann_reaches_exact_answer():
    hess, g, J = _well_conditioned(1.0)
    exact = influence("gif", hess, J, g, EXACT).delta
    res = influence("gif", hess, J, g, SolverOptions(solver="neumann", tol=1e-9, max_iter=50000))
    assert res.stats.converged, res.stats.message
    torch.testing.assert_close(res.delta, exact, rtol=1e-6, atol=1e-10)


def test_neumann_autoscales_and_gif_is_scale_invariant():
    # Prop. 1: multiplying the loss by 1e3 leaves the GIF unchanged; without scaling the
    # plain series (eq. 12) would diverge since rho(H_J^T H_J) >> 1.
    hess1, g1, J = _well_conditioned(1.0)
    hess3, g3, _ = _well_conditioned(1e3)
    a = influence("gif", hess1, J, g1, SolverOptions(solver="neumann", tol=1e-9, max_iter=50000))
    b = influence("gif", hess3, J, g3, SolverOptions(solver="neumann", tol=1e-9, max_iter=50000))
    assert b.stats.converged, b.stats.message
    assert b.stats.scale > 1e4  # it did scale: c = M^2 ~ rho(H_J^T H_J) ~ 1e6 x that of the unit loss
    torch.testing.assert_close(b.delta, a.delta, rtol=1e-6, atol=1e-10)


def test_neumann_restarts_when_the_scale_is_too_small():
    from gifcli.math.solvers import neumann

    A = torch.diag(torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64))
    b = torch.ones(3, dtype=torch.float64)
    # one power iteration from a vector almost orthogonal to the top eigenvector underestimates rho
    x, stats = neumann(lambda v: A @ v, b, tol=1e-10, max_iter=20000, power_iters=1, margin=0.5)
    assert stats.converged and stats.restarts >= 1
    torch.testing.assert_close(x, torch.linalg.solve(A, b))


def test_exact_refuses_by_memory_not_by_columns(problem):
    hess, _, g, J = problem
    n, k = g.numel(), J.size
    need = 8 * n * k * 2 + 8 * k * k  # the float64 matrix and its SVD factors
    with pytest.raises(SolverArgumentError, match="GiB"):
        influence("gif", hess, J, g, SolverOptions(solver="exact", max_exact_bytes=need - 1))
    influence("gif", hess, J, g, SolverOptions(solver="exact", max_exact_bytes=need))  # just fits


def test_cg_returns_its_best_iterate_when_it_stops_early():
    """CG's residual is not monotone; stopped at max_iter it returns the smallest-residual iterate."""
    gen = torch.Generator().manual_seed(0)
    # normal equations of an ill-conditioned least-squares problem, as GIF's are
    M = torch.randn(80, 40, generator=gen, dtype=torch.float64) @ torch.diag(torch.logspace(-2, 0, 40, dtype=torch.float64))
    A, b = M.T @ M, M.T @ torch.randn(80, generator=gen, dtype=torch.float64)
    x, stats = cg(lambda v: A @ v, b, tol=1e-12, max_iter=25)
    history = stats.residuals
    assert not stats.converged and min(history) < history[-1]  # the case this test is about
    true_rel = float((b - A @ x).norm() / b.norm())
    assert stats.returned_iteration == history.index(min(history)) + 1
    assert abs(true_rel - min(history)) < 1e-9 and stats.final_residual == min(history)
    assert "smallest residual" in stats.message
