"""Diagnostics of amortized posteriors and of the surrogate: simulation-based calibration,
contraction and z-scores, classifier two-sample tests, a comparison with the exact individual
posteriors (tractable models), importance-weight Pareto k and an out-of-distribution check of
the data; and the checks of a fitted population model: empirical Bayes estimates with η- and
ε-shrinkage, PRED/IPRED/IWRES/NPDE/CWRES residuals, visual predictive checks and GOF plots."""

from ._bands import simultaneous_band as simultaneous_band
from ._c2st import c2st as c2st, c2st_individuals as c2st_individuals
from ._contraction import posterior_contraction_and_zscores as posterior_contraction_and_zscores
from ._coverage import OutlierDiagnostics as OutlierDiagnostics, summary_outliers as summary_outliers
from ._ebe import EBEResult as EBEResult, ebe as ebe
from ._exact import (
    ExactComparison as ExactComparison,
    ImportancePosterior as ImportancePosterior,
    compare_with_exact as compare_with_exact,
)
from ._gof import plot_ebe as plot_ebe, plot_gof as plot_gof, plot_individual_fits as plot_individual_fits
from ._importance import (
    ImportanceDiagnostics as ImportanceDiagnostics,
    SurrogateWarning as SurrogateWarning,
    importance_diagnostics as importance_diagnostics,
    importance_from_fit as importance_from_fit,
)
from ._residuals import epsilon_shrinkage as epsilon_shrinkage, residuals as residuals
from ._sbc import SBCResult as SBCResult, sbc as sbc, sbc_check as sbc_check, sbc_ranks as sbc_ranks
from ._vpc import VPCResult as VPCResult, vpc as vpc

__all__ = [
    "EBEResult",
    "ExactComparison",
    "ImportancePosterior",
    "ImportanceDiagnostics",
    "OutlierDiagnostics",
    "SBCResult",
    "SurrogateWarning",
    "VPCResult",
    "c2st",
    "c2st_individuals",
    "compare_with_exact",
    "ebe",
    "epsilon_shrinkage",
    "importance_diagnostics",
    "importance_from_fit",
    "plot_ebe",
    "plot_gof",
    "plot_individual_fits",
    "posterior_contraction_and_zscores",
    "residuals",
    "sbc",
    "sbc_check",
    "sbc_ranks",
    "simultaneous_band",
    "summary_outliers",
    "vpc",
]
