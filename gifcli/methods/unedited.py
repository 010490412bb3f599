"""``unedited``: the trained model as it is. Not an unlearning method but the floor every method is
measured against (a harness row, an audit's lower reference); ``gif verify`` re-derives it as the
base model's own weights."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..core.methods import METHODS, Method, MethodArgs, MethodOutcome, Verified


@dataclass(frozen=True)
class UneditedArgs(MethodArgs):
    """Doing nothing takes no arguments."""


class Unedited(Method):
    name = "unedited"
    Args = UneditedArgs

    def unlearn(self, model, task, data, args, rt, ctx):
        return MethodOutcome(copy.deepcopy(model), {})

    def verify(self, base, edited, edit, folder, given):
        if base is None:
            return Verified(unchecked=["comparing with the base model (pass --base)"])
        from ..errors import ChainBroken
        from ..io.files import sha256_tensors

        if sha256_tensors(base.model.state_dict()) != edited.sha:
            raise ChainBroken("the 'unedited' model's weights are not the base model's")
        return Verified(checked=["edited weights = the base model's (nothing was edited)"])


METHODS.register("unedited", Unedited())
