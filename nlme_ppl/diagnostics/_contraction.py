"""Posterior contraction and z-scores over simulated data sets (Schad, Betancourt & Vasishth 2021)."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

__all__ = ["posterior_contraction_and_zscores"]


def posterior_contraction_and_zscores(
    draws: Float[np.ndarray, "n draws k"],
    truths: Float[np.ndarray, "n k"],
    prior_sd: Float[np.ndarray, " k"],
) -> dict[str, np.ndarray]:
    """How much each posterior learnt, and how far it sits from the truth.

    For each simulated data set `i` and parameter `j`, with posterior draws `draws[i, :, j]`:

    - contraction `1 - Var_post / Var_prior` (1: the data pin the parameter down; 0: nothing
      learnt; negative: the posterior is wider than the prior);
    - z-score `(mean_post - truth) / sd_post` (for a calibrated posterior, about N(0, 1) over
      data sets; a wide spread means over-confidence, a shifted mean bias).

    **Arguments:**

    - `draws`: `(n, M, k)` posterior draws for `n` data sets.
    - `truths`: `(n, k)` the parameters each data set was simulated with.
    - `prior_sd`: `(k,)` prior standard deviations.

    **Returns:** a dict with `"contraction"` and `"zscore"`, each `(n, k)`, and `"post_mean"`,
    `"post_sd"`, each `(n, k)`. Variances use `ddof=1`; a posterior with zero spread gives an
    infinite z-score unless the mean equals the truth.
    """
    draws = np.asarray(draws, dtype=np.float64)
    truths = np.asarray(truths, dtype=np.float64)
    prior_sd = np.asarray(prior_sd, dtype=np.float64)
    if draws.ndim != 3:
        raise ValueError(f"`draws` must have shape (data sets, draws, parameters); got {draws.shape}.")
    n, m, k = draws.shape
    if m < 2:
        raise ValueError(f"need at least 2 posterior draws per data set to estimate a variance; got {m}.")
    if truths.shape != (n, k):
        raise ValueError(f"`truths` must have shape {(n, k)}, one row per data set in `draws`; got {truths.shape}.")
    if prior_sd.shape != (k,):
        raise ValueError(f"`prior_sd` must have shape {(k,)}, one per parameter; got {prior_sd.shape}.")
    if not (np.all(np.isfinite(prior_sd)) and np.all(prior_sd > 0)):
        raise ValueError(f"`prior_sd` must be positive and finite; got {prior_sd}.")
    mean = draws.mean(axis=1)
    var = draws.var(axis=1, ddof=1)
    return _summaries(mean, var, truths, prior_sd)


def _summaries(mean, var, truths, prior_sd) -> dict[str, np.ndarray]:
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mean - truths) / sd
    return {
        "contraction": 1.0 - var / prior_sd**2,
        "zscore": z,
        "post_mean": mean,
        "post_sd": sd,
    }
