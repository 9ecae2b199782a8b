"""Simulation-based calibration (Talts et al. 2018) with simultaneous ECDF bands (Säilynoja et al. 2022).

Draw φ from the training prior, simulate y, draw `L` values from the estimated posterior
q(φ | y) and count how many fall below φ. If q is the true posterior, each parameter's rank is
discrete-uniform on `{0, …, L}`. The ranks' ECDF must then stay inside a simultaneous band:
one that holds the whole ECDF with probability `prob` under calibration.
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from .._validate import check_keys, positive_int
from ..simulation import Simulations, simulate
from ._bands import rank_ecdf, simultaneous_band
from ._contraction import _summaries

__all__ = ["SBCResult", "sbc", "sbc_check", "sbc_ranks"]


class SBCResult(eqx.Module):
    """The outcome of a simulation-based calibration check.

    **Fields:**

    - `ranks`: `(n, k)` rank of each true parameter among its `num_draws` posterior draws.
    - `num_draws`: `L`; ranks lie in `{0, …, L}`.
    - `param_names`: the `k` parameter names.
    - `prob`: the simultaneous coverage of the band (e.g. 0.99).
    - `ecdf`: `(k, L)` the ranks' ECDF at `j / (L + 1)`, `j = 1 … L`.
    - `band_lower`, `band_upper`: `(L,)` the simultaneous band at the same points.
    - `passed`: parameter name -> `True` if its ECDF lies inside the band everywhere.
    - `max_deviation`: parameter name -> `max_j |ECDF(z_j) - z_j|`.
    - `contraction`, `zscore`: optional `(n, k)` posterior contraction and z-scores (see
      [`posterior_contraction_and_zscores`][nlme_ppl.diagnostics.posterior_contraction_and_zscores]),
      filled in by [`sbc`][nlme_ppl.diagnostics.sbc].
    """

    ranks: Int[np.ndarray, "n k"]
    num_draws: int = eqx.field(static=True)
    param_names: tuple[str, ...] = eqx.field(static=True)
    prob: float = eqx.field(static=True)
    ecdf: Float[np.ndarray, "k L"]
    band_lower: Float[np.ndarray, " L"]
    band_upper: Float[np.ndarray, " L"]
    passed: dict[str, bool]
    max_deviation: dict[str, float]
    contraction: Float[np.ndarray, "n k"] | None = None
    zscore: Float[np.ndarray, "n k"] | None = None

    def __check_init__(self):
        n, k = self.ranks.shape
        if len(self.param_names) != k or self.ecdf.shape != (k, self.num_draws):
            raise ValueError(
                f"inconsistent SBCResult: ranks {self.ranks.shape}, ecdf {self.ecdf.shape}, "
                f"{len(self.param_names)} parameter names, num_draws={self.num_draws}."
            )

    @property
    def num_simulations(self) -> int:
        return self.ranks.shape[0]

    @property
    def all_passed(self) -> bool:
        return all(self.passed.values())

    @property
    def eval_points(self) -> Float[np.ndarray, " L"]:
        return np.arange(1, self.num_draws + 1) / (self.num_draws + 1)

    def table(self) -> pd.DataFrame:
        """One row per parameter: pass/fail, the largest ECDF deviation, the band's half-width and
        the mean rank as a fraction of `num_draws` (0.5 when calibrated; below 0.5: the posterior
        sits above the truth).

        With contraction and z-scores (from [`sbc`][nlme_ppl.diagnostics.sbc]) it also gives
        their medians and the z-scores' mean and standard deviation (about 0 and 1 when calibrated).
        """
        half = float(np.max(self.band_upper - self.band_lower)) / 2
        df = pd.DataFrame(
            {
                "passed": [self.passed[p] for p in self.param_names],
                "max_deviation": [self.max_deviation[p] for p in self.param_names],
                "band_half_width": half,
                "mean_rank_fraction": self.ranks.mean(axis=0) / self.num_draws,
            },
            index=pd.Index(self.param_names, name="parameter"),
        )
        if self.contraction is not None:
            df["contraction_median"] = np.median(self.contraction, axis=0)
        if self.zscore is not None:
            finite = np.where(np.isfinite(self.zscore), self.zscore, np.nan)
            df["zscore_mean"] = np.nanmean(finite, axis=0)
            df["zscore_sd"] = np.nanstd(finite, axis=0, ddof=1)
        return df

    def plot(self, path: str | Path | None = None, *, ncols: int = 3):
        """ECDF-difference plot, one panel per parameter, with the simultaneous band.

        Each panel shows `ECDF(z) - z` of the ranks and the band, and its title says PASS or
        FAIL. Writes a PNG (or any format matplotlib infers from the suffix) when `path` is
        given, creating parent folders. **Returns:** the matplotlib `Figure`.
        """
        from ._plot import plot_sbc

        return plot_sbc(self, path, ncols=ncols)

    def __repr__(self) -> str:
        status = ", ".join(f"{p}: {'pass' if self.passed[p] else 'FAIL'}" for p in self.param_names)
        return f"SBCResult(n={self.num_simulations}, L={self.num_draws}, prob={self.prob}; {status})"


def _check_ranks(ranks, num_draws: int) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(
            f"`ranks` must have shape (simulations, parameters); got {ranks.shape}. For one "
            "parameter pass ranks[:, None]."
        )
    if ranks.shape[0] < 2:
        raise ValueError(f"need at least 2 simulations to check calibration; got {ranks.shape[0]}.")
    if not np.issubdtype(ranks.dtype, np.integer):
        if not np.all(np.isfinite(ranks)) or np.any(ranks != np.round(ranks)):
            raise TypeError(f"`ranks` must be integers in 0..num_draws; got dtype {ranks.dtype} with non-integer values.")
        ranks = ranks.astype(np.int64)
    if ranks.min() < 0 or ranks.max() > num_draws:
        raise ValueError(
            f"ranks must lie in 0..{num_draws} (num_draws={num_draws}); got values from {ranks.min()} "
            f"to {ranks.max()}. Pass the num_draws the ranks were computed with."
        )
    return ranks.astype(np.int64)


def sbc_check(
    ranks: Int[np.ndarray, "n k"],
    num_draws: int,
    *,
    prob: float = 0.99,
    param_names: tuple[str, ...] | None = None,
    band_simulations: int = 5000,
    seed: int = 0,
    contraction: Float[np.ndarray, "n k"] | None = None,
    zscore: Float[np.ndarray, "n k"] | None = None,
) -> SBCResult:
    """Test SBC ranks for uniformity with a simultaneous ECDF band.

    A parameter passes when the ECDF of its ranks lies inside the `prob` simultaneous band at
    every point `j / (L + 1)`. Under calibration each parameter passes with probability `prob`
    (the band is simultaneous over points, not over parameters: with `k` parameters, a
    calibrated posterior fails at least one with probability up to `1 - prob^k`).

    **Arguments:**

    - `ranks`: `(n, k)` integer ranks in `{0, …, num_draws}` (e.g. from
      [`sbc_ranks`][nlme_ppl.diagnostics.sbc_ranks]).
    - `num_draws`: `L`, the posterior draws each rank was taken among.
    - `prob`: the band's simultaneous coverage.
    - `param_names`: `k` names (default `"param_0"`, …).
    - `band_simulations`, `seed`: the band's simulation size and seed (see
      [`simultaneous_band`][nlme_ppl.diagnostics.simultaneous_band]).
    - `contraction`, `zscore`: optional `(n, k)` summaries to carry in the result.

    **Returns:** an [`SBCResult`][nlme_ppl.diagnostics.SBCResult].
    """
    num_draws = positive_int(num_draws, name="num_draws")
    ranks = _check_ranks(ranks, num_draws)
    n, k = ranks.shape
    if param_names is None:
        param_names = tuple(f"param_{j}" for j in range(k))
    param_names = tuple(str(p) for p in param_names)
    if len(param_names) != k:
        raise ValueError(f"got {len(param_names)} parameter names for {k} columns of ranks.")
    lower, upper, _ = simultaneous_band(n, num_draws, prob=prob, band_simulations=band_simulations, seed=seed)
    ecdf = rank_ecdf(ranks, num_draws)
    z = np.arange(1, num_draws + 1) / (num_draws + 1)
    # Band edges are multiples of 1/n, as is the ECDF; compare counts to avoid rounding issues.
    inside = (np.round(ecdf * n) >= np.round(lower * n)) & (np.round(ecdf * n) <= np.round(upper * n))
    dev = np.max(np.abs(ecdf - z), axis=1)
    for name, arr in (("contraction", contraction), ("zscore", zscore)):
        if arr is not None and np.shape(arr) != (n, k):
            raise ValueError(f"`{name}` must have shape {(n, k)} like `ranks`; got {np.shape(arr)}.")
    return SBCResult(
        ranks=ranks,
        num_draws=num_draws,
        param_names=param_names,
        prob=float(prob),
        ecdf=ecdf,
        band_lower=np.asarray(lower),
        band_upper=np.asarray(upper),
        passed={p: bool(inside[j].all()) for j, p in enumerate(param_names)},
        max_deviation={p: float(dev[j]) for j, p in enumerate(param_names)},
        contraction=None if contraction is None else np.asarray(contraction, dtype=np.float64),
        zscore=None if zscore is None else np.asarray(zscore, dtype=np.float64),
    )


def _ranks_and_moments(posterior, simulations: Simulations, key, *, num_draws: int, chunk_size: int):
    """Ranks `(n, k)` and posterior means and variances `(n, k)`, sampling in chunks of data sets."""
    check_keys(key)
    num_draws = positive_int(num_draws, name="num_draws")
    chunk_size = positive_int(chunk_size, name="chunk_size")
    if not isinstance(simulations, Simulations):
        raise TypeError(
            f"`simulations` must be a nlme_ppl.Simulations (from nlme_ppl.simulate); got {type(simulations).__name__}."
        )
    names = tuple(getattr(posterior, "param_names", simulations.param_names))
    if names != tuple(simulations.param_names):
        raise ValueError(
            f"the posterior's parameters {names} differ from the simulations' {tuple(simulations.param_names)}; "
            "simulate from the model the posterior was trained on."
        )
    truths = np.asarray(simulations.params, dtype=np.float64)
    n, k = truths.shape
    starts = range(0, n, chunk_size)
    keys = jax.random.split(key, len(starts))
    ranks = np.empty((n, k), np.int64)
    mean = np.empty((n, k))
    var = np.empty((n, k))
    for kk, s in zip(keys, starts):
        idx = slice(s, min(s + chunk_size, n))
        m = idx.stop - idx.start
        draws = np.asarray(posterior.sample(simulations.data.subset(idx), kk, num_draws=num_draws), dtype=np.float64)
        if draws.shape != (m, num_draws, k):
            raise ValueError(
                f"posterior.sample returned shape {draws.shape}; expected (data sets, num_draws, parameters) "
                f"= {(m, num_draws, k)}."
            )
        if not np.all(np.isfinite(draws)):
            bad = int(np.flatnonzero(~np.isfinite(draws).all(axis=(1, 2)))[0]) + s
            raise ValueError(f"posterior.sample returned non-finite draws for simulated data set {bad}.")
        ranks[idx] = (draws < truths[idx, None, :]).sum(axis=1)
        mean[idx] = draws.mean(axis=1)
        var[idx] = draws.var(axis=1, ddof=1) if num_draws > 1 else np.nan
    return ranks, mean, var


def sbc_ranks(
    posterior,
    simulations: Simulations,
    key,
    *,
    num_draws: int = 100,
    chunk_size: int = 1000,
) -> Int[np.ndarray, "n k"]:
    """Rank of each true parameter among posterior draws given its simulated data.

    **Arguments:**

    - `posterior`: anything with `sample(data, key, *, num_draws) -> (N, M, k)` and
      `param_names`, such as an `AmortizedPosterior`.
    - `simulations`: held-out [`Simulations`][nlme_ppl.Simulations] (`params (n, k)`, `data`).
    - `key`: a JAX random key.
    - `num_draws`: `L`, posterior draws per data set.
    - `chunk_size`: data sets per call to `posterior.sample`.

    **Returns:** `(n, k)` integer ranks `#{draws < truth}` in `{0, …, L}`. Ties (a continuous
    posterior has none) count as not below.
    """
    ranks, _, _ = _ranks_and_moments(posterior, simulations, key, num_draws=num_draws, chunk_size=chunk_size)
    return ranks


def _prior_sd(model, params: np.ndarray) -> np.ndarray:
    """Training-prior standard deviations; the simulated parameters' spread where a variance is unknown."""
    out = []
    for j, name in enumerate(model.param_names):
        try:
            sd = float(np.sqrt(model.prior[name].variance))
        except (NotImplementedError, AttributeError, TypeError, KeyError):
            sd = float(np.std(params[:, j], ddof=1))
        out.append(sd if np.isfinite(sd) and sd > 0 else float(np.std(params[:, j], ddof=1)))
    return np.asarray(out)


