"""Population inference: MAP (optax L-BFGS) and NUTS (NumPyro) over the amortized surrogate,
the checks of a fit, the exact hierarchical model as a baseline, and what a fit gives beyond its
estimates: profile likelihoods, bootstrap, the objective function on the absolute scale."""

from ._diagnose import FitDiagnostics as FitDiagnostics, diagnose_fit as diagnose_fit
from .fixed import expand_fixed as expand_fixed, fixed_point as fixed_point
from .exact import exact_init as exact_init, exact_model as exact_model, fit_exact_nuts as fit_exact_nuts
from .individual import fit_exact_individual as fit_exact_individual
from .bootstrap import BootstrapResult as BootstrapResult, bootstrap as bootstrap
from .loglik import ObjectiveFunction as ObjectiveFunction, objective_function as objective_function, training_evidence as training_evidence
from .map import MAPResult as MAPResult, fit_map as fit_map
from .occasions import OccasionTerms as OccasionTerms, fit_occasions as fit_occasions
from .profile import ProfileResult as ProfileResult, plot_waterfall as plot_waterfall, profile as profile
from .nuts import fit_nuts as fit_nuts
from .vae import VAEResult as VAEResult, fit_vae as fit_vae
from .refine import RefinedPosterior as RefinedPosterior, refine as refine
from .selection import CovariateSearchResult as CovariateSearchResult, compare as compare, covariate_search as covariate_search

__all__ = [
    "BootstrapResult", "CovariateSearchResult", "compare", "covariate_search", "FitDiagnostics", "MAPResult", "ObjectiveFunction", "ProfileResult", "bootstrap", "objective_function",
    "plot_waterfall", "profile", "training_evidence", "diagnose_fit", "expand_fixed", "fixed_point", "exact_init", "exact_model", "fit_exact_individual", "fit_exact_nuts",
    "fit_map", "fit_occasions", "OccasionTerms", "fit_nuts", "fit_vae", "VAEResult", "RefinedPosterior", "refine",
]
