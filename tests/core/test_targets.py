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
