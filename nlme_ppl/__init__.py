"""nlme_ppl: non-linear mixed-effects models by amortized neural posterior estimation.

Population inference runs in float64, so importing nlme_ppl enables `jax_enable_x64`.
Networks are built and run in float32 explicitly.
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

import numpyro as _numpyro  # noqa: E402

# arviz 1.x registers `numpyro` as a lazy module (importlib.util.LazyLoader). If a submodule
# import (`import numpyro.distributions.constraints`) is the first touch, numpyro.distributions
# ends up without its `distribution` attribute and `numpyro.factor` fails with an AttributeError
# (`import arviz` then `import nlme_ppl` did). Touching an attribute loads numpyro fully first.
_numpyro.__version__

from . import demo as demo, designs as designs, diagnostics as diagnostics, estimators as estimators, models as models, populations as populations  # noqa: E402
from ._cache import enable_compilation_cache as enable_compilation_cache  # noqa: E402
from ._timing import Timings as Timings  # noqa: E402
from ._version import __version__ as __version__  # noqa: E402
from .data import Dataset as Dataset, Doses as Doses  # noqa: E402
from .estimators import (  # noqa: E402
    AmortizedPosterior as AmortizedPosterior,
    Posterior as Posterior,
    TrainConfig as TrainConfig,
    load_posterior as load_posterior,
    pretrained as pretrained,
    save_posterior as save_posterior,
    train as train,
)
from .inference import (  # noqa: E402
    MAPResult as MAPResult,
    bootstrap as bootstrap,
    compare as compare,
    covariate_search as covariate_search,
    objective_function as objective_function,
    profile as profile,
    exact_init as exact_init,
    exact_model as exact_model,
    fit_exact_individual as fit_exact_individual,
    fit_exact_nuts as fit_exact_nuts,
    fit_map as fit_map,
    fit_nuts as fit_nuts,
    fit_vae as fit_vae,
    VAEResult as VAEResult,
    RefinedPosterior as RefinedPosterior,
    refine as refine,
)
from .io import read_nonmem as read_nonmem, read_table as read_table, report as report, report_from_dir as report_from_dir, write_nonmem as write_nonmem  # noqa: E402
from .models import IndividualModel as IndividualModel  # noqa: E402
from .likelihood import SurrogateDraws as SurrogateDraws, amortize as amortize, log_weights as log_weights, prepare_draws as prepare_draws  # noqa: E402
from .simulation import Simulations as Simulations, simulate as simulate, simulate_data as simulate_data, simulate_population as simulate_population  # noqa: E402

__all__ = [
    "enable_compilation_cache",
    "Timings",
    "AmortizedPosterior",
    "Dataset",
    "Doses",
    "IndividualModel",
    "MAPResult",
    "Posterior",
    "RefinedPosterior",
    "Simulations",
    "SurrogateDraws",
    "TrainConfig",
    "VAEResult",
    "amortize",
    "bootstrap",
    "compare",
    "covariate_search",
    "demo",
    "designs",
    "diagnostics",
    "estimators",
    "exact_init",
    "exact_model",
    "fit_exact_individual",
    "fit_exact_nuts",
    "fit_map",
    "log_weights",
    "fit_nuts",
    "fit_vae",
    "load_posterior",
    "models",
    "objective_function",
    "populations",
    "prepare_draws",
    "profile",
    "read_nonmem",
    "read_table",
    "refine",
    "report",
    "report_from_dir",
    "pretrained",
    "save_posterior",
    "simulate",
    "simulate_data",
    "simulate_population",
    "train",
    "write_nonmem",
    "__version__",
]
