import pytest
import torch
from torch import nn

from gifcli.math.hvp import mean_loss_gradient
from gifcli.math.selection import CRITERIA, gradient_scores, output_scores, select, selectable_layers
from gifcli.models.zoo import PaperCNN


def _model_and_data():
    torch.manual_seed(8)
    model = PaperCNN((1, 8, 8), 4, widths=(6, 8)).double()
    x = torch.randn(16, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (16,))
    return model, [(x[:9], y[:9]), (x[9:], y[9:])]


def _scores(model, batches, criterion):
    if criterion == "topk-gradients":
        return gradient_scores(model, mean_loss_gradient(model, batches))
    if criterion in ("topk-outputs", "threshold"):
        return output_scores(model, batches)
    return None


@pytest.mark.parametrize("criterion", [c for c in CRITERIA if c != "all"])
@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.3, 0.5, 1.0])
def test_fraction_per_layer(criterion, ratio):
    model, batches = _model_and_data()
    J = select(model, criterion, ratio, _scores(model, batches, criterion), seed=3)
    counts = J.counts()
    for name, module in selectable_layers(model):
        n = module.weight.numel() + module.bias.numel()
        got = counts[f"{name}.weight"] + counts[f"{name}.bias"]
        unit = module.weight[0].numel() + 1
        assert abs(got - ratio * n) <= unit, (name, got, ratio * n)


def test_topk_outputs_picks_largest_mean_abs_activation():
    model, batches = _model_and_data()
    x = torch.cat([b[0] for b in batches])
    # the dumb way: run each layer's output explicitly
    conv1, conv2 = model.features[0], model.features[2]
    a1 = conv1(x)
    a2 = conv2(torch.relu(a1))
    a3 = model.fc(torch.relu(a2).flatten(1))
    ratio = 0.3
    J = select(model, "topk-outputs", ratio, output_scores(model, batches))
    masks = J.masks()
    for name, act, mod in (("features.0", a1, conv1), ("features.2", a2, conv2), ("fc", a3, model.fc)):
        dims = [0, 2, 3] if act.dim() == 4 else [0]
        score = act.abs().mean(dim=dims)
        n = mod.weight.numel() + mod.bias.numel()
        whole = int(ratio * n) // (mod.weight[0].numel() + 1)
        expected = set(torch.argsort(score, descending=True)[:whole].tolist())
        chosen = set(torch.nonzero(masks[f"{name}.bias"]).reshape(-1).tolist())
        assert chosen == expected
        rows_full = masks[f"{name}.weight"].reshape(mod.weight.shape[0], -1).all(1)
        assert set(torch.nonzero(rows_full).reshape(-1).tolist()) == expected


def test_same_seed_same_J_and_different_seed_differs():
    model, batches = _model_and_data()
    a = select(model, "random", 0.2, seed=1)
    b = select(model, "random", 0.2, seed=1)
    c = select(model, "random", 0.2, seed=2)
    assert torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, c.indices)
    s = output_scores(model, batches)
    assert torch.equal(select(model, "threshold", 0.2, s, seed=4).indices, select(model, "threshold", 0.2, s, seed=4).indices)


def test_all_and_bad_arguments():
    model, batches = _model_and_data()
    assert select(model, "all", 1.0).size == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError):
        select(model, "random", 0.0)
    with pytest.raises(ValueError):
        select(model, "random", 1.5)
    with pytest.raises(ValueError):
        select(model, "biggest", 0.1)


def test_gradient_scores_are_row_l1_norms():
    model = nn.Sequential(nn.Linear(3, 2)).double()
    grad = torch.arange(8, dtype=torch.float64) - 3.0  # W = [[-3,-2,-1],[0,1,2]], b = [3,4]
    s = gradient_scores(model, grad)["0"]
    torch.testing.assert_close(s, torch.tensor([6.0 + 3.0, 3.0 + 4.0], dtype=torch.float64))
