"""Simultaneous confidence bands for the ECDF of discrete-uniform SBC ranks.

The band is the one of Säilynoja, Bürkner & Vehtari (2022), *Graphical test for discrete
uniformity and its applications in goodness-of-fit evaluation and multiple sample
comparison*, Statistics and Computing 32:32, computed with ArviZ's implementation of their
simulation method (`arviz_stats.ecdf_utils`).

For `n` ranks in `{0, …, L}` the ECDF is evaluated at the `L` interior points
`z_j = j / (L + 1)`, `j = 1 … L`: `ECDF(z_j) = #{rank ≤ j - 1} / n`. Under calibration the
ranks are discrete-uniform, so `n · ECDF(z_j)` has the law of the ECDF count of `n` continuous
uniforms at `z_j`. ArviZ's simulation draws those uniforms, finds the pointwise level `γ` whose
binomial band contains the whole ECDF with probability `prob`, and the band is the binomial
`(1 - γ)/2` and `(1 + γ)/2` quantiles at every `z_j`. No randomisation of the ranks is needed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._validate import positive_int

__all__ = ["ecdf_eval_points", "rank_ecdf", "simultaneous_band"]


def ecdf_eval_points(num_draws: int) -> np.ndarray:
    """The `L` interior evaluation points `j / (L + 1)`, `j = 1 … L`, for `L = num_draws`."""
    return np.arange(1, num_draws + 1) / (num_draws + 1)


def rank_ecdf(ranks: np.ndarray, num_draws: int) -> np.ndarray:
    """ECDF of ranks `(n, k)` in `{0, …, L}` at `ecdf_eval_points(L)`; returns `(k, L)`."""
    n = ranks.shape[0]
    counts = np.stack([np.bincount(r, minlength=num_draws + 1) for r in ranks.T.astype(np.int64)])
    return np.cumsum(counts, axis=1)[:, :num_draws] / n


@lru_cache(maxsize=64)
def _band_cached(num_simulations: int, num_draws: int, prob: float, band_simulations: int, seed: int):
    # imported here: arviz_stats took 0.8 s of every `import nlme_ppl` (the CLI's start)
    from arviz_stats.ecdf_utils import get_pointwise_confidence_band, simulate_confidence_bands

    z = ecdf_eval_points(num_draws)
    rng = np.random.default_rng(seed)
    gamma = simulate_confidence_bands(num_simulations, 1, z, prob, band_simulations, rng)
    lower, upper = get_pointwise_confidence_band(gamma, num_simulations, z)
    lower.setflags(write=False)
    upper.setflags(write=False)
    return lower, upper, float(gamma)


def simultaneous_band(
    num_simulations: int,
    num_draws: int,
    *,
    prob: float = 0.99,
    band_simulations: int = 5000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The `prob` simultaneous band for the ECDF of `num_simulations` SBC ranks out of `num_draws`.

    **Arguments:**

    - `num_simulations`: `n`, the number of ranks per parameter.
    - `num_draws`: `L`, the number of posterior draws each rank was taken among.
    - `prob`: the simultaneous coverage of the band under calibration.
    - `band_simulations`: uniform samples simulated to find the pointwise level (Säilynoja et
      al. use a few thousand; the level is the `prob` quantile of their statistic).
    - `seed`: seed of that simulation, so that the band is reproducible.

    **Returns:** `(lower, upper, gamma)`: the band's ECDF bounds at `ecdf_eval_points(L)`, each
    `(L,)`, and the pointwise level `gamma` it corresponds to. Results are cached.
    """
    if not 0.0 < prob < 1.0:
        raise ValueError(f"`prob` must lie strictly between 0 and 1; got {prob!r}.")
    num_simulations, num_draws, band_simulations = (
        positive_int(v, name=name)
        for name, v in (("num_simulations", num_simulations), ("num_draws", num_draws), ("band_simulations", band_simulations))
    )
    return _band_cached(num_simulations, num_draws, float(prob), band_simulations, int(seed))
