"""Model zoo, architecture specs and training loop."""
from .specs import ArchSpec, set_eval
from .zoo import ARCHITECTURES

__all__ = ["ARCHITECTURES", "ArchSpec", "set_eval"]
