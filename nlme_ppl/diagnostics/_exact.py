"""The estimator against the exact individual posteriors, by importance sampling.

SBC tests calibration, not information: an estimator that ignores part of the data (a summary
network that loses it) is calibrated, only wider than the exact posterior, and passes. Where the
individual likelihood p(y | φ) is tractable, the exact posterior can be reached by
self-normalised importance sampling, with the estimator itself as the proposal:

    p(φ | y_i) ∝ p_train(φ) p(y_i | φ),    proposal  g_i = (1 - ε) q(φ | y_i) + ε p_train(φ).

The defensive share ε of training-prior draws keeps the weights bounded where q is too narrow
(Hesterberg 1995). An estimator that is too *wide* is the easy case for the proposal, and the
one SBC misses.

Why it matters for population inference: a parameter without random effect (a residual error
SD) is estimated from the ratios q(φ | y_i) / p_train(φ) of all individuals together. If q has
lost most of what y_i says about it, each ratio is nearly flat and small errors in q add up over
individuals. The SD ratio (estimator / exact) per parameter tells how much was lost.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float, PRNGKeyArray
from scipy.special import logsumexp

from .._validate import check_keys, positive_int
from ._importance import MIN_DRAWS, importance_diagnostics

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not with nlme_ppl
    from matplotlib.figure import Figure

__all__ = ["ExactComparison", "ImportancePosterior", "compare_with_exact"]

#: Likelihood evaluations per compiled call (bounds memory; N·P can be millions).
_EVALS_PER_CHUNK = 200_000


@eqx.filter_jit
def _log_likelihood(model, params, designs, obs):
    """(n, P) exact log p(y_i | φ_ij) for n individuals."""
    per_draw = jax.vmap(model.log_likelihood, in_axes=(0, None, None))  # the draws of one individual
    return jax.vmap(per_draw)(params, designs, obs)


def _chunked_log_likelihood(model, params: np.ndarray, data) -> np.ndarray:
    designs = model.designs_from_data(data)
    obs = jnp.asarray(data.values, jnp.float64)
    n, p = params.shape[:2]
    size = max(1, min(n, _EVALS_PER_CHUNK // p))
    out = []
    for s in range(0, n, size):
        e = min(n, s + size)
        pick = lambda x: x[s:e]  # noqa: E731
        out.append(np.asarray(_log_likelihood(model, jnp.asarray(params[s:e]), jax.tree.map(pick, designs), obs[s:e])))
    return np.concatenate(out)


class ImportancePosterior(eqx.Module):
    """The exact individual posteriors of one data set, as weighted draws, with the estimator
    interface: `sample(data, key, num_draws=M)` resamples (with replacement, by weight) each
    individual's weighted draws. Pass it to `fit_map` or `fit_nuts` in place of the estimator to
    get the population fit that a perfect estimator would give, the reference for the
    amortized one. It serves only the data set it was built on.

    **Fields:** `model`; `values` `(N, P, k)` draws from the proposal; `log_weights` `(N, P)`
    normalised log importance weights (each row's weights sum to 1); `data` the data set.

    Of the [`Posterior`][nlme_ppl.estimators.Posterior] interface it has what a fit uses
    (`model`, `param_names`, `sample`, and `summaries`, which gives `None`: there is no
    summary network); it is not an estimator file, and has no density of its own.
    """

    model: object
    values: Float[np.ndarray, "individuals proposals k"]
    log_weights: Float[np.ndarray, "individuals proposals"]
    data: object
    backend: ClassVar[str] = "importance"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.model.param_names)

    @property
    def num_params(self) -> int:
        return len(self.param_names)

    def summaries(self, data) -> None:
        """`None`: weighted draws have no summary network (the summary-space check is skipped)."""
        return None

    def sample(self, data, key: PRNGKeyArray, *, num_draws: int) -> Float[Array, "individuals draws k"]:
        """`num_draws` draws per individual of `data` (these data, or some of their individuals,
        by id) from the weighted draws (sampling-importance-resampling)."""
        check_keys(key)
        num_draws = positive_int(num_draws, name="num_draws")
        rows = self._rows(data)
        keys = jax.random.split(key, rows.size)
        idx = jax.vmap(lambda k, lw: jax.random.categorical(k, lw, shape=(num_draws,)))(keys, jnp.asarray(self.log_weights[rows]))
        return jnp.take_along_axis(jnp.asarray(self.values[rows]), idx[..., None], axis=1)

    def _rows(self, data) -> np.ndarray:
        """The rows of `data`'s individuals in these weighted draws (refused if its data differ)."""
        rows = self.data.rows_of(data)
        if rows is None:
            raise ValueError(
                "this ImportancePosterior holds the exact posteriors of another data set; build one for "
                "these data with nlp.diagnostics.compare_with_exact(estimator, data, key)."
            )
        return rows


class ExactComparison(eqx.Module):
    """An estimator's posteriors against the exact ones, per individual and parameter.

    **Fields:**

    - `ids`, `param_names`.
    - `exact_mean`, `exact_sd`: `(N, k)` importance-sampling estimates of the exact posterior moments.
    - `estimator_mean`, `estimator_sd`: `(N, k)` moments of the estimator's draws.
    - `pareto_k`, `ess`: `(N,)` PSIS Pareto k̂ and effective sample size of each individual's
      importance weights. Rows with k̂ > 0.7 are unreliable; `table()` leaves them out and counts them.
    - `num_nonfinite`: proposals whose log-likelihood was not finite (given zero weight; e.g. a
      training-prior draw where the model's solution overflows).
    - `exact`: the [`ImportancePosterior`][nlme_ppl.diagnostics.ImportancePosterior].
    """

    ids: tuple[str, ...] = eqx.field(static=True)
    param_names: tuple[str, ...] = eqx.field(static=True)
    exact_mean: Float[np.ndarray, "individuals k"]
    exact_sd: Float[np.ndarray, "individuals k"]
    estimator_mean: Float[np.ndarray, "individuals k"]
    estimator_sd: Float[np.ndarray, "individuals k"]
    pareto_k: Float[np.ndarray, " individuals"]
    ess: Float[np.ndarray, " individuals"]
    num_nonfinite: int
    exact: ImportancePosterior

    @property
    def sd_ratio(self) -> Float[np.ndarray, "individuals k"]:
        """Estimator SD / exact SD: above 1, the estimator has lost information."""
        return self.estimator_sd / self.exact_sd

    @property
    def zscore(self) -> Float[np.ndarray, "individuals k"]:
        """(estimator mean - exact mean) / exact SD."""
        return (self.estimator_mean - self.exact_mean) / self.exact_sd

    def reliable(self, threshold: float = 0.7) -> np.ndarray:
        """`(N,)` mask of individuals whose importance weights have Pareto k̂ ≤ `threshold`."""
        return np.asarray(self.pareto_k) <= threshold

    def table(self, threshold: float = 0.7) -> pd.DataFrame:
        """One row per parameter, over the reliable individuals: `median_sd_ratio`, `mean_sd_ratio`,
        `mean_zscore`, `median_abs_zscore`, and `num_individuals` / `num_unreliable`."""
        ok = self.reliable(threshold)
        r, z = self.sd_ratio[ok], self.zscore[ok]
        return pd.DataFrame(
            {
                "median_sd_ratio": np.median(r, 0),
                "mean_sd_ratio": np.mean(r, 0),
                "mean_zscore": np.mean(z, 0),
                "median_abs_zscore": np.median(np.abs(z), 0),
                "num_individuals": int(ok.sum()),
                "num_unreliable": int((~ok).sum()),
            },
            index=pd.Index(self.param_names, name="param"),
        )

    def plot(self, path: str | Path | None = None, *, threshold: float = 0.7) -> Figure:
        """Estimator SD against exact SD, one panel per parameter (log axes, the diagonal drawn), the
        reliable individuals only; save to `path` if given."""
        ok = self.reliable(threshold)
        k = len(self.param_names)
        ncols = min(k, 4)
        nrows = math.ceil(k / ncols)
        from matplotlib.figure import Figure
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        fig = Figure(figsize=(3.2 * ncols, 3.0 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        tab = self.table(threshold)
        for j, (ax, name) in enumerate(zip(axes, self.param_names)):
            x, y = self.exact_sd[ok, j], self.estimator_sd[ok, j]
            lo, hi = float(min(x.min(), y.min())) * 0.8, float(max(x.max(), y.max())) * 1.25
            ax.plot([lo, hi], [lo, hi], color="0.4", linestyle="--", linewidth=0.8)
            ax.scatter(x, y, s=8, alpha=0.6)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            for axis in (ax.xaxis, ax.yaxis):  # ticks at 1, 2, 5 per decade: most panels span under two decades
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(FormatStrFormatter("%g"))
                axis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{name}: SD ratio {tab.loc[name, 'median_sd_ratio']:.2f}, mean z {tab.loc[name, 'mean_zscore']:+.2f}", fontsize=9)
            ax.set_xlabel("exact posterior SD")
        for ax in axes[k:]:
            ax.set_visible(False)
        for ax in axes[::ncols]:
            ax.set_ylabel("estimator posterior SD")
        fig.suptitle(f"estimator against exact posteriors ({int(ok.sum())} individuals, medians)", fontsize=10)
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=120)
        return fig

    def __repr__(self) -> str:
        shown = ", ".join(f"{n} {v:.2f}" for n, v in self.table()["median_sd_ratio"].items())
        return f"ExactComparison({len(self.ids)} individuals; median SD ratio estimator/exact: {shown})"


def compare_with_exact(
    posterior,
    data,
    key: PRNGKeyArray,
    *,
    num_proposals: int = 4000,
    defensive: float = 0.25,
    num_draws: int = 1000,
) -> ExactComparison:
    """Compare `posterior`'s individual posteriors with the exact ones (tractable models only).

    For each individual, `num_proposals` draws come from the mixture `(1 - defensive) q(φ | y_i) +
    defensive p_train(φ)` and are weighted by `p_train(φ) p(y_i | φ) / g_i(φ)`. The estimator's
    own moments come from `num_draws` fresh draws.

    Costs `N · num_proposals` likelihood evaluations and one `log_prob` of the estimator over as
    many draws (about a minute for 200 individuals of the one-compartment PK model on 2 CPU cores).

    **Arguments:**

    - `posterior`: an estimator with `sample`, `log_prob` and `model` (flowjax or sbi).
    - `data`: a [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX random key.
    - `num_proposals`: importance draws per individual, `P`.
    - `defensive`: the share of them drawn from the training prior, in `(0, 1)`.
    - `num_draws`: estimator draws per individual for its moments.

    **Returns:** an [`ExactComparison`][nlme_ppl.diagnostics.ExactComparison]; its `exact` field
    serves the exact posteriors to `fit_map` and `fit_nuts`.
    """
    check_keys(key)
    num_proposals = positive_int(num_proposals, name="num_proposals")
    if num_proposals < 4 * MIN_DRAWS:
        raise ValueError(f"`num_proposals` must be at least {4 * MIN_DRAWS} (Pareto k of the weights needs them); got {num_proposals}.")
    num_draws = positive_int(num_draws, name="num_draws")
    if not 0.0 < float(defensive) < 1.0:
        raise ValueError(f"`defensive` must lie strictly between 0 and 1; got {defensive}.")
    model = posterior.model
    if not getattr(model, "tractable", True):
        raise ValueError(
            f"model {model.name!r} declares tractable=False: its likelihood p(y | phi) cannot be evaluated, so "
            "there is no exact posterior to compare with. Use SBC and posterior contraction (nlp.diagnostics.sbc)."
        )
    if not hasattr(posterior, "log_prob"):
        raise TypeError(f"{type(posterior).__name__} has no log_prob(data, params): the importance proposal needs its density.")
    n = data.num_individuals
    num_prior = max(1, round(defensive * num_proposals))
    num_q = num_proposals - num_prior
    if num_q < 1:
        raise ValueError(f"num_proposals={num_proposals} leaves no draw from the estimator at defensive={defensive}; raise num_proposals.")
    k_q, k_prior, k_est = jax.random.split(key, 3)
    values = np.concatenate(
        [np.asarray(posterior.sample(data, k_q, num_draws=num_q), np.float64),
         np.asarray(model.prior_sample(k_prior, (n, num_prior)), np.float64)],
        axis=1,
    )
    log_prior = np.asarray(model.prior_log_prob(jnp.asarray(values)), np.float64)
    log_q = np.asarray(posterior.log_prob(data, values), np.float64)
    share = num_prior / num_proposals  # the mixture's weights are the shares actually drawn
    log_g = np.logaddexp(math.log1p(-share) + log_q, math.log(share) + log_prior)
    log_lik = _chunked_log_likelihood(model, values, data)
    bad = ~np.isfinite(log_lik)
    log_w = np.where(bad, -np.inf, log_prior + log_lik - log_g)
    if np.all(log_w == -np.inf, axis=1).any():
        i = int(np.argmax(np.all(log_w == -np.inf, axis=1)))
        raise ValueError(
            f"individual {data.ids[i]!r}: no proposal has a finite likelihood; check its data (units, "
            "dosing) against the model, or raise num_proposals."
        )
    log_w = log_w - logsumexp(log_w, axis=1, keepdims=True)
    diag = importance_diagnostics(log_w, ids=data.ids)
    w = np.exp(log_w)
    mean = np.einsum("np,npk->nk", w, values)
    sd = np.sqrt(np.einsum("np,npk->nk", w, (values - mean[:, None, :]) ** 2))
    own = np.asarray(posterior.sample(data, k_est, num_draws=num_draws), np.float64)
    return ExactComparison(
        ids=tuple(data.ids),
        param_names=tuple(model.param_names),
        exact_mean=mean,
        exact_sd=sd,
        estimator_mean=own.mean(1),
        estimator_sd=own.std(1, ddof=1),
        pareto_k=np.asarray(diag.pareto_k),
        ess=np.asarray(diag.ess),
        num_nonfinite=int(bad.sum()),
        exact=ImportancePosterior(model=model, values=values, log_weights=log_w, data=data),
    )
