"""gif's conv double backward and J-structured products against explicit float64 Hessians."""
import pytest
import torch
from torch import nn

from gifcli.math import fastconv
from gifcli.math.hvp import HessianSample, cross_entropy_sum
from gifcli.math.params import IndexSet

from .helpers import batches_of, explicit_hessian

RTOL, ATOL = 1e-6, 1e-10


def _convnet():
    """Every conv2d argument gif handles: stride pairs, padding, dilation, groups, no bias, 'same'."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, stride=2, padding=1), nn.Tanh(),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=2, bias=False), nn.Softplus(),
        nn.Conv2d(6, 4, 2, stride=(2, 1)), nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding="same"), nn.Tanh(),
        nn.Flatten(), nn.Linear(4 * 2 * 3, 3),
    ).double()
    x = torch.randn(9, 2, 7, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    assert model(x).shape == (9, 3)
    return model, batches_of(x, y, 4)


@pytest.fixture(scope="module")
def explicit():
    model, batches = _convnet()
    return explicit_hessian(model, batches, cross_entropy_sum)


def _row_set(space, fraction, seed, rows=True):
    """J = whole output rows of each weight (as gif's selection picks) + loose bias entries."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, shape in zip(space.names, space.shapes):
        if rows and len(shape) >= 2:
            pick = torch.rand(shape[0], generator=gen) < fraction
            pick[0] = True
            masks[name] = pick.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
        else:
            masks[name] = torch.rand(shape, generator=gen) < fraction
    return IndexSet.from_masks(space, masks)


@pytest.mark.parametrize("mode", ["retain", "recompute"])
def test_fast_hvp_matches_explicit_hessian(mode, explicit):
    model, batches = _convnet()
    H = explicit
    fast = HessianSample(model, batches, mode=mode, fast_conv=True)
    plain = HessianSample(model, batches, mode=mode, fast_conv=False)
    for seed in range(2):
        v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(fast.hvp(v), H @ v, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(plain.hvp(v), H @ v, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("rows", [True, False])
def test_structured_products_match_explicit(rows, explicit):
    """(H_J^T H_J) v (eq. 13) and H_JJ v (eq. 10) with the J-structured kernels, vs explicit."""
    model, batches = _convnet()
    H = explicit
    hess = HessianSample(model, batches)
    J = _row_set(hess.space, 0.3, seed=5, rows=rows)
    idx = J.indices
    v = torch.randn(J.size, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    HJ = H[:, idx]
    normal = J.gather(hess.hvp(hess.hvp(J.scatter(v)), only=J))
    torch.testing.assert_close(normal, HJ.T @ (HJ @ v), rtol=RTOL, atol=ATOL)
    frozen = J.gather(hess.hvp(J.scatter(v), only=J))
    torch.testing.assert_close(frozen, H[idx][:, idx] @ v, rtol=RTOL, atol=ATOL)


def test_structure_is_used(monkeypatch):
    """With row-sparse tangents and only=J, kernels run on fewer output channels than the layer has."""
    model, batches = _convnet()
    hess = HessianSample(model, batches)
    J = _row_set(hess.space, 0.3, seed=5)
    calls = []
    real = fastconv._aten_conv_backward

    def spy(grad_out, x, weight, *rest):
        calls.append(weight.shape[0])
        return real(grad_out, x, weight, *rest)

    monkeypatch.setattr(fastconv, "_aten_conv_backward", spy)
    hess.hvp(hess.hvp(J.scatter(torch.ones(J.size, dtype=torch.float64))), only=J)
    full = {m.out_channels for m in model if isinstance(m, nn.Conv2d)}
    assert calls and any(c not in full for c in calls), calls


def test_third_derivative_matches_builtin():
    """The second-order backward is itself differentiable: d/dtheta <v, H(theta) v> is exact."""
    model, batches = _convnet()
    params = [p.detach().requires_grad_(True) for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]
    x, y = batches[0]
    vs = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype) for i, p in enumerate(params)]

    def third(fast):
        with fastconv.fast_conv_double_backward() if fast else torch.enable_grad():
            out = torch.func.functional_call(model, dict(zip(names, params)), (x,))
            g = torch.autograd.grad(cross_entropy_sum(out, y), params, create_graph=True)
        hv = torch.autograd.grad(g, params, grad_outputs=vs, create_graph=True)
        quad = sum((h * v).sum() for h, v in zip(hv, vs))
        return torch.cat([t.reshape(-1) for t in torch.autograd.grad(quad, params)])

    torch.testing.assert_close(third(True), third(False), rtol=1e-9, atol=1e-12)
