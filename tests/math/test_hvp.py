import pytest
import torch
from torch import nn

from gifcli.math.hvp import HVP_MODES, HessianSample, cross_entropy_sum
from gifcli.models.zoo import PaperCNN

from .helpers import TanhMLP, batches_of, explicit_gradient, explicit_hessian, flat_loss_fn

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


def test_hvp_through_batchnorm_in_eval_mode():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 4),
                          nn.BatchNorm1d(4)).double()
    with torch.no_grad():  # non-trivial running statistics, as after training
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[5].running_mean.uniform_(-0.5, 0.5)
        model[5].running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(9, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (9,))
    batches = batches_of(x, y, 4)
    H = explicit_hessian(model, batches, cross_entropy_sum)
    hess = HessianSample(model, batches)
    for seed in range(2):
        v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(hess.hvp(v), H @ v, rtol=RTOL, atol=ATOL)
    assert not model.training and float(model[1].running_mean.abs().sum()) > 0


def _finite_difference_hvp(model, batches, v, eps=1e-5):
    """(grad L(theta + eps v) - grad L(theta - eps v)) / (2 eps): first-order backward only."""
    f, theta = flat_loss_fn(model, batches, cross_entropy_sum)

    def grad_at(t):
        t = t.clone().requires_grad_(True)
        return torch.autograd.grad(f(t), t)[0]

    return (grad_at(theta + eps * v) - grad_at(theta - eps * v)) / (2 * eps)


class _HardSwishNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.l2(nn.functional.hardswish(self.l1(x)) * nn.functional.hardsigmoid(self.l1(x)))


class _AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):  # x: (B, 5 tokens, 4)
        a = nn.functional.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x))
        return self.out(a.mean(1))


@pytest.mark.parametrize("net,shape", [(_HardSwishNet, (12, 4)), (_AttentionNet, (12, 5, 4))])
def test_hvp_through_ops_pytorch_cannot_differentiate_twice(net, shape):
    """hardswish/hardsigmoid (MobileNetV3) and fused attention have no double backward in PyTorch;
    gif's products must still be the true ones (checked against finite differences of gradients)."""
    torch.manual_seed(6)
    model = net().double()
    x = torch.randn(*shape, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (shape[0],))
    batches = batches_of(x, y, 5)
    hess = HessianSample(model, batches)
    v = torch.randn(hess.space.size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(hess.hvp(v), _finite_difference_hvp(model, batches, v), rtol=1e-5, atol=1e-8)


def test_reduce_hook_sums_shards():
    """Two shards of the sample with a summing reduce give the product of the whole sample."""
    model, batches = _mlp_case()
    whole = HessianSample(model, batches)
    n = whole.n_samples
    shards = [HessianSample(model, batches[i::2], total=n) for i in range(2)]
    v = torch.randn(whole.space.size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    parts = [s.hvp(v) for s in shards]
    summed = HessianSample(model, batches[0::2], total=n, reduce=lambda t: t.add_(parts[1]))
    torch.testing.assert_close(summed.hvp(v), whole.hvp(v), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(parts[0] + parts[1], whole.hvp(v), rtol=1e-12, atol=1e-14)
