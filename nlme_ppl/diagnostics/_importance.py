"""How well the estimator's draws support the surrogate at given population parameters.

The surrogate estimates each individual's likelihood term by importance sampling,

    p(y_i | θ) / p_train(y_i) ≈ (1/M) Σ_j w_ij,    w_ij = p(φ_ij | θ) / p_train(φ_ij),    φ_ij ~ q(φ | y_i).

The estimate is only as good as the weights are even. Two standard summaries per individual:

- the Pareto k̂ of the weights' upper tail (Vehtari et al. 2024, *Pareto smoothed importance
  sampling*, JMLR 25:72), computed with ArviZ's PSIS. Below 0.5 the estimate is reliable; above
  0.7 the weights' variance is effectively infinite and the term can be far off, however
  small its Monte Carlo error looks;
- the effective sample size `1 / Σ_j ŵ_ij²` of the normalised raw weights ŵ (between 1 and M).

Large k̂ happens when p(φ | θ) puts mass where the draws from q(φ | y_i) are rare: a
population distribution much narrower than the individual posterior, a θ far in the
training prior's tail, or an estimator that is wrong for that individual.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import equinox as eqx
import numpy as np
import numpyro
import pandas as pd
from jaxtyping import Float
from scipy.special import logsumexp

__all__ = ["ImportanceDiagnostics", "SurrogateWarning", "importance_diagnostics", "importance_from_fit"]

#: How many individuals a warning names before it only counts the rest.
_MAX_NAMED = 10
#: Fewest draws per individual: ArviZ's PSIS fits the largest M/5 weights and needs at least 5.
MIN_DRAWS = 25
#: Log weights within this of the maximum count as equal to it.
_FLAT_TOL = 1e-8


class SurrogateWarning(UserWarning):
    """The amortized surrogate may be unreliable for some individuals (see the message for which, and why)."""


def _name_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_NAMED])
    return shown + (f" and {len(ids) - _MAX_NAMED} more" if len(ids) > _MAX_NAMED else "")


class ImportanceDiagnostics(eqx.Module):
    """Per-individual importance-weight diagnostics of the surrogate at one value of θ.

    **Fields:**

    - `ids`: the `N` individual ids.
    - `pareto_k`: `(N,)` PSIS Pareto k̂ of each individual's weights; `inf` when no draw has
      positive weight or the tail is too degenerate to fit (most weights underflow to zero
      beside the largest), `-inf` when the largest weights are all equal (bounded weights,
      e.g. a population equal to the training prior).
    - `ess`: `(N,)` effective sample size `1 / Σ_j ŵ_ij²` of the normalised raw weights, in `[1, M]`
      (0 when no draw has positive weight).
    - `num_draws`: `M`, the draws per individual.
    - `draws`: `(N,)` the draws of each individual where some have more than `M` (extra
      draws, see [`fit_map`][nlme_ppl.fit_map]'s `max_draws`), else `None` (all have `M`).
    """

    ids: tuple[str, ...] = eqx.field(static=True)
    pareto_k: Float[np.ndarray, " individuals"]
    ess: Float[np.ndarray, " individuals"]
    num_draws: int = eqx.field(static=True)
    draws: np.ndarray | None = None

    def __check_init__(self):
        n = len(self.ids)
        if np.shape(self.pareto_k) != (n,) or np.shape(self.ess) != (n,):
            raise ValueError(
                f"inconsistent ImportanceDiagnostics: {n} ids, pareto_k {np.shape(self.pareto_k)}, ess {np.shape(self.ess)}."
            )

    @property
    def num_individuals(self) -> int:
        return len(self.ids)

    @property
    def k_threshold(self) -> float:
        """The sample-size-dependent reliability threshold `min(1 - 1/log10(M), 0.7)` of Vehtari et al. (2024)."""
        return float(min(1.0 - 1.0 / np.log10(self.num_draws), 0.7)) if self.num_draws > 1 else 0.0

    def bad(self, threshold: float = 0.7) -> tuple[str, ...]:
        """Ids of the individuals whose Pareto k̂ exceeds `threshold`."""
        return tuple(i for i, k in zip(self.ids, self.pareto_k) if k > threshold)

    def table(self, threshold: float = 0.7) -> pd.DataFrame:
        """One row per individual, indexed by id: `pareto_k`, `ess`, `ess_fraction` (`ess / M`) and
        `flag` (`True` where `pareto_k > threshold`), and `draws` (each individual's draws)."""
        k = np.asarray(self.pareto_k, np.float64)
        draws = np.full(k.shape, self.num_draws) if self.draws is None else np.asarray(self.draws, int)
        return pd.DataFrame(
            {
                "pareto_k": k,
                "ess": np.asarray(self.ess, np.float64),
                "ess_fraction": np.asarray(self.ess, np.float64) / draws,
                "flag": k > threshold,
                "draws": draws,
            },
            index=pd.Index(self.ids, name="id"),
        )

    def warn(self, threshold: float = 0.7, *, stacklevel: int = 2) -> None:
        """Issue one [`SurrogateWarning`][nlme_ppl.diagnostics.SurrogateWarning] naming the individuals
        with Pareto k̂ above `threshold` (nothing when there are none)."""
        bad = self.bad(threshold)
        if not bad:
            return
        worst = float(np.max(self.pareto_k))
        warnings.warn(
            f"importance weights are unreliable (Pareto k > {threshold}, worst {worst:.2f}) for {len(bad)} of "
            f"{self.num_individuals} individuals: {_name_ids(bad)}. Their likelihood terms in the surrogate can "
            "be far off: the population distribution p(phi | theta) puts mass where the estimator's draws "
            "phi ~ q(phi | y) rarely reach. Increase num_draws; if k stays high, the population model is much "
            "narrower than, or far from, those individuals' posteriors: check them (ImportanceDiagnostics.table()), "
            "or retrain the estimator with a broader training prior or more simulations.",
            SurrogateWarning,
            stacklevel=stacklevel,
        )

    def __repr__(self) -> str:
        k = np.asarray(self.pareto_k)
        return (
            f"ImportanceDiagnostics({self.num_individuals} individuals, M={self.num_draws}; "
            f"max k={np.max(k):.2f}, {int(np.sum(k > 0.7))} with k > 0.7, median ESS={np.median(self.ess):.1f})"
        )


#: Rows of log weights per block of the batched Pareto fit (bounds its memory at large N).
_KHAT_BLOCK = 20_000


def _psis_khat(log_w: np.ndarray) -> np.ndarray:
    """Pareto k̂ of each row's weights: ArviZ's PSIS (`arviz_stats` `psislw`, the generalized
    Pareto fit of Zhang & Stephens 2009 with the weak prior of Vehtari et al. 2024), written
    batched over rows, since ArviZ fits one row at a time in Python (5.8 s at N = 10,000; this
    takes milliseconds). Equal to ArviZ's k̂ to rounding (tests/diagnostics). Returns `(N,)`,
    NaN where ArviZ gives NaN (a first quartile of the tail not above its minimum) and inf
    where it gives inf (a fit that does not exist), and where the tail's weights are subnormal
    (ArviZ's grid is then all NaN and it returns the prior's 5 / (n + 10))."""
    log_w = np.asarray(log_w, np.float64)
    n, m = log_w.shape
    tail = int(np.floor(3 * np.sqrt(m))) if m > 225 else m // 5
    out = np.empty(n)
    for start in range(0, n, _KHAT_BLOCK):
        rows = np.sort(log_w[start : start + _KHAT_BLOCK], axis=1)
        rows = rows - rows[:, -1:]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            out[start : start + _KHAT_BLOCK] = _gpd_shape(np.exp(rows[:, m - tail :]) - np.exp(rows[:, m - tail - 1 : m - tail]))
    return out


def _gpd_shape(x: np.ndarray) -> np.ndarray:
    """The shape k̂ of the generalized Pareto fit to each row of `x` (sorted, ≥ 0), as ArviZ's
    `_gpdfit`: a grid of `30 + √n` values of b = -k/σ, weighted by their profile likelihood."""
    n = x.shape[1]
    m_est = 30 + int(n**0.5)
    xstar = x[:, int((n / 4 + 0.5) - 1)]
    b = (1 - np.sqrt(m_est / (np.arange(1, m_est + 1, dtype=float) - 0.5)))[None, :] / (3 * xstar[:, None]) + 1 / x[:, -1:]
    k = np.mean(np.log1p(-b[:, :, None] * x[:, None, :]), axis=2)  # (rows, m_est)
    len_scale = n * (np.log(-b / k) - k - 1)
    w = np.exp(len_scale - logsumexp(len_scale, axis=1, keepdims=True))
    w = np.where(w >= 10 * np.finfo(float).eps, w, 0.0)
    w = w / w.sum(axis=1, keepdims=True)
    b_post = np.sum(b * w, axis=1)
    kappa = np.mean(np.log1p(-b_post[:, None] * x), axis=1)
    kappa = (n * kappa + 10 * 0.5) / (n + 10)
    return np.where(xstar <= x[:, 0], np.nan, np.where(np.isnan(kappa), np.inf, kappa))


def importance_diagnostics(
    log_w: Float[np.ndarray, "individuals draws"], *, ids: Sequence[str] | None = None
) -> ImportanceDiagnostics:
    """Pareto k̂ and effective sample size of each individual's importance weights.

    **Arguments:**

    - `log_w`: `(N, M)` log importance weights `log p(φ_ij | θ) - log p_train(φ_ij)` (e.g. from
      `nlp.log_weights`); `-inf` is allowed (a draw outside the population
      distribution's support), `nan` and `+inf` are not.
    - `ids`: the `N` individual ids (default `"1"` … `"N"`, as [`Dataset`][nlme_ppl.Dataset]).

    **Returns:** an [`ImportanceDiagnostics`][nlme_ppl.diagnostics.ImportanceDiagnostics].
    """
    log_w = np.asarray(log_w, np.float64)
    if log_w.ndim != 2:
        raise ValueError(f"`log_w` must have shape (individuals, draws); got {log_w.shape}.")
    n, m = log_w.shape
    if m < MIN_DRAWS:
        raise ValueError(
            f"Pareto k needs at least {MIN_DRAWS} draws per individual; got {m}. Use num_draws of 100 or more."
        )
    ids = tuple(str(i + 1) for i in range(n)) if ids is None else tuple(str(i) for i in ids)
    if len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} rows of `log_w`; give one id per individual.")
    bad = np.isnan(log_w) | (log_w == np.inf)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"`log_w` is {log_w[i, j]} for individual {ids[i]!r} (row {i}) at draw {j}; log weights must be finite "
            "or -inf. Check the population parameters (a zero or infinite sd?) and that draw."
        )
    top = np.max(log_w, axis=1)
    dead = top == -np.inf  # no draw with positive weight
    shifted = np.where(dead[:, None], 0.0, log_w - np.where(dead, 0.0, top)[:, None])  # max 0 per row
    lw_norm = shifted - logsumexp(shifted, axis=1, keepdims=True)
    ess = np.where(dead, 0.0, np.exp(-logsumexp(2.0 * lw_norm, axis=1)))
    # ArviZ fits a generalized Pareto to the largest `tail` weights; if those are all equal (e.g. every
    # weight is, when the population equals the training prior) the weights are bounded: no tail.
    tail = int(np.floor(3 * np.sqrt(m))) if m > 225 else m // 5
    flat = ~dead & (np.partition(shifted, m - tail, axis=1)[:, m - tail] >= -_FLAT_TOL)
    k = np.full(n, np.inf)
    k[flat] = -np.inf
    fit = ~dead & ~flat
    if fit.any():
        k[fit] = _psis_khat(shifted[fit])
    # ArviZ returns nan when the tail is degenerate (most tail weights underflow to zero): the worst case.
    k = np.where(np.isnan(k), np.inf, k)
    return ImportanceDiagnostics(ids=ids, pareto_k=k, ess=ess, num_draws=m)


