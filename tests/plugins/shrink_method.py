"""A toy unlearning method, written the way a user adds one: this file alone.

``shrink`` multiplies the weights of the model's last Linear layer by ``factor`` (no search, no
files). It knows how to prove its own edit: ``verify`` re-derives the edited weights from the
base model and the recorded factor.
"""
import copy
from dataclasses import dataclass

import torch
from torch import nn

from gifcli.core.methods import METHODS, Method, MethodArgs, MethodOutcome, Verified, arg
from gifcli.errors import UsageError
from gifcli.io.files import sha256_tensors


@dataclass(frozen=True)
class ShrinkArgs(MethodArgs):
    cli_prefix = "shrink"

    factor: float = arg("multiply the last Linear layer's weights by this", 0.5)

    def validate(self) -> None:
        if not 0 <= self.factor <= 1:
            raise UsageError(f"shrink factor must be in [0, 1], got {self.factor}")


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def shrunk(model: nn.Module, factor: float) -> nn.Module:
    edited = copy.deepcopy(model)
    with torch.no_grad():
        last_linear(edited).weight.mul_(factor)
    return edited


class Shrink(Method):
    name = "shrink"
    Args = ShrinkArgs

    def unlearn(self, model, task, data, args, rt, ctx):
        return MethodOutcome(shrunk(model, args.factor), {"factor": args.factor})

    def verify(self, base, edited, edit, folder, given):
        if base is None:
            return Verified(unchecked=["re-deriving the shrunk weights (needs the base model)"])
        factor = edit["args"]["factor"]
        if sha256_tensors(shrunk(base.model, factor).state_dict()) != edited.sha:
            from gifcli.errors import ChainBroken

            raise ChainBroken(f"the edited weights are not the base with its last layer x {factor}")
        return Verified(checked=[f"edited weights = base with the last layer x {factor:g} (re-derived)"])


def register() -> None:
    METHODS.register("shrink", Shrink())
