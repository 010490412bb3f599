import pytest
import torch
from torch import nn

from gifcli.math.hvp import HVP_MODES, HessianSample, cross_entropy_sum
from gifcli.models.zoo import PaperCNN

from .helpers import TanhMLP, batches_of, explicit_gradient, explicit_hessian

RTOL = 1e-6
ATOL = 1e-10


def _mlp_case():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x = torch.randn(23, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (23,))
    return model, batches_of(x, y, 7)  # four batches, the last one short


def _cnn_case():
    torch.manual_seed(2)
    model = PaperCNN((1, 6, 6), 3, widths=(2, 3)).double()
    x = torch.randn(10, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    return model, batches_of(x, y, 4)


@pytest.mark.parametrize("case", [_mlp_case, _cnn_case])
@pytest.mark.parametrize("mode", HVP_MODES)
def test_hvp_matches_explicit_hessian(case, mode):
    model, batches = case()
    H = explicit_hessian(model, batches, cross_entropy_sum)
    hess = HessianSample(model, batches, mode=mode)
    for seed in range(3):
        v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(hess.hvp(v), H @ v, rtol=RTOL, atol=ATOL)
    assert hess.products == 3


def test_gradient_matches_explicit():
    model, batches = _mlp_case()
    g = explicit_gradient(model, batches, cross_entropy_sum)
    torch.testing.assert_close(HessianSample(model, batches).gradient(), g, rtol=RTOL, atol=ATOL)


def test_model_parameters_untouched():
    model, batches = _mlp_case()
    before = [p.detach().clone() for p in model.parameters()]
    HessianSample(model, batches).hvp(torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64))
    for b, p in zip(before, model.parameters()):
        assert torch.equal(b, p.detach()) and p.grad is None


def test_tanh_mlp_hessian_is_symmetric_reference():
    # guards the reference itself: the explicit Hessian must be symmetric
    torch.manual_seed(3)
    model = TanhMLP().double()
    x, y = torch.randn(12, 3, dtype=torch.float64), torch.randint(0, 3, (12,))
    H = explicit_hessian(model, batches_of(x, y, 5), cross_entropy_sum)
    torch.testing.assert_close(H, H.T)
