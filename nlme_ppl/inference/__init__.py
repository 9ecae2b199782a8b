"""Population inference over the amortized surrogate: MAP (optax L-BFGS) and NUTS (NumPyro)."""

from .map import MAPResult as MAPResult, fit_map as fit_map
from .nuts import fit_nuts as fit_nuts

__all__ = ["MAPResult", "fit_map", "fit_nuts"]
