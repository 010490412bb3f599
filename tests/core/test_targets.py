"""The right-hand side of the influence solve: the forget gradient, or minus the retained objective's
gradient (--target remaining), against gradients written out by hand in float64."""
import torch

from gifcli.api import as_split
from gifcli.core.args import Runtime, UnlearnArgs
from gifcli.methods.influence.steps import retained_gradient, right_hand_side, stationarity_warning
from gifcli.core.tasks import Target
from gifcli.math.hvp import cross_entropy_sum


def softmax_regression(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 4).double()
    x = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (40,))
    return model, x, y


def hand_gradient(model, x, y):
    """sum_i grad of the cross-entropy of (x_i, y_i), flat (weight then bias), by the closed form."""
    W, b = model.weight.detach(), model.bias.detach()
    p = torch.softmax(x @ W.T + b, dim=1)
    r = p - torch.nn.functional.one_hot(y, 4).double()
    return torch.cat([(r.T @ x).reshape(-1), r.sum(0)])


def test_remaining_target_is_minus_the_retained_objectives_gradient():
    model, x, y = softmax_regression()
    forget, retain = (x[:10], y[:10]), (x[10:], y[10:])
    rt = Runtime(torch.device("cpu"), 8, 0, loss=cross_entropy_sum)
    pool_size, wd = 40, 0.01
    theta = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])
    args = UnlearnArgs("gif", target="remaining", gradient_samples=0)
    b, record = right_hand_side(model, Target(as_split(forget)[0], {}), pool_size, as_split(retain)[0], args, rt, wd)
    G = hand_gradient(model, *retain) / pool_size + wd * theta
    g = hand_gradient(model, *forget) / pool_size
    torch.testing.assert_close(b, -G, rtol=1e-12, atol=1e-14)
    assert abs(record["training_gradient_norm"] - float((g + G).norm())) < 1e-12
    assert abs(record["forget_gradient_norm"] - float(g.norm())) < 1e-12
    assert record["samples"] == 30 and record["target"] == "remaining"
    b_forget, _ = right_hand_side(model, Target(as_split(forget)[0], {}), pool_size, as_split(retain)[0],
                                  args.replace(target="forget"), rt, wd)
    torch.testing.assert_close(b_forget, g, rtol=1e-12, atol=1e-14)


def test_a_sample_of_the_retained_data_is_scaled_to_the_whole():
    model, x, y = softmax_regression(1)
    rt = Runtime(torch.device("cpu"), 8, 0, loss=cross_entropy_sum)
    split = as_split((x, y))[0]
    G, n = retained_gradient(model, split, 12, 3, 40, rt)
    pick = split.sample(12, 3).indices
    assert n == 12
    torch.testing.assert_close(G, hand_gradient(model, x[pick], y[pick]) * (40 / 12) / 40, rtol=1e-12, atol=1e-14)


