"""Model zoo and training loop."""
from .zoo import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "build_model"]
