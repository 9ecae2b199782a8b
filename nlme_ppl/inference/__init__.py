"""Population inference: MAP (optax L-BFGS) and NUTS (NumPyro) over the amortized surrogate,
and the exact hierarchical model as a baseline."""

from .exact import exact_init as exact_init, exact_model as exact_model, fit_exact_individual as fit_exact_individual, fit_exact_nuts as fit_exact_nuts
from .map import MAPResult as MAPResult, fit_map as fit_map
from .nuts import fit_nuts as fit_nuts

__all__ = ["MAPResult", "exact_init", "exact_model", "fit_exact_individual", "fit_exact_nuts", "fit_map", "fit_nuts"]