def test_at_a_stationary_point_both_targets_agree_and_nothing_warns():
    """Train the regression (with its weight decay) to a stationary point: g = -G, so the paper's
    forget gradient and the remaining target are the same vector, and the check stays quiet."""
    model, x, y = softmax_regression(2)
    wd = 0.01
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=0)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum") / 40 + wd / 2 * sum(
            (p ** 2).sum() for p in model.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    rt = Runtime(torch.device("cpu"), 8, 0, loss=cross_entropy_sum)
    target = Target(as_split((x[:10], y[:10]))[0], {})
    retain = as_split((x[10:], y[10:]))[0]
    args = UnlearnArgs("gif", gradient_samples=0)
    g, rec = right_hand_side(model, target, 40, retain, args.replace(target="forget"), rt, wd)
    minus_G, _ = right_hand_side(model, target, 40, retain, args.replace(target="remaining"), rt, wd)
    torch.testing.assert_close(g, minus_G, rtol=0, atol=1e-9)
    assert rec["ratio"] < 1e-6 and stationarity_warning(rec) is None
    # off the optimum the paper's target warns, the remaining one does not need to
    with torch.no_grad():
        model.weight.add_(2 * torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    _, rec = right_hand_side(model, target, 40, retain, args.replace(target="forget"), rt, wd)
    assert rec["ratio"] > 1 and "stationary point" in stationarity_warning(rec)
    _, rec = right_hand_side(model, target, 40, retain, args.replace(target="remaining"), rt, wd)
    assert stationarity_warning(rec) is None


def test_the_masked_target_is_the_papers_gradient_reweighted_by_p_over_1_minus_p():
    """At the unedited weights, the gradient of CE(z, q) with q the model's own softmax with the trained
    label masked is -(p / (1 - p)) times the gradient of CE(z, label), image by image (p - q =
    -(p / (1 - p)) (p - e_y)): --target masked's right-hand side, against that identity written out."""
    from gifcli.methods.influence.steps import masked_target_gradient
    from gifcli.core.passes import masked_outputs

    model, x, y = softmax_regression(4)
    rt = Runtime(torch.device("cpu"), 8, 0, loss=cross_entropy_sum)
    forget = as_split((x[:12], y[:12]))[0]
    wanted = masked_outputs(model, forget, rt)
    # q: zero on the trained label, the other classes renormalised
    p = torch.softmax(model(x[:12]), 1).detach()
    assert torch.all(wanted[torch.arange(12), y[:12]] == 0)
    torch.testing.assert_close(wanted.sum(1), torch.ones(12, dtype=torch.float64), rtol=0, atol=1e-12)
    rhs = masked_target_gradient(model, Target(forget, {}), wanted, 40, rt)
    weights = (p[torch.arange(12), y[:12]] / (1 - p[torch.arange(12), y[:12]]))
    by_hand = sum(weights[i] * hand_gradient(model, x[i:i + 1], y[i:i + 1]) for i in range(12)) / 40
    torch.testing.assert_close(rhs, by_hand, rtol=1e-10, atol=1e-13)


class _Masked(torch.nn.Module):
    """A model's logits with one class's far below the rest (probability 0 in float32): what the masked
    target says a model that never saw the class outputs."""

    def __init__(self, model, label):
        super().__init__()
        self.model, self.label = model, label

    def forward(self, x):
        z = self.model(x).clone()
        z[:, self.label] = -1e4
        return z


def test_the_match_criterion_is_the_mean_kl_to_the_masked_outputs_among_scales_that_forget_the_class():
    """The scorer's KL against the explicit sum over the class's validation images, its forget bound
    (at most 0.5 % of the class still predicted as it) and its accuracy bound on the other images."""
    from gifcli.core.tasks import MATCH_FORGET_LIMIT, ClassRemoval, SplitData

    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()
    x = torch.randn(400, 3, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # four quadrants
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    xv = torch.randn(200, 3, dtype=torch.float64)
    yv = (xv[:, 0] > 0).long() + 2 * (xv[:, 1] > 0).long()
    rt = Runtime(torch.device("cpu"), 64, 0, loss=cross_entropy_sum)
    data = SplitData(as_split((x, y))[0], as_split((xv, yv))[0], None, 4)
    score = ClassRemoval(2).scorer("match", data, model, rt)

    mine = yv == 2
    with torch.no_grad():
        p = torch.softmax(model(xv[mine]), 1)
    q = p.clone()
    q[:, 2] = 0
    q = q / q.sum(1, keepdim=True)
    unedited = score(model)
    kl = float((q[:, [0, 1, 3]] * (q[:, [0, 1, 3]].log() - p[:, [0, 1, 3]].log())).sum(1).mean())
    assert abs(unedited["kl_to_target"] - kl) < 1e-6 * kl  # the outputs are float32
    assert unedited["forget"]["accuracy"] > MATCH_FORGET_LIMIT and not unedited["feasible"]
    masked = score(_Masked(model, 2))  # the target itself: nothing predicted as the class, KL 0, feasible
    assert masked["forget"]["accuracy"] == 0 and abs(masked["kl_to_target"]) < 1e-6 and masked["feasible"]
    # a model that forgets the class by breaking the others is not feasible
    broken = torch.nn.Sequential(torch.nn.Linear(3, 4).double())
    with torch.no_grad():
        broken[0].weight.zero_(), broken[0].bias.copy_(torch.tensor([0.0, 0.0, -9.0, 1.0]))
    assert not score(broken)["feasible"]


def _clusters(n, seed, k=5, d=6):
    """k well separated Gaussian clusters: a class can go without moving the others' boundaries."""
    means = 3 * torch.randn(k, d, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    return means[y] + torch.randn(n, d, generator=g, dtype=torch.float64), y


def _quadrants(n, seed):
    """Four classes that share boundaries: forgetting one moves the others' (no scale keeps them all)."""
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def _trained(x, y, classes, wd):
    """An MLP at a stationary point of its training objective (mean cross-entropy + wd / 2 |theta|^2)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 32), torch.nn.Tanh(), torch.nn.Linear(32, classes)).double()
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=0)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + wd / 2 * sum((p ** 2).sum() for p in model.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    return model


def test_a_class_at_a_stationary_point_is_edited_toward_its_masked_outputs_by_default():
    """gif's default for a class at a stationary point: steps toward the masked outputs, scale by
    match (the report says so); the class is forgotten on validation and the others kept. Where no
    scale of the first step meets match's bounds (classes that share boundaries) it takes the paper's
    step instead and says so; an explicit --target masked never falls back, it warns."""
    from gifcli import api

    x, y = _clusters(600, 0)
    xv, yv = _clusters(800, 1)
    model = _trained(x, y, 5, 1e-2)
    res = api.unlearn(model, train=(x, y), validation=(xv, yv), forget_label=3, ratio=0.5, hessian_samples=200,
                      damping=1e-3, weight_decay=1e-2)
    said = res.outcome.summary["decision"]
    assert "at a stationary point" in said and "toward the outputs with the class masked" in said, said
    assert res.outcome.summary["criterion"] == "match" and not res.outcome.summary.get("warnings")
    steps = res.outcome.hyper["steps"]
    assert 2 <= steps <= 8 and len(res.outcome.hyper["step_scales"]) == steps
    with torch.no_grad():
        pred = res.model(xv).argmax(1)
    assert float((pred[yv == 3] == 3).double().mean()) <= 0.01
    assert float((pred[yv != 3] == yv[yv != 3]).double().mean()) >= 0.995
    # the paper's estimators and the first-order baseline keep the paper's one step there
    res = api.unlearn(model, train=(x, y), validation=(xv, yv), forget_label=3, method="pif", ratio=0.5,
                      hessian_samples=200, damping=1e-3, weight_decay=1e-2)
    assert res.outcome.summary["decision"].endswith("the paper's one step") and "scale" in res.outcome.hyper

    x, y = _quadrants(600, 0)
    xv, yv = _quadrants(800, 1)
    model = _trained(x, y, 4, 0.0)
    res = api.unlearn(model, train=(x, y), validation=(xv, yv), forget_label=3, ratio=0.5, hessian_samples=200,
                      damping=1e-3)
    assert "the paper's one step instead" in res.outcome.summary["decision"] and "scale" in res.outcome.hyper
    assert res.outcome.summary["criterion"] == "f1"
    assert {r.get("target") for r in res.outcome.search} == {"masked", None}  # both searches are kept
    res = api.unlearn(model, train=(x, y), validation=(xv, yv), forget_label=3, ratio=0.5, hessian_samples=200,
                      damping=1e-3, target="masked", newton_steps=1)
    assert "instead" not in res.outcome.summary["decision"]
    assert any("criterion's bound" in w for w in res.outcome.summary["warnings"])
