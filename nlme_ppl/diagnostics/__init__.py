"""Diagnostics of amortized posteriors: simulation-based calibration, contraction and z-scores."""

from ._bands import simultaneous_band as simultaneous_band
from ._contraction import posterior_contraction_and_zscores as posterior_contraction_and_zscores
from ._sbc import SBCResult as SBCResult, sbc as sbc, sbc_check as sbc_check, sbc_ranks as sbc_ranks

__all__ = [
    "SBCResult",
    "posterior_contraction_and_zscores",
    "sbc",
    "sbc_check",
    "sbc_ranks",
    "simultaneous_band",
]
