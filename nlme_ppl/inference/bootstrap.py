"""Bootstrap intervals of the population parameters, without retraining.

- **Nonparametric**: resample individuals with replacement; each replicate's surrogate is the
  fit's own draws of the resampled individuals (no new draws, no simulation), refitted from the
  estimate by one L-BFGS. All replicates have the same shapes, so the compiled minimiser is
  reused.
- **Parametric**: simulate new data sets from the fitted population, through the individual
  model, at each individual's own design (doses, times, covariates, censoring limits), and refit
  each with the same estimator (`fit_map` with `num_starts=1`, started at the estimate). The
  estimator is amortized, so a replicate costs one pass of the estimator and one fit.

Percentile intervals, and the share of replicates whose refit converged.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import jax
import numpy as np
import pandas as pd

from .._validate import check_keys, positive_int
from ..data import Dataset
from ..simulation import simulate_data, simulate_population
from ._labels import flatten_params
from ._optimize import preconditioner
from .map import fit_map, objective_at_fit

__all__ = ["BootstrapResult", "bootstrap"]


class BootstrapResult:
    """The replicates of [`bootstrap`][nlme_ppl.bootstrap].

    **Attributes:** `kind` (`"parametric"` or `"nonparametric"`), `estimates` (a DataFrame,
    one row per replicate, one column per label), `converged` `(R,)`, `estimate` (the fit's, by
    label), `seconds` (wall time of all replicates).
    """

    def __init__(self, kind, estimates, converged, estimate, seconds):
        self.kind, self.estimates, self.converged, self.estimate, self.seconds = kind, estimates, np.asarray(converged), estimate, seconds

    @property
    def converged_share(self) -> float:
        return float(np.mean(self.converged))

    def intervals(self, levels: Sequence[float] = (0.8, 0.9, 0.95), *, converged_only: bool = True) -> pd.DataFrame:
        """Percentile intervals per label (`lower_<level>`, `upper_<level>` in percent), the
        estimate, and the bootstrap SE (SD of the replicates)."""
        est = self.estimates[self.converged] if converged_only and self.converged.any() else self.estimates
        out = pd.DataFrame({"estimate": pd.Series(self.estimate), "bootstrap_se": est.std(ddof=1)})
        for level in levels:
            a = (1 - level) / 2
            out[f"lower_{round(100 * level)}"] = est.quantile(a)
            out[f"upper_{round(100 * level)}"] = est.quantile(1 - a)
        out.index.name = "parameter"
        return out

    table = intervals

    def __repr__(self) -> str:
        return (f"BootstrapResult({self.kind}, {len(self.estimates)} replicates, {self.converged_share:.0%} converged, "
                f"{self.seconds:.1f} s)\n{self.intervals()}")  # fmt: skip


def bootstrap(
    fit,
    data: Dataset,
    key,
    *,
    kind: str = "nonparametric",
    num_replicates: int = 200,
    posterior=None,
    num_draws: int | None = None,
    max_iter: int = 500,
    tol: float = 1e-8,
) -> BootstrapResult:
    """Bootstrap the population parameters of a fit, with the same estimator and no retraining.

    **Arguments:**

    - `fit`: a [`MAPResult`][nlme_ppl.MAPResult].
    - `data`: the [`Dataset`][nlme_ppl.Dataset] it was fitted to.
    - `key`: a JAX key (replicate r uses `fold_in(key, r)`: the same key gives the same replicates).
    - `kind`: `"nonparametric"` (resample individuals, re-using the fit's draws) or
      `"parametric"` (simulate from the fitted population at the data's designs and refit).
    - `num_replicates`: R.
    - `posterior`: the estimator for parametric refits (default: the fit's, unrefined: the
      base estimator of a refinement, so that a replicate costs no refinement; the
      likelihood treatment of parameters without random effect needs exact draws, so those
      replicates use the kernel treatment).
    - `num_draws`: draws per individual for parametric refits (default: the fit's).
    - `max_iter`, `tol`: the L-BFGS of each refit.

    **Returns:** a [`BootstrapResult`][nlme_ppl.inference.BootstrapResult] (`.intervals()`,
    `.converged_share`).
    """
    check_keys(key)
    num_replicates = positive_int(num_replicates, name="num_replicates")
    if kind not in ("parametric", "nonparametric"):
        raise ValueError(f"kind must be 'parametric' or 'nonparametric'; got {kind!r}.")
    if getattr(fit, "draws", None) is None:
        raise ValueError("this fit does not carry its draws (MAPResult.draws); refit it with nlp.fit_map.")
    t0 = time.perf_counter()
    if kind == "nonparametric":
        estimates, converged = _nonparametric(fit, data, key, num_replicates, max_iter, tol)
    else:
        estimates, converged = _parametric(fit, data, key, num_replicates, posterior, num_draws, max_iter, tol)
    frame = pd.DataFrame(estimates, columns=list(fit.params))
    frame.index.name = "replicate"
    return BootstrapResult(kind, frame, converged, dict(fit.params), time.perf_counter() - t0)


def _nonparametric(fit, data, key, num_replicates, max_iter, tol):
    population, draws, n = fit.population, fit.draws, data.num_individuals
    objective, postprocess, z0 = objective_at_fit(fit, data)
    precond = preconditioner(objective.hessian(z0, draws, data))
    estimates, converged = [], []
    for r in range(num_replicates):
        idx = np.asarray(jax.random.choice(jax.random.fold_in(key, r), n, (n,), replace=True))
        part = _relabelled(data.subset(idx), data)
        z, _, conv, _ = objective.minimise(z0[None], precond, draws.subset(idx), part, int(max_iter), float(tol))
        flat = flatten_params(population, postprocess(objective.unravel(z[0])))
        estimates.append([float(flat[k]) for k in fit.params])
        converged.append(bool(conv[0]))
    return np.asarray(estimates), np.asarray(converged)


def _relabelled(data: Dataset, like: Dataset) -> Dataset:
    """A resampled data set under the ids of `like` (a repeated individual must not repeat an
    id, and ids are static: one tuple for every replicate means one compiled minimiser)."""
    return dataclasses.replace(data, ids=tuple(like.ids))


def _parametric(fit, data, key, num_replicates, posterior, num_draws, max_iter, tol):
    posterior = fit.posterior if posterior is None else posterior
    if posterior is None:
        raise ValueError("pass posterior=, the estimator to refit the replicates with (this fit does not record it).")
    posterior = getattr(posterior, "base", posterior)  # the refinement's estimator: no refinement per replicate
    model = posterior.model
    num_draws = int(fit.draws.num_draws if num_draws is None else num_draws)
    designs = model.designs_from_data(data)
    covariates = dict(getattr(data, "covariates", {}) or {})
    estimates, converged = [], []
    for r in range(num_replicates):
        k_pop, k_data, k_fit = jax.random.split(jax.random.fold_in(key, r), 3)
        phi = simulate_population(fit.population, fit.site_values, k_pop, num_individuals=data.num_individuals,
                                  covariates=covariates or None, param_names=model.param_names)  # fmt: skip
        sim = simulate_data(model, phi, k_data, designs=designs, ids=data.ids, covariates=covariates or None)
        refit = fit_map(fit.population, posterior, sim, k_fit, num_draws=num_draws, num_starts=1, diagnose=False, refine=False,
                        fixed="kernel", max_draws=num_draws, init=fit.site_values, max_iter=max_iter, tol=tol)  # fmt: skip
        estimates.append([refit.params.get(k, np.nan) for k in fit.params])
        converged.append(bool(refit.converged[refit.best]))
    return np.asarray(estimates), np.asarray(converged)
