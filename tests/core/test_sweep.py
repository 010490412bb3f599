import math

import pytest
import torch
from torch import nn

from gifcli.methods.influence.steps import SEARCH_FACTOR, search_scale, sweep_scales
from gifcli.parsing import parse_scales
from gifcli.core.search import best_row
from gifcli.errors import NonFiniteError, UsageError
from gifcli.math.params import IndexSet, ParamSpace


def _model_and_J():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0]]))
    J = IndexSet.from_indices(ParamSpace.of(list(model.named_parameters())), torch.tensor([0]))
    return model, J


def _scorer(target: float, feasible_below: float = math.inf):
    """Objective -(log w - log target)^2 of the edited weight w = 1 - s * (-1) = 1 + s: best at s = target - 1."""

    def score(model):
        w = float(model.weight.detach()[0, 0])
        return {"objective": -(math.log(w) - math.log(target)) ** 2, "feasible": w < feasible_below, "w": w}

    return score


def test_sweep_finds_an_interior_optimum_to_its_refinement():
    model, J = _model_and_J()
    grid = [2 ** (k / 2) for k in range(-20, 23)]
    best, rows = sweep_scales(model, J, torch.tensor([-1.0]), grid, _scorer(1 + 5.0))
    # the refinement halves the grid step twice: within a factor 2^(1/8) of the true optimum (s = 5)
    assert 5.0 / 2 ** 0.125 <= best <= 5.0 * 2 ** 0.125
    assert best == max(rows, key=lambda r: (r["objective"], -r["scale"]))["scale"]
    assert rows == sorted(rows, key=lambda r: r["scale"])


@pytest.mark.parametrize("optimum", [3e-3, 0.3, 1.0, 5.0, 26.9, 3000.0])
def test_search_brackets_then_refines_to_a_quarter_octave_in_few_candidates(optimum):
    model, J = _model_and_J()
    best, rows = sweep_scales(model, J, torch.tensor([-1.0]), None, _scorer(1 + optimum))
    # refined by x2, x sqrt 2, x 2^(1/4): within 2^(1/8) of the best scale in a 2^(1/4) grid around it
    assert optimum / 2 ** 0.25 < best < optimum * 2 ** 0.25
    # the best scored row is the choice, and every row is a distinct scale
    assert best == max(rows, key=lambda r: (r["objective"], -r["scale"]))["scale"]
    assert len({r["scale"] for r in rows}) == len(rows)
    # bracketing walks log4 of the distance from 1, plus at most 6 refinements (the old grid scored ~45)
    walk = math.ceil(abs(math.log(optimum, SEARCH_FACTOR))) + 3
    assert len(rows) <= walk + 6


def test_search_walks_up_a_plateau_where_nothing_has_changed_yet():
    """Small scales leave the model as it was (the unedited objective): the search keeps going up."""
    model, J = _model_and_J()

    def score(model):
        w = float(model.weight.detach()[0, 0])
        objective = 0.0 if w < 100 else -(math.log(w) - math.log(400.0)) ** 2 + 1
        return {"objective": objective, "feasible": True}

    unedited = {"scale": 0.0, **score(model)}
    best, rows = search_scale(model, J, torch.tensor([-1.0]), score, unedited=unedited)
    assert 400 / 2 ** 0.25 < best + 1 < 400 * 2 ** 0.25
    # without the unedited row the walk stops on the plateau at once and keeps the mildest scale
    best_blind, _ = search_scale(model, J, torch.tensor([-1.0]), score)
    assert best_blind < 100


def test_sweep_extends_past_the_end_of_the_grid():
    model, J = _model_and_J()
    best, rows = sweep_scales(model, J, torch.tensor([-1.0]), [1.0, 2.0, 4.0], _scorer(1 + 40.0))
    assert max(r["scale"] for r in rows) >= 32.0 and 40.0 / 2 ** 0.25 <= best <= 40.0 * 2 ** 0.25


def test_infeasible_scales_never_win():
    model, J = _model_and_J()
    best, rows = sweep_scales(model, J, torch.tensor([-1.0]), [1.0, 2.0, 4.0, 8.0], _scorer(1 + 8.0, feasible_below=4.0))
    assert best < 3.0 and all(r["feasible"] for r in rows if r["scale"] == best)


def _diverging(score, above: float):
    """``score``, but the edited model's outputs overflow (NaN/inf loss) for weights above ``above``."""

    def scored(model):
        if float(model.weight.detach()[0, 0]) > above:
            raise NonFiniteError("the model's loss is not finite on the validation samples")
        return score(model)

    return scored


def test_a_diverged_scale_is_recorded_and_never_chosen():
    model, J = _model_and_J()
    # the objective keeps improving up to s = 40, but every scale above 9 overflows
    best, rows = sweep_scales(model, J, torch.tensor([-1.0]), [1.0, 2.0, 4.0, 8.0, 16.0], _diverging(_scorer(41.0), 10.0))
    assert best == max(r["scale"] for r in rows if r["scale"] + 1 <= 10.0)
    diverged = [r for r in rows if r["scale"] + 1 > 10.0]
    assert diverged and all(r["objective"] is None and not r["feasible"] and "not finite" in r["diverged"]
                            for r in diverged)


def test_a_search_where_every_scale_diverges_is_refused():
    model, J = _model_and_J()
    with pytest.raises(NonFiniteError, match="every candidate diverged"):
        sweep_scales(model, J, torch.tensor([-1.0]), [1.0, 2.0], _diverging(_scorer(3.0), 0.0))


def test_ties_go_to_the_smaller_scale():
    rows = [{"scale": 2.0, "objective": 1.0}, {"scale": 1.0, "objective": 1.0}, {"scale": 3.0, "objective": 0.5}]
    assert best_row(rows)["scale"] == 1.0


def test_parse_scales():
    assert parse_scales("auto") is None
    assert parse_scales("1, 2.5,1e3") == [1.0, 2.5, 1000.0]
    for bad in ("", "big", "1,nan", "inf"):
        with pytest.raises(UsageError):
            parse_scales(bad)



def test_an_infeasible_row_ranks_by_its_shortfall_before_its_objective():
    """Where no row meets a criterion's bounds, the one that misses them by least is chosen (match
    says by how much), not the best objective among broken edits; a step is taken when it misses
    them by less than the model it starts from."""
    from gifcli.methods.influence.method import improves

    near = {"scale": 2.0, "feasible": False, "shortfall": 0.01, "objective": -5.0}
    far = {"scale": 1.0, "feasible": False, "shortfall": 0.30, "objective": -0.1}
    assert best_row([far, near]) is near
    feasible = {"scale": 4.0, "feasible": True, "objective": -9.0}
    assert best_row([far, near, feasible]) is feasible
    plain = [{"scale": 1.0, "feasible": False, "objective": -1.0}, {"scale": 2.0, "feasible": False, "objective": -0.5}]
    assert best_row(plain)["scale"] == 2.0  # a criterion that gives no shortfall: by objective, as before
    assert improves(near, far) and not improves(far, near) and improves(feasible, near)
