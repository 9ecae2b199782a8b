"""Input and output: estimator files (no pickle)."""

from .serialization import (
    load_posterior as load_posterior,
    pretrained as pretrained,
    save_posterior as save_posterior,
)

__all__ = ["load_posterior", "pretrained", "save_posterior"]
