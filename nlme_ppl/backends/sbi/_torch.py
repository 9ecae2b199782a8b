"""The one import of torch and sbi, with a message that says how to install them."""

from __future__ import annotations

INSTALL = 'pip install "nlme_ppl[sbi]"  (or, in a clone: make test, or .venv/bin/pip install -e ".[sbi]")'

try:
    import sbi  # noqa: F401
    import torch
except ImportError as e:  # pragma: no cover - exercised by tests/backends/test_import.py in a subprocess
    raise ImportError(
        f"the sbi backend needs torch and sbi, which are not installed ({e}). Install the extra: {INSTALL}"
    ) from e

__all__ = ["torch"]
