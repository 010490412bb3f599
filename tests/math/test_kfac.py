"""The K-FAC preconditioner against explicit float64 computations."""
import pytest
import torch
from torch import nn

from gifcli.math.hvp import HessianSample, cross_entropy_sum
from gifcli.methods.influence.lstsq import SolverOptions, influence
from gifcli.math.kfac import KFACPreconditioner, fit_factors
from gifcli.math.params import IndexSet, ParamSpace

from .helpers import batches_of, explicit_hessian


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.fc = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def weighted_square(out, y):  # not CE or MSE: K-FAC uses the true labels (the empirical Fisher)
    return (out ** 2 * (1.0 + y[:, None].double())).sum() / 3.0


def _net_and_data(seed=0, n=10):
    torch.manual_seed(seed)
    net = ConvNet().double().eval()
    x = torch.randn(n, 2, 5, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (n,))
    return net, x, y


def _explicit_patches(x, k=3, stride=2, pad=1):
    """Input patches (channel, row, col order) of every output position, by plain indexing."""
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    n, c, h, w = xp.shape
    out = (h - k) // stride + 1
    rows = []
    for i in range(n):
        for r in range(out):
            for q in range(out):
                rows.append(xp[i, :, r * stride: r * stride + k, q * stride: q * stride + k].reshape(-1))
    return torch.stack(rows)


def test_factors_match_explicit_sums():
    net, x, y = _net_and_data()
    factors = fit_factors(net, batches_of(x, y, 4), weighted_square, total=len(y))
    assert factors.fisher == "empirical"
    by = {f.name: f for f in factors.layers}
    # A: mean over samples and positions of [patch; 1][patch; 1]^T
    a = _explicit_patches(x)
    a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
    torch.testing.assert_close(by["conv"].A, a.T @ a / len(a), rtol=1e-12, atol=1e-14)
    h = torch.tanh(net.conv(x)).flatten(1)
    h1 = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1)
    torch.testing.assert_close(by["fc"].A, h1.T @ h1 / len(h1), rtol=1e-12, atol=1e-14)
    # G: (1/N) sum of s s^T, s the per-sample loss's gradient at the layer's output (sum over positions)
    conv_out = net.conv(x).detach().requires_grad_(True)
    out = net.fc(torch.tanh(conv_out).flatten(1))
    s_fc = (2 * out * (1.0 + y[:, None].double()) / 3.0).detach()
    torch.testing.assert_close(by["fc"].G, s_fc.T @ s_fc / len(y), rtol=1e-12, atol=1e-14)
    (s_conv,) = torch.autograd.grad(weighted_square(out, y), conv_out)
    s = s_conv.permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(by["conv"].G, s.T @ s / len(y), rtol=1e-12, atol=1e-14)


def test_sampled_labels_give_the_gauss_newton_factor_of_the_last_layer():
    """Cross-entropy: E_y[(p - e_y)(p - e_y)^T] = diag(p) - p p^T; 400 draws a sample agree to ~5 %."""
    net, x, y = _net_and_data(n=6)
    reps = 400
    xs, ys = x.repeat(reps, 1, 1, 1), y.repeat(reps)
    factors = fit_factors(net, batches_of(xs, ys, 600), cross_entropy_sum, total=len(ys), seed=3)
    assert factors.fisher == "sampled"
    p = torch.softmax(net(x), -1).detach()
    expected = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)
    G = next(f for f in factors.layers if f.name == "fc").G
    assert float((G - expected).norm() / expected.norm()) < 0.05


def _layer_index(space: ParamSpace, weight: str, bias: str, units: int, fan_in: int) -> torch.Tensor:
    off = dict(zip(space.names, space.offsets))
    w = off[weight] + torch.arange(units * fan_in).reshape(units, fan_in)
    b = off[bias] + torch.arange(units).reshape(units, 1)
    return torch.cat([w, b], 1)  # units x (fan_in + 1): a unit's weights, then its bias


