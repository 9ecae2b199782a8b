"""ArviZ DataTree output, with coordinates named by parameter and individual id."""

from __future__ import annotations

import arviz as az
import numpy as np
import xarray as xr

from ._labels import arviz_dims

__all__ = ["to_datatree"]


def to_datatree(population, posterior: dict, log_likelihood: np.ndarray, *, ids, data=None, sample_stats=None, site="obs", attrs=None,
                predictive=None, log_likelihood_kind: str = "individual"):  # fmt: skip
    """Build a DataTree from arrays shaped `(chain, draw, ...)`.

    Groups: `posterior`, `log_likelihood` (`site`, one term per individual, dim `individual`),
    `sample_stats` when given, and, with `data`, `observed_data` (values, NaN where
    unobserved, dims `individual`, `obs_index`) and `constant_data` (times and mask).

    `predictive`, with `data`: `(replicates, observation_loglik)`, each `(chain, draw, N, T)`
    (the second may be `None`), stored as `posterior_predictive` and, per
    `log_likelihood_kind`, as `log_likelihood_observation` (`"individual"`: the per-individual
    terms stay in `log_likelihood`) or as `log_likelihood` itself (`"observation"`: the
    per-individual terms move to `log_likelihood_individual`).
    """
    posterior = {k: np.asarray(v) for k, v in posterior.items() if not k.endswith("_chol")}
    dims, coords = arviz_dims(population, {k: v[0, 0] for k, v in posterior.items()})
    coords["individual"] = list(ids)
    dims[site] = ["individual"]
    groups = {"posterior": posterior, "log_likelihood": {site: np.asarray(log_likelihood)}}
    if sample_stats:
        groups["sample_stats"] = {k: np.asarray(v) for k, v in sample_stats.items()}
    tree = az.from_dict(groups, coords=coords, dims=dims, attrs={"posterior": attrs} if attrs else None)
    if data is not None:
        obs_coords = {"individual": list(ids), "obs_index": np.arange(data.values.shape[1])}
        d2 = ("individual", "obs_index")
        mask = np.asarray(data.mask)
        tree["observed_data"] = xr.Dataset({site: (d2, np.where(mask, np.asarray(data.values), np.nan))}, coords=obs_coords)
        tree["constant_data"] = xr.Dataset({"times": (d2, np.asarray(data.times)), "mask": (d2, mask)}, coords=obs_coords)
        if predictive is not None:
            _add_predictive(tree, site, predictive, obs_coords, log_likelihood_kind)
    return tree


def _add_predictive(tree: xr.DataTree, site: str, predictive, obs_coords: dict, kind: str) -> None:
    reps, obs_ll = predictive
    c, s = reps.shape[:2]
    coords = {"chain": np.arange(c), "draw": np.arange(s), **obs_coords}
    dims = ("chain", "draw", "individual", "obs_index")
    sample_attrs = {"sample_dims": ["chain", "draw"]}
    tree["posterior_predictive"] = xr.Dataset({site: (dims, reps)}, coords=coords, attrs=sample_attrs)
    if obs_ll is None:
        return
    per_observation = xr.Dataset({site: (dims, obs_ll)}, coords=coords, attrs=sample_attrs)
    if kind == "observation":
        tree["log_likelihood_individual"] = tree["log_likelihood"].to_dataset()
        tree["log_likelihood"] = per_observation
    else:
        tree["log_likelihood_observation"] = per_observation
