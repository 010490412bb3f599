"""The challenge's forgetting score against the challenge's own code, and its parts by hand.

``data/forget_score_reference.json`` holds synthetic confidence distributions (overlapping,
shifted, perfectly separated, collapsed, mixed, heavy-tailed; N = 8 and 16 models a side) with the
forget score and per-example epsilons that google-deepmind/unlearning_evaluation's metric.py gives
for them (run once on a CPU, its code not part of this project; the file says how)."""
import json
import math
from pathlib import Path

import pytest
import torch

from gifcli.math.forgetting import EPSILON_CAP, buckets, example_epsilon, forget_score, logit_scaled_confidence

REFERENCE = json.loads((Path(__file__).parent / "data" / "forget_score_reference.json").read_text())
AGREEMENT = 1e-9


@pytest.mark.parametrize("name", sorted(REFERENCE["cases"]))
def test_the_score_and_every_epsilon_agree_with_the_reference(name):
    case = REFERENCE["cases"][name]
    got = forget_score(torch.tensor(case["unlearned"], dtype=torch.float64),
                       torch.tensor(case["retrained"], dtype=torch.float64))
    assert got.score == pytest.approx(case["forget_score"], abs=AGREEMENT)
    assert got.epsilons == pytest.approx(case["epsilons"], abs=AGREEMENT)


def test_perfect_separation_and_a_collapsed_distribution_get_the_cap():
    far = torch.tensor([10.0, 10.5, 11.0, 11.5, 12.0, 12.5], dtype=torch.float64)
    near = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64)
    assert example_epsilon(far, near) == EPSILON_CAP  # every threshold between them separates perfectly
    spike = torch.full((6,), 3.0, dtype=torch.float64) + torch.arange(6) * 1e-6
    assert example_epsilon(near + 1, spike) == EPSILON_CAP  # the narrower spans < 1 % of the wider


def test_identical_samples_give_zero_epsilon():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], dtype=torch.float64)
    assert example_epsilon(x, x.clone()) == pytest.approx(0.0, abs=1e-6)


def test_buckets_follow_the_number_of_models():
    assert buckets(8) == {0.0: 1.0, 0.5: 0.5, 1.0: 0.25, 1.5: 0.125}  # ceil(ln 7) = 2
    assert buckets(16) == {0.0: 1.0, 0.5: 0.5, 1.0: 0.25, 1.5: 0.125, 2.0: 0.0625, 2.5: 0.03125}  # ceil(ln 15) = 3
    assert math.ceil(math.log(512 - 1)) == 7 and len(buckets(512)) == 14


def test_logit_scaled_confidence_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [50.0, -50.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([0, 2, 1])
    p = torch.softmax(logits, 1)
    expected = [math.log(p[i, t]) - math.log(1 - p[i, t]) for i, t in enumerate(targets.tolist())]
    expected[2] = math.log(p[2, 1] + 1e-45) - math.log(p[2, 0] + p[2, 2] + 1e-45)  # p_y underflows: the reference's floor
    assert logit_scaled_confidence(logits, targets).tolist() == pytest.approx(expected, rel=1e-12)
    assert logit_scaled_confidence(logits, targets)[1] == pytest.approx(math.log(0.5), rel=1e-12)


def test_well_separated_samples_score_without_a_numpy_warning():
    """Two samples far apart leave thresholds on which both error rates are 1 (an all-NaN column of
    bounds): ``gif audit`` printed numpy's "All-NaN slice encountered" for them."""
    import warnings

    import torch

    from gifcli.math.forgetting import example_epsilon

    pos = torch.tensor([0.989, 0.982, 0.967, 1.075, 0.961, 1.087, 0.976, 0.994], dtype=torch.float64)
    neg = torch.tensor([-0.805, -0.202, 0.294, -0.003, -0.394, -0.272, -0.334, -0.230], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eps = example_epsilon(pos, neg)
    assert eps > 0
