"""nlme_ppl: non-linear mixed-effects models by amortized neural posterior estimation.

Population inference runs in float64, so importing nlme_ppl enables `jax_enable_x64`.
Networks are built and run in float32 explicitly.
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from . import models as models, populations as populations  # noqa: E402
from ._version import __version__ as __version__  # noqa: E402
from .data import Dataset as Dataset  # noqa: E402
from .inference import MAPResult as MAPResult, fit_map as fit_map, fit_nuts as fit_nuts  # noqa: E402
from .likelihood import SurrogateDraws as SurrogateDraws, amortize as amortize, prepare_draws as prepare_draws  # noqa: E402
from .simulation import Simulations as Simulations, simulate as simulate  # noqa: E402

__all__ = [
    "Dataset",
    "MAPResult",
    "Simulations",
    "SurrogateDraws",
    "amortize",
    "fit_map",
    "fit_nuts",
    "models",
    "populations",
    "prepare_draws",
    "simulate",
    "__version__",
]
