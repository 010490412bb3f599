"""gif's own methods: gif, fif, pif, if and grad (the paper's influence estimators and the
first-order baseline), one package that owns every step of their edit and every file of it.

* ``method.py``: their arguments (:class:`InfluenceArgs`) and the method (:class:`InfluenceMethod`):
  steps decided by the model's stationarity, the scale chosen on validation, what it reports.
* ``steps.py``: select J, the right-hand sides (forget, remaining, masked), the stationarity
  measurement, the influence solve over a Hessian sample, the scale search.
* ``lstsq.py``: the least-squares problems of GIF, FIF, PIF and IF and the solver registry (pure torch).
* ``files.py``: the mask, the influence file, ``gif apply``; ``verify.py``: what ``gif verify`` re-derives.
"""
from ...core.methods import METHODS
from .lstsq import register_solver
from .method import InfluenceArgs, InfluenceMethod, hessian_data, resolve_weight_decay

for _name in ("gif", "fif", "pif", "if", "grad"):
    METHODS.register(_name, InfluenceMethod(_name, own_targets=_name == "gif"))


def chain_method(name: str) -> InfluenceMethod:
    """The registered method ``name`` when its edit is an influence vector (``gif select``, ``gif
    influence`` and ``gif apply`` run its steps one at a time); a usage error otherwise."""
    from ...errors import UsageError

    method = METHODS.get(name)
    if not isinstance(method, InfluenceMethod):
        having = ", ".join(n for n, m in METHODS.items() if isinstance(m, InfluenceMethod))
        raise UsageError(f"method {name!r} has no influence vector; use {having}")
    return method


__all__ = ["InfluenceArgs", "InfluenceMethod", "chain_method", "hessian_data", "register_solver",
           "resolve_weight_decay"]