def sbc(
    posterior,
    model,
    key,
    *,
    num_simulations: int = 500,
    num_draws: int = 100,
    prob: float = 0.99,
    chunk_size: int = 1000,
    progress: bool = False,
) -> SBCResult:
    """Simulation-based calibration of `posterior` on fresh data simulated from `model`.

    Simulates `num_simulations` pairs (φ, y) from the training prior with
    [`simulate`][nlme_ppl.simulate], ranks each φ among `num_draws` posterior draws given y,
    and tests the ranks with [`sbc_check`][nlme_ppl.diagnostics.sbc_check]. The result also
    carries posterior contraction and z-scores.

    **Arguments:**

    - `posterior`: an `AmortizedPosterior` (or anything with the same `sample` interface).
    - `model`: the `IndividualModel` the posterior was trained on.
    - `key`: a JAX random key.
    - `num_simulations`, `num_draws`: `n` and `L`.
    - `prob`: the simultaneous band's coverage.
    - `chunk_size`: data sets per call to `posterior.sample`.
    - `progress`: show the simulation progress bar.

    **Returns:** an [`SBCResult`][nlme_ppl.diagnostics.SBCResult].
    """
    check_keys(key)
    k_sim, k_post = jax.random.split(key)
    sims = simulate(model, k_sim, num_simulations=num_simulations, progress=progress)
    ranks, mean, var = _ranks_and_moments(posterior, sims, k_post, num_draws=num_draws, chunk_size=chunk_size)
    params = np.asarray(sims.params, dtype=np.float64)
    summ = _summaries(mean, var, params, _prior_sd(model, params))
    return sbc_check(
        ranks,
        num_draws,
        prob=prob,
        param_names=tuple(model.param_names),
        contraction=summ["contraction"],
        zscore=summ["zscore"],
    )
