"""gif: make trained PyTorch classifiers forget data with Generalized Influence Functions."""
__version__ = "0.1.0"


def load_checkpoint(path, device="cpu"):
    """``(model, metadata)`` of a gif checkpoint; see ``gifcli.io.checkpoint``."""
    from .io.checkpoint import load_checkpoint as _load

    return _load(path, device)


__all__ = ["__version__", "load_checkpoint"]
