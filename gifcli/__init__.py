"""gif: make trained PyTorch classifiers forget data with Generalized Influence Functions.

The Python API (gifcli/api.py; docs/own-model.md, section Python): ``select``, ``influence``,
``apply``, ``evaluate`` and ``unlearn``; ``load_checkpoint`` rebuilds a gif checkpoint's model.
"""
from ._version import __version__


def load_checkpoint(path, device="cpu"):
    """``(model, metadata)`` of a gif checkpoint; see ``gifcli.io.checkpoint``."""
    from .io.checkpoint import load_checkpoint as _load

    return _load(path, device)


def __getattr__(name):  # the API on first use: `import gifcli` stays light for the CLI
    if name in ("select", "influence", "apply", "evaluate", "unlearn", "Ledger"):
        if name == "Ledger":
            from .pipelines.ledger import Ledger

            return Ledger
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'gifcli' has no attribute {name!r}")


__all__ = ["Ledger", "__version__", "apply", "evaluate", "influence", "load_checkpoint", "select", "unlearn"]