def test_preconditioner_is_the_inverse_square_root_of_the_kfac_gram_matrix():
    net, x, y = _net_and_data()
    factors = fit_factors(net, batches_of(x, y, 5), cross_entropy_sum, total=len(y))
    space = ParamSpace.of(list(net.named_parameters()))
    fc = next(f for f in factors.layers if f.name == "fc")
    grid = _layer_index(space, "fc.weight", "fc.bias", 4, 27)
    S = [0, 2]
    partial = grid[3, :5]  # five entries of unit 3: the diagonal rule
    J = IndexSet.from_indices(space, torch.cat([grid[S].reshape(-1), partial]))
    wd, damping = 5e-3, 1e-2
    P = KFACPreconditioner(factors, space, J, weight_decay=wd, damping=damping).matrix()
    # explicit: K = G (x) A + gamma I over the layer (unit-major), its columns in J, Gram^{-1/2}
    gamma = wd + damping * float(torch.linalg.eigvalsh(fc.G).mean()) * float(torch.linalg.eigvalsh(fc.A).mean())
    K = torch.kron(fc.G, fc.A) + gamma * torch.eye(4 * 28, dtype=torch.float64)
    flat = grid.reshape(-1)
    pos = {int(i): k for k, i in enumerate(J.indices)}
    cols_S = [k for k, i in enumerate(flat) if k // 28 in S]
    E = torch.eye(4 * 28, dtype=torch.float64)[:, cols_S]
    gram = E.T @ K @ K @ E
    w, V = torch.linalg.eigh(gram)
    expected = V @ torch.diag(w.rsqrt()) @ V.T
    at = torch.tensor([pos[int(flat[k])] for k in cols_S])
    torch.testing.assert_close(P[at][:, at], expected, rtol=1e-9, atol=1e-12)
    full_gram = K @ K
    for i in partial:
        k = int((flat == i).nonzero())
        assert P[pos[int(i)], pos[int(i)]] == pytest.approx(float(full_gram[k, k]) ** -0.5, rel=1e-9)
    assert float((P - P.T).abs().max()) < 1e-12
    # the conv layer has no entry in J and gets nothing; every other entry of P is zero
    assert P[at][:, [pos[int(i)] for i in partial]].abs().max() == 0


def test_preconditioned_lsmr_reaches_the_least_squares_solution():
    net, x, y = _net_and_data(n=12)
    batches = batches_of(x, y, 6)
    space = ParamSpace.of(list(net.named_parameters()))
    grid = _layer_index(space, "fc.weight", "fc.bias", 4, 27)
    conv = _layer_index(space, "conv.weight", "conv.bias", 3, 18)
    J = IndexSet.from_indices(space, torch.cat([grid[[1, 3]].reshape(-1), conv[0], grid[0, :4]]))
    g = torch.randn(space.size, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 1e-2
    H = explicit_hessian(net, batches, cross_entropy_sum) + 1e-2 * torch.eye(space.size, dtype=torch.float64)
    expected = torch.linalg.lstsq(H[:, J.indices], -g[:, None]).solution[:, 0]
    hess = HessianSample(net, batches, cross_entropy_sum, weight_decay=1e-2)
    P = KFACPreconditioner(fit_factors(net, batches, cross_entropy_sum, len(y)), space, J, 1e-2)
    result = influence("gif", hess, J, g, SolverOptions(tol=1e-12, max_iter=400), preconditioner=P.apply)
    torch.testing.assert_close(result.delta, expected, rtol=1e-7, atol=1e-10)
    assert result.stats.true_residual < 1e-9


def test_preconditioner_refuses_what_it_cannot_do():
    net, x, y = _net_and_data()
    batches = batches_of(x, y, 5)
    space = ParamSpace.of(list(net.named_parameters()))
    J = IndexSet.everything(space)
    hess = HessianSample(net, batches, cross_entropy_sum)
    P = KFACPreconditioner(fit_factors(net, batches, cross_entropy_sum, len(y)), space, J).apply
    g = torch.ones(space.size, dtype=torch.float64)
    from gifcli.math.solvers import SolverArgumentError
    for opts in (SolverOptions(solver="exact"), SolverOptions(damping=1e-3), SolverOptions(system="direct", solver="cg")):
        with pytest.raises(SolverArgumentError):
            influence("gif", hess, J, g, opts, preconditioner=P)
