"""SSD, fine-tuning, NegGrad and the SVC membership attack, against hand computations."""
import copy

import pytest
import torch
from torch import nn

from gifcli.core.args import Runtime, UnlearnArgs
from gifcli.core.search import search as _search
from gifcli.methods.finetune import Finetune
from gifcli.methods.neggrad import NegGrad
from gifcli.methods.ssd import dampen, importances
from gifcli.core.methods import ModelContext
from gifcli.core.metrics import attack_features, svc_share
from gifcli.core.tasks import GivenForget, SplitData
from gifcli.data.datasets import ImageTensors, Split


def _tiny():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()
    x = torch.randn(40, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    return model, x, y


def test_ssd_matches_a_hand_computation():
    model, x, y = _tiny()
    split = Split.of(ImageTensors(x, y))
    forget = split.where(torch.arange(8))
    rt = Runtime(batch_size=16)
    d, df = importances(model, split, rt), importances(model, forget, rt)

    def by_hand(xs, ys, size):
        params = list(model.parameters())
        acc = [torch.zeros_like(p) for p in params]
        batches = [(xs[i:i + size], ys[i:i + size]) for i in range(0, len(ys), size)]
        for xb, yb in batches:
            grads = torch.autograd.grad(nn.functional.cross_entropy(model(xb), yb), params)
            acc = [a + g ** 2 for a, g in zip(acc, grads)]
        return [a / len(batches) for a in acc]

    for mine, ref in zip(d + df, by_hand(x, y, 16) + by_hand(x[:8], y[:8], 16)):
        torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-15)
    alpha, lam = 2.0, 0.5
    edited = dampen(model, d, df, alpha, lam)
    for p0, p1, di, dfi in zip(model.parameters(), edited.parameters(), d, df):
        expected = p0.detach().clone()
        for i in range(expected.numel()):
            if dfi.view(-1)[i] > alpha * di.view(-1)[i]:
                expected.view(-1)[i] *= min(lam * float(di.view(-1)[i] / dfi.view(-1)[i]), 1.0)
        torch.testing.assert_close(p1.detach(), expected, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), edited.parameters()))


def _candidates(method, model, x, y, forget_idx):
    split = Split.of(ImageTensors(x, y))
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[forget_idx] = False
    data = SplitData(split.where(keep), split.where(keep), None, 3)
    task = GivenForget(split.where(forget_idx))
    ctx = ModelContext(0.0, {"momentum": 0.9, "weight_decay": 0.0})
    return [(h, copy.deepcopy(m)) for h, m in method.candidates(model, task, data, UnlearnArgs(method.name),
                                                                 Runtime(batch_size=8),
                                                                 ctx)]


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_finetune_uses_only_the_retained_data_and_neggrad_only_the_forget_set():
    model, x, y = _tiny()
    before = copy.deepcopy(model)
    forget_idx = torch.arange(10)
    ft = _candidates(Finetune(), model, x, y, forget_idx)
    ng = _candidates(NegGrad(), model, x, y, forget_idx)
    assert _same(model, before)  # the input model is never touched
    x2 = x.clone()
    x2[:10] += 3.0  # other forget samples, the same retained ones
    for (h, a), (_, b) in zip(ft, _candidates(Finetune(), model, x2, y, forget_idx)):
        assert _same(a, b), h
    assert not _same(ng[0][1], _candidates(NegGrad(), model, x2, y, forget_idx)[0][1])
    x3 = x.clone()
    x3[10:] += 3.0  # the same forget samples, other retained ones
    for (h, a), (_, b) in zip(ng, _candidates(NegGrad(), model, x3, y, forget_idx)):
        assert _same(a, b), h
    # neggrad ascends the forget loss; finetune descends the retained loss
    loss = lambda m, sl: float(nn.functional.cross_entropy(m(x[sl]).detach(), y[sl]))  # noqa: E731
    assert loss(ng[0][1], slice(0, 10)) > loss(model, slice(0, 10))
    assert loss(ft[0][1], slice(10, 40)) < loss(model, slice(10, 40))
    assert [h["epochs"] for h, _ in ft[:2]] == [1, 2] and [h["passes"] for h, _ in ng[:3]] == [1, 2, 3]


