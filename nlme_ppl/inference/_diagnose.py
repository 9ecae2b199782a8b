"""The checks of a population fit, run by `fit_map` and `fit_nuts` alike."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
import xarray as xr

from ..data import Dataset
from ..diagnostics import ImportanceDiagnostics, OutlierDiagnostics, importance_from_fit, summary_outliers
from ..diagnostics._fixed import fixed_parameter_widths, warn_weak_fixed
from ..likelihood import SurrogateDraws

__all__ = ["FitDiagnostics", "diagnose_fit"]


class FitDiagnostics(NamedTuple):
    """The surrogate's checks at fitted population parameters.

    - `importance`: PSIS Pareto k and ESS of each individual's importance weights.
    - `outliers`: the summary-space distance of the data from the training simulations, or
      `None` for an estimator without a summary network (`posterior.summaries` gives `None`).
    - `fixed_widths`: for each parameter without random effect, the median posterior/prior SD
      ratio of the individual draws.
    """

    importance: ImportanceDiagnostics
    outliers: OutlierDiagnostics | None
    fixed_widths: dict[str, float]

    def to_dataset(self, ids) -> xr.Dataset:
        """The checks as the `surrogate_diagnostics` group of a DataTree (dim `individual`)."""
        out = {"pareto_k": ("individual", np.asarray(self.importance.pareto_k)), "ess": ("individual", np.asarray(self.importance.ess))}
        if self.importance.draws is not None:
            out["draws"] = ("individual", np.asarray(self.importance.draws))
        if self.outliers is not None:
            out["summary_distance"] = ("individual", np.asarray(self.outliers.distance))
            out["summary_tail_prob"] = ("individual", np.asarray(self.outliers.tail_prob))
        attrs = {f"fixed_posterior_over_prior_sd_{n}": r for n, r in self.fixed_widths.items()}
        return xr.Dataset(out, coords={"individual": list(ids)}, attrs=attrs)


def diagnose_fit(population, posterior, draws: SurrogateDraws, params: dict, data: Dataset, key, *, stacklevel: int = 3, site: str = "obs") -> FitDiagnostics:
    """Check the surrogate at population parameters `params` (constrained site values), and warn
    with a [`SurrogateWarning`][nlme_ppl.diagnostics.SurrogateWarning] naming the individuals
    concerned: Pareto k > 0.7 of the importance weights, data beyond twice the farthest
    training simulation in summary space, and parameters without random effect whose
    individual posteriors barely narrow the training prior (SD ratio above 0.8).

    **Arguments:**

    - `population`, `posterior`, `draws`, `data`: those of the fit.
    - `params`: the fitted population site values (e.g. `MAPResult.site_values`).
    - `key`: a JAX key for the reference simulations of the summary-space check.
    - `site`: the name of the surrogate's likelihood factor (as in the fit).
    - `stacklevel`: where the warnings point, counted from this function (3: the caller of
      the fit function that calls it).

    **Returns:** a [`FitDiagnostics`][nlme_ppl.inference.FitDiagnostics].
    """
    importance = importance_from_fit(population, draws, params, data, site=site)
    importance.warn(stacklevel=stacklevel + 1)
    outliers = summary_outliers(posterior, data, jax.random.fold_in(key, 1))
    if outliers is not None:
        outliers.warn(margin=2.0, stacklevel=stacklevel + 1)
    widths = fixed_parameter_widths(population, draws, params, data, posterior.model)
    warn_weak_fixed(widths, stacklevel=stacklevel + 1)
    return FitDiagnostics(importance, outliers, widths)
