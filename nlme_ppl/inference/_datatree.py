"""ArviZ DataTree output, with coordinates named by parameter and individual id."""

from __future__ import annotations

import arviz as az
import numpy as np
import xarray as xr

from ._labels import arviz_dims

__all__ = ["to_datatree"]


def to_datatree(population, posterior: dict, log_likelihood: np.ndarray, *, ids, data=None, sample_stats=None, site="obs", attrs=None):
    """Build a DataTree from arrays shaped `(chain, draw, ...)`.

    Groups: `posterior`, `log_likelihood` (`site`, one term per individual, dim `individual`),
    `sample_stats` when given, and, with `data`, `observed_data` (values, NaN where
    unobserved, dims `individual`, `obs_index`) and `constant_data` (times and mask).
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
    return tree
