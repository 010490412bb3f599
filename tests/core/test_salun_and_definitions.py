"""SalUn, random labelling, NegGrad+ and SSD as their papers define them, against hand computations."""
import copy

import pytest
import torch
from torch import nn

from gifcli.core.args import Runtime, UnlearnArgs
from gifcli.core.methods import ModelContext
from gifcli.core.tasks import GivenForget, SplitData
from gifcli.data.datasets import ImageTensors, Split
from gifcli.methods import neggrad as neggrad_module
from gifcli.methods import ssd as ssd_module
from gifcli.methods.salun import RandomLabels, SalUn, saliency_mask


def _setup(n=48, forget=8):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    x = torch.randn(n, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    split = Split.of(ImageTensors(x, y))
    keep = torch.ones(n, dtype=torch.bool)
    keep[:forget] = False
    data = SplitData(split.where(keep), split.where(keep), None, 3)
    task = GivenForget(split.where(torch.arange(forget)))
    ctx = ModelContext(0.0, {"momentum": 0.9, "weight_decay": 5e-4})
    return model, x, y, data, task, ctx


def test_the_saliency_mask_keeps_the_largest_forget_gradients():
    model, x, y, data, task, ctx = _setup()
    mask = saliency_mask(copy.deepcopy(model), task.target(data).split, Runtime(batch_size=4), 0.25)
    # by hand: the sum over batches of 4 of the batch-mean loss gradient, then the top quarter of |g|
    params = list(model.parameters())
    g = [torch.zeros_like(p) for p in params]
    for i in range(0, 8, 4):
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x[i:i + 4]), y[i:i + 4]), params)
        g = [a + b for a, b in zip(g, grads)]
    flat = torch.cat([t.abs().reshape(-1) for t in g])
    order = torch.argsort(flat, descending=True)
    expected = torch.zeros_like(flat)
    expected[order[: round(0.25 * flat.numel())]] = 1
    assert torch.equal(torch.cat([m.reshape(-1) for m in mask]), expected)


def test_salun_moves_only_the_salient_weights_and_rl_moves_them_all():
    model, x, y, data, task, ctx = _setup()
    rt = Runtime(batch_size=8)
    args = UnlearnArgs("salun", lrs=(0.1,), epochs=2, mask_ratio=0.3)
    mask = saliency_mask(copy.deepcopy(model), task.target(data).split, rt, 0.3)
    candidates = [(h, copy.deepcopy(m)) for h, m in SalUn().candidates(model, task, data, args, rt, ctx)]
    assert [h["epochs"] for h, _ in candidates] == [1, 2]
    for _, edited in candidates:
        for p0, p1, m in zip(model.parameters(), edited.parameters(), mask):
            assert torch.equal(p1[m == 0], p0[m == 0])  # exactly where they were, weight decay included
            assert not torch.equal(p1[m == 1], p0[m == 1])
    rl = [m for _, m in RandomLabels().candidates(model, task, data, UnlearnArgs("rl", lrs=(0.1,), epochs=1), rt,
                                                   ctx)]
    moved = torch.cat([(p1 != p0).reshape(-1) for p0, p1 in zip(model.parameters(), rl[0].parameters())])
    assert bool(moved.all())


def test_random_labelling_relabels_the_forget_set_and_keeps_the_retained_labels(monkeypatch):
    model, x, y, data, task, ctx = _setup()
    seen = []
    real = neggrad_module.mean_loss

    def spy(m, rt, xb, yb):
        seen.append((xb.clone(), yb.clone()))
        return real(m, rt, xb, yb)

    import gifcli.methods.salun as salun_module

    monkeypatch.setattr(salun_module, "mean_loss", spy)
    list(RandomLabels().candidates(model, task, data, UnlearnArgs("rl", lrs=(0.1,), epochs=1), Runtime(batch_size=8),
                                   ctx))
    forget_rows = {tuple(r.tolist()) for r in x[:8]}
    labels_of = {tuple(r.tolist()): int(t) for r, t in zip(x, y)}
    f = [(xb, yb) for xb, yb in seen if tuple(xb[0].tolist()) in forget_rows]
    r = [(xb, yb) for xb, yb in seen if tuple(xb[0].tolist()) not in forget_rows]
    assert sum(len(b[1]) for b in f) == 8 and sum(len(b[1]) for b in r) == 40  # one epoch: each set once, forget first
    assert seen[0][0][0].tolist() in [row.tolist() for row in x[:8]]
    assert all(int(t) == labels_of[tuple(row.tolist())] for xb, yb in r for row, t in zip(xb, yb))
    relabelled = torch.cat([yb for _, yb in f])
    true = torch.tensor([labels_of[tuple(row.tolist())] for xb, _ in f for row in xb])
    assert not torch.equal(relabelled, true)  # drawn at random (equal by chance in (1/3)^8 of draws)


def test_neggrad_plus_walks_the_retained_data_once_and_cycles_the_forget_set(monkeypatch):
    model, x, y, data, task, ctx = _setup(n=72, forget=6)
    calls = []
    real = neggrad_module.mean_loss

    def spy(m, rt, xb, yb):
        calls.append(len(yb))
        return real(m, rt, xb, yb)

    monkeypatch.setattr(neggrad_module, "mean_loss", spy)
    args = UnlearnArgs("neggrad+", lrs=(0.01,), betas=(0.9,), passes=1)
    list(neggrad_module.NegGradPlus().candidates(model, task, data, args, Runtime(batch_size=8), ctx))
    retained, forget = calls[0::2], calls[1::2]  # each step: a retained batch, then a forget batch
    assert sum(retained) == 66 and len(retained) == 9  # one walk over the 66 retained samples
    assert sum(forget) == 9 * 6 and len(forget) == 9  # the 6 forget samples, cycled: 9 batches of 6


def test_ssd_importances_are_over_what_the_model_was_trained_on(monkeypatch):
    """For the API's forget set (retained data given as `train`), SSD's D is the retained data and
    the forget set together: the data the model was trained on."""
    model, x, y, data, task, ctx = _setup()
    sizes = []
    real = ssd_module.importances

    def spy(m, split, rt):
        sizes.append(len(split))
        return real(m, split, rt)

    monkeypatch.setattr(ssd_module, "importances", spy)
    gen = ssd_module.SSD().candidates(model, task, data, UnlearnArgs("ssd", alphas=(10.0,), lambdas=(1.0,)),
                                      Runtime(batch_size=8), ctx)
    next(gen)
    assert sizes == [48, 8]


def test_a_method_argument_of_another_method_is_refused():
    from gifcli.errors import UsageError

    with pytest.raises(UsageError, match="has no argument mask_ratio"):
        UnlearnArgs("rl", mask_ratio=0.5)
    with pytest.raises(UsageError, match="mask_ratio must be in"):
        UnlearnArgs("salun", mask_ratio=0.0)