def test_a_diverged_candidate_is_skipped_and_all_diverged_is_refused():
    """A candidate whose weights are finite but whose loss overflows (gradient ascent that ran away)
    is recorded as diverged and never chosen; a search with nothing else to choose is refused."""
    from gifcli.errors import NonFiniteError

    def scorer(model):
        w = float(model.weight.detach().abs().max())
        if w > 100:
            raise NonFiniteError("the model's loss is not finite on the validation samples")
        return {"objective": w, "feasible": True}

    def candidates(sizes):
        for size in sizes:
            m = nn.Linear(2, 2)
            with torch.no_grad():
                m.weight.fill_(size)
            yield {"size": size}, m

    rt = Runtime(batch_size=8)
    best, rows = _search(candidates([1.0, 5.0, 1e30]), scorer, rt, "neggrad", 3)
    assert float(best.weight.detach()[0, 0]) == 5.0  # the best finite one, though the diverged one "grew" most
    assert rows[2]["objective"] is None and "not finite" in rows[2]["diverged"]
    with pytest.raises(NonFiniteError, match="every candidate diverged"):
        _search(candidates([1e30, 1e31]), scorer, rt, "neggrad", 2)


def test_svc_attack_on_separable_and_identical_data():
    gen = torch.Generator().manual_seed(0)
    members = torch.randn(400, 1, generator=gen, dtype=torch.float64)
    outsiders = torch.randn(400, 1, generator=gen, dtype=torch.float64) + 6.0
    probes = torch.randn(300, 1, generator=gen, dtype=torch.float64)
    assert svc_share(members, outsiders, probes) > 0.98
    same = torch.randn(400, 1, generator=gen, dtype=torch.float64)
    probes = torch.randn(2000, 1, generator=gen, dtype=torch.float64)
    assert 0.35 < svc_share(members, same, probes) < 0.65


def test_attack_features_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    p = torch.softmax(logits, 1)[0]
    f = attack_features(logits, torch.tensor([1]))
    assert float(f["correctness"]) == 0.0 and float(f["confidence"]) == pytest.approx(float(p[1]))
    assert float(f["entropy"]) == pytest.approx(float(-(p * p.log()).sum()))
    m = -(1 - p[1]) * p[1].log() - p[0] * (1 - p[0]).log() - p[2] * (1 - p[2]).log()
    assert float(f["m_entropy"]) == pytest.approx(float(m))


def test_a_search_with_no_setting_inside_the_criterions_bound_says_so():
    """privacy keeps validation accuracy within 0.5 points; when every setting breaks that bound the
    best-scoring one is kept and the outcome carries a warning (the CLI prints it, report.json and
    the harness record it), never a silent choice."""
    torch.manual_seed(0)
    x = torch.randn(60, 4, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(4, 2).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 0], model.weight[0, 0] = 5.0, -5.0  # the rule itself: 100 % on these points
    split = Split.of(ImageTensors(x, y))
    data = SplitData(split.where(torch.arange(10, 40)), split.where(torch.arange(40, 60)), None, 2)
    task = GivenForget(split.where(torch.arange(10)))
    rt = Runtime(batch_size=8)

    class Scripted(Finetune):  # the search and its bookkeeping are Finetune's; the settings are given
        def __init__(self, flips):
            self.flips = flips

        def candidates(self, model, task, data, args, rt, ctx):
            for i, flip in enumerate(self.flips):
                m = copy.deepcopy(model)
                with torch.no_grad():
                    m.weight.mul_(flip)  # -1: every answer swapped, validation accuracy 0 %
                yield {"lr": 0.1 * (i + 1), "epochs": 1}, m

    ctx = ModelContext(0.0, {})
    bad = Scripted([-1.0, -1.0]).unlearn(model, task, data, UnlearnArgs("finetune"), rt, ctx)
    assert not any(r["feasible"] for r in bad.search)
    (warning,) = bad.summary["warnings"]
    assert "none of the 2 settings tried met the privacy criterion's bound" in warning
    good = Scripted([1.0, -1.0]).unlearn(model, task, data, UnlearnArgs("finetune"), rt, ctx)
    assert good.search[0]["feasible"] and not good.summary.get("warnings")
    assert good.hyper["lr"] == 0.1
