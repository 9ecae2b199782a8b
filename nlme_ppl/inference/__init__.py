"""Population inference: MAP (optax L-BFGS) and NUTS (NumPyro) over the amortized surrogate,
the checks of a fit, and the exact hierarchical model as a baseline."""

from ._diagnose import FitDiagnostics as FitDiagnostics, diagnose_fit as diagnose_fit
from .fixed import expand_fixed as expand_fixed, fixed_point as fixed_point
from .exact import exact_init as exact_init, exact_model as exact_model, fit_exact_nuts as fit_exact_nuts
from .individual import fit_exact_individual as fit_exact_individual
from .map import MAPResult as MAPResult, fit_map as fit_map
from .nuts import fit_nuts as fit_nuts
from .refine import RefinedPosterior as RefinedPosterior, refine as refine

__all__ = [
    "FitDiagnostics", "MAPResult", "diagnose_fit", "expand_fixed", "fixed_point", "exact_init", "exact_model", "fit_exact_individual", "fit_exact_nuts",
    "fit_map", "fit_nuts", "RefinedPosterior", "refine",
]
