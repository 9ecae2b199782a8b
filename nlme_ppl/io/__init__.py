"""Input and output: NONMEM-format data, estimator files (no pickle)."""

from .nonmem import read_nonmem as read_nonmem, write_nonmem as write_nonmem

from .serialization import (
    load_posterior as load_posterior,
    pretrained as pretrained,
    save_posterior as save_posterior,
)

__all__ = ["load_posterior", "pretrained", "read_nonmem", "save_posterior", "write_nonmem"]