def importance_from_fit(population, draws, fit_or_params, data, *, site: str = "obs") -> ImportanceDiagnostics:
    """[`importance_diagnostics`][nlme_ppl.diagnostics.importance_diagnostics] at fitted population parameters.

    **Arguments:**

    - `population`: the population NumPyro program that was fitted.
    - `draws`: the [`SurrogateDraws`][nlme_ppl.SurrogateDraws] of `data` (from
      [`prepare_draws`][nlme_ppl.prepare_draws]).
    - `fit_or_params`: a [`MAPResult`][nlme_ppl.inference.map.MAPResult] (its `site_values` are used), or a
      dict of constrained values of every population site by name, e.g. `{"mean": ..., "sd": ...}`
      (posterior means or medians of a NUTS fit).
    - `data`: the [`Dataset`][nlme_ppl.Dataset], passed to `population` and naming the individuals.
    - `site`: the name of the surrogate's likelihood factor (as in `fit_map`).

    **Returns:** an [`ImportanceDiagnostics`][nlme_ppl.diagnostics.ImportanceDiagnostics], with
    `data.ids` as ids.
    An individual with extra draws (`draws.extra`) is judged on all its draws.
    """
    from ..likelihood import _evaluated, amortize

    params = getattr(fit_or_params, "site_values", fit_or_params)
    if not isinstance(params, Mapping):
        raise TypeError(
            "`fit_or_params` must be a MAPResult or a dict of population site values by name; got "
            f"{type(fit_or_params).__name__}."
        )
    if draws.num_individuals != data.num_individuals:
        raise ValueError(
            f"`draws` hold {draws.num_individuals} individuals but `data` has {data.num_individuals}; take the "
            "draws of this data set with nlp.prepare_draws(posterior, data, key)."
        )
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    # Every latent population site must be given: log_weights would otherwise draw it at random.
    with numpyro.handlers.seed(rng_seed=0):
        tr = numpyro.handlers.trace(numpyro.handlers.substitute(amortize(population, draws, site=site), data=params)).get_trace(data)
    missing = [s for s, site in tr.items() if site["type"] == "sample" and not site["is_observed"] and s not in params]
    if missing:
        raise ValueError(
            f"no value given for population site(s) {missing}; pass every site of the population program "
            f"(given: {sorted(params)}), e.g. MAPResult.site_values."
        )
    handler = _evaluated(population, draws, params, (data,), {})
    log_w = np.asarray(handler.log_weights(), np.float64)
    out = importance_diagnostics(log_w, ids=data.ids)
    if draws.extra is None:
        return out
    rows = np.asarray(draws.extra_index)
    more = importance_diagnostics(np.concatenate([log_w[rows], np.asarray(handler.log_weights_extra(), np.float64)], axis=1),
                                  ids=[data.ids[i] for i in rows])  # fmt: skip
    k, ess = np.array(out.pareto_k), np.array(out.ess)
    k[rows], ess[rows] = more.pareto_k, more.ess
    counts = np.asarray(draws.draws_per_individual()).astype(int)
    return ImportanceDiagnostics(ids=out.ids, pareto_k=k, ess=ess, num_draws=out.num_draws, draws=counts)
