"""Edits of a model's parameters that every method and command shares: the parameter space of a
model, theta_J <- theta_J - scale * delta on a copy, and the finiteness checks around both."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..errors import NonFiniteError, UsageError
from ..math.params import IndexSet, ParamSpace
from ..models.specs import set_eval


def space_of(model: nn.Module) -> ParamSpace:
    return ParamSpace.of(list(model.named_parameters()))


def check_finite_model(model: nn.Module, what: str = "the model") -> None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise NonFiniteError(f"{what} has NaN or infinite values in {name}")


def apply_update(theta_J: torch.Tensor, delta: torch.Tensor, scale: float) -> torch.Tensor:
    """theta_J - scale * delta: scale > 0 removes the forget data (the sign convention of
    :mod:`gifcli.methods.influence.lstsq`)."""
    return theta_J - scale * delta.to(theta_J.dtype)


def edited_copy(model: nn.Module, J: IndexSet, delta: torch.Tensor, scale: float) -> nn.Module:
    """A copy of ``model`` with theta_J <- theta_J - scale * delta (refuses non-finite results)."""
    if not math.isfinite(scale):
        raise UsageError(f"scale must be a finite number, got {scale}")
    edited = copy.deepcopy(model)
    theta = parameters_to_vector(edited.parameters()).detach()
    idx = J.indices.to(theta.device)
    theta[idx] = apply_update(theta[idx], delta.to(theta.device), scale)
    if not bool(torch.isfinite(theta[idx]).all()):
        raise NonFiniteError(f"scale {scale:g} makes the edited weights overflow (NaN or infinite values)")
    vector_to_parameters(theta, edited.parameters())
    return set_eval(edited)
