import pytest
import torch
from torch import nn

from gifcli.math.hvp import mean_loss_gradient
from gifcli.math.selection import (CRITERIA, SelectionError, gradient_scores, layers_of, output_scores, select,
                                   selectable_layers)
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
def test_quota_per_layer_is_exact(criterion, ratio):
    model, batches = _model_and_data()
    counts = select(model, criterion, ratio, _scores(model, batches, criterion), seed=3).J.counts()
    for name, module in selectable_layers(model):
        n = module.weight.numel() + module.bias.numel()
        assert counts[f"{name}.weight"] + counts[f"{name}.bias"] == int(ratio * n + 1e-9), name


def test_topk_outputs_picks_largest_mean_abs_activation():
    model, batches = _model_and_data()
    x = torch.cat([b[0] for b in batches])
    # the dumb way: run each layer's output explicitly
    conv1, conv2 = model.features[0], model.features[2]
    a1 = conv1(x)
    a2 = conv2(torch.relu(a1))
    a3 = model.fc(torch.relu(a2).flatten(1))
    ratio = 0.3
    for score, fn in (("abs", torch.abs), ("positive", torch.relu)):
        masks = select(model, "topk-outputs", ratio, output_scores(model, batches, score)).J.masks()
        for name, act, mod in (("features.0", a1, conv1), ("features.2", a2, conv2), ("fc", a3, model.fc)):
            dims = [0, 2, 3] if act.dim() == 4 else [0]
            s = fn(act).mean(dim=dims)
            n = mod.weight.numel() + mod.bias.numel()
            whole = int(ratio * n) // (mod.weight[0].numel() + 1)
            expected = set(torch.argsort(s, descending=True)[:whole].tolist())
            chosen = set(torch.nonzero(masks[f"{name}.bias"]).reshape(-1).tolist())
            assert chosen == expected, (score, name)
            rows_full = masks[f"{name}.weight"].reshape(mod.weight.shape[0], -1).all(1)
            assert set(torch.nonzero(rows_full).reshape(-1).tolist()) == expected


def test_positive_score_never_ranks_a_dead_unit_first():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([-5.0, 0.1, 0.2, 0.3], dtype=torch.float64))  # unit 0 never activates
    batches = [(torch.randn(10, 3, dtype=torch.float64), torch.zeros(10, dtype=torch.int64))]
    quota_one_unit = 4 / (4 * 3 + 4)
    abs_J = select(model, "topk-outputs", quota_one_unit, output_scores(model, batches, "abs")).J.masks()
    pos_J = select(model, "topk-outputs", quota_one_unit, output_scores(model, batches, "positive")).J.masks()
    assert bool(abs_J["0.bias"][0]) and not bool(pos_J["0.bias"][0])
    assert bool(pos_J["0.bias"][3])


def test_random_selection_is_the_seeded_permutation():
    model, _ = _model_and_data()
    J = select(model, "random", 0.25, seed=5).J
    masks = J.masks()
    for layer_index, (name, mod) in enumerate(selectable_layers(model)):
        n_units, unit = mod.weight.shape[0], mod.weight[0].numel() + 1
        whole = int(0.25 * (mod.weight.numel() + n_units) + 1e-9) // unit
        perm = torch.randperm(n_units, generator=torch.Generator().manual_seed(5 * 1_000_003 + layer_index))
        assert set(torch.nonzero(masks[f"{name}.bias"]).reshape(-1).tolist()) == set(perm[:whole].tolist())
    assert not torch.equal(J.indices, select(model, "random", 0.25, seed=6).J.indices)


def test_all_and_bad_arguments():
    model, _ = _model_and_data()
    assert select(model, "all", 1.0).J.size == sum(p.numel() for p in model.parameters())
    for ratio in (0.0, 1.5):
        with pytest.raises(SelectionError):
            select(model, "random", ratio)
    with pytest.raises(SelectionError):
        select(model, "biggest", 0.1)


def test_gradient_scores_are_row_l1_norms():
    model = nn.Sequential(nn.Linear(3, 2)).double()
    grad = torch.arange(8, dtype=torch.float64) - 3.0  # W = [[-3,-2,-1],[0,1,2]], b = [3,4]
    s = gradient_scores(model, grad)["0"]
    torch.testing.assert_close(s, torch.tensor([6.0 + 3.0, 3.0 + 4.0], dtype=torch.float64))


def test_other_layers_are_skipped_and_named():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3),
                          nn.LayerNorm(3), nn.ConvTranspose1d(1, 1, 1))
    layers, skipped = layers_of(model)
    assert [layer.name for layer in layers] == ["0", "4"]
    assert {s["module"]: s["type"] for s in skipped} == {"1": "BatchNorm1d", "5": "LayerNorm", "6": "ConvTranspose1d"}
    sel = select(model, "random", 0.5)
    assert sel.skipped == skipped
    counts = sel.J.counts()
    assert counts["1.weight"] == counts["5.weight"] == counts["6.weight"] == 0
    assert counts["0.weight"] + counts["0.bias"] == int(0.5 * (4 * 2 * 3 + 4))


def test_grouped_convolution_units_are_output_channels():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=4), nn.Flatten())
    sel = select(model, "random", 0.25, seed=1)
    m = sel.J.masks()["0.weight"].reshape(8, -1)
    assert int(m.all(1).sum()) == int(0.25 * (8 * 1 * 9 + 8)) // 10


def test_exported_graph_is_selected_by_parameter_shape():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    ep = torch.export.export(model, (torch.randn(2, 1, 6, 6),)).module()
    layers, _ = layers_of(ep)
    assert sorted(layer.weight for layer in layers) == ["0.weight", "3.weight"]
    sel = select(ep, "random", 0.5, seed=0)
    assert sel.J.size == sum(int(0.5 * (p.numel())) for p in []) + int(0.5 * (4 * 9 + 4)) + int(0.5 * (3 * 64 + 3))
    with pytest.raises(SelectionError, match="topk-gradients"):
        output_scores(ep, [(torch.randn(2, 1, 6, 6), torch.zeros(2, dtype=torch.int64))])
