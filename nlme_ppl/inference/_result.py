"""The result of a MAP fit, and the parameter table every engine prints."""

from __future__ import annotations

import math

import equinox as eqx
import numpy as np
import pandas as pd

__all__ = ["MAPResult", "parameter_table"]


class MAPResult(eqx.Module):
    """The result of [`fit_map`][nlme_ppl.fit_map].

    **Fields:**

    - `params`: population parameters by label (`mean[delta]`, `sd[delta]`, `corr[a,b]`).
    - `stderr`: standard errors by label, from the inverse Hessian of the negative log posterior
      (in unconstrained space, mapped by the delta method); NaN where the Hessian is not
      positive definite.
    - `site_values`: the constrained values of each population site (arrays).
    - `losses`: `(num_starts,)` final negative log posterior of each start (on the draws it was fitted to).
    - `rescored`: negative log posterior of the best starts on fresh draws (NaN for the others).
    - `converged`: `(num_starts,)` whether the gradient-norm criterion was met within `max_iter`.
    - `iterations`: `(num_starts,)` L-BFGS iterations used.
    - `best`: index of the chosen start.
    - `log_likelihood`: surrogate population log-likelihood at the estimate, relative to the
      training prior's marginal likelihood of the same data (see `nlme_ppl.likelihood`).
    - `pointwise`: `(N,)` per-individual terms of `log_likelihood`.
    - `importance`: the surrogate-quality check at the estimate (PSIS Pareto k and ESS of each
      individual's importance weights; an
      [`ImportanceDiagnostics`][nlme_ppl.diagnostics.ImportanceDiagnostics]), or None with `diagnose=False`.
    - `outliers`: the summary-space check of the data against the training simulations (an
      [`OutlierDiagnostics`][nlme_ppl.diagnostics.OutlierDiagnostics]), or None.
    - `fixed_widths`: for each parameter without random effect, the median over individuals of
      the estimator's posterior SD over the training prior's (near 1: the individual posteriors
      barely inform it, see [Diagnostics](guide/diagnostics.md#parameters-without-random-effect)), or None.
    - `site`: the name of the surrogate's likelihood factor (the `log_likelihood` variable of `to_arviz`).
    - `refined`: the [`RefinedPosterior`][nlme_ppl.RefinedPosterior] whose draws were fitted
      (`refine` on), with its per-individual Pareto k and ESS, or None (the amortized path).
    - `fixed_treatment`: how parameters without random effect entered the surrogate,
      `"likelihood"` (the expansion of the exact likelihood) or `"kernel"` (see `fit_map`'s `fixed`).
    - `fixed_rounds`: the fits made with the likelihood treatment (one per expansion point; 0
      with the kernel treatment).
    - `raised`: the ids of the individuals that got extra draws (Pareto k > 0.7 at the first
      fit, and the next-highest k up to a count rounded up to min(8, N/16) at least, then by at most 25%,
      so that fits of similar data reuse their compiled programs; `fit_map`'s `max_draws`), for
      which the fit was redone; empty if none.
    - `max_draws`: the cap of an individual's draws (0 where not recorded).
    - `robust_stderr`: sandwich (robust) standard errors by label, H⁻¹ S H⁻¹ with S the sum
      of the individuals' outer score products (NONMEM's default `$COV` matrix).
    - `covariance`, `robust_covariance`: `(L, L)` covariances of the estimates in `params`
      order (see [`correlation`][nlme_ppl.MAPResult.correlation]).
    - `draws`: the [`SurrogateDraws`][nlme_ppl.SurrogateDraws] the fit was made on (profiles,
      bootstrap and model comparison re-use them).
    - `posterior`: the estimator whose draws were fitted (the refinement where `refine` was on).
    - `absolute`: the log-likelihood on the absolute scale (an
      [`ObjectiveFunction`][nlme_ppl.inference.ObjectiveFunction]: loglik, OFV, AIC, BIC with
      its Monte Carlo error), or None where it was not computed.
    - `timings`: the wall and compilation seconds of each phase of the call (draws, refinement,
      starts, rescoring, standard errors, diagnostics; a [`Timings`][nlme_ppl.Timings]), or None.
    """

    params: dict[str, float]
    stderr: dict[str, float]
    site_values: dict
    losses: np.ndarray
    rescored: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    best: int
    log_likelihood: float
    pointwise: np.ndarray
    ids: tuple[str, ...] = eqx.field(static=True)
    population: object = eqx.field(static=True)
    importance: object = None
    outliers: object = None
    fixed_widths: dict | None = None
    site: str = eqx.field(static=True, default="obs")
    refined: object = None
    fixed_treatment: str = eqx.field(static=True, default="kernel")
    fixed_rounds: int = eqx.field(static=True, default=0)
    raised: tuple[str, ...] = eqx.field(static=True, default=())
    max_draws: int = eqx.field(static=True, default=0)
    robust_stderr: dict | None = None
    covariance: np.ndarray | None = None
    robust_covariance: np.ndarray | None = None
    draws: object = None
    posterior: object = None
    absolute: object = None
    timings: object = None

    # ------------------------------------------------------------------ absolute scale
    @property
    def loglik(self) -> float:
        """log p(D | θ̂) on the absolute scale (NaN where `absolute` was not computed)."""
        return float("nan") if self.absolute is None else self.absolute.loglik

    @property
    def ofv(self) -> float:
        """−2 log-likelihood, NONMEM's objective function value (NaN without `absolute`)."""
        return float("nan") if self.absolute is None else self.absolute.ofv

    @property
    def aic(self) -> float:
        return float("nan") if self.absolute is None else self.absolute.aic

    @property
    def bic(self) -> float:
        return float("nan") if self.absolute is None else self.absolute.bic

    def correlation(self, *, robust: bool = False) -> pd.DataFrame:
        """The correlation matrix of the estimates (from `covariance`, or `robust_covariance`)."""
        from ._uncertainty import correlation_frame

        cov = self.robust_covariance if robust else self.covariance
        if cov is None:
            raise ValueError("this fit carries no covariance of its estimates (it was made before covariances were recorded); refit it.")
        return correlation_frame(np.asarray(cov), list(self.params))

    def table(self, truth: dict[str, float] | None = None, *, robust: bool = False, level: float = 0.95) -> pd.DataFrame:
        """Estimates with standard errors, RSE%, Wald intervals, back-transformed values and CV%.

        `value` is exp(estimate) for `mean[...]` rows (the median on the natural scale of a
        log-scale parameter); `cv_percent` is 100·sqrt(exp(sd²) - 1) for `sd[...]` rows.
        `ci_lower`, `ci_upper`: the Wald interval estimate ± z·SE at `level`. With
        `robust=True` the SEs are the sandwich ones. With `truth` (by label), adds `truth`
        and `error` columns.
        """
        stderr = self.robust_stderr if robust and self.robust_stderr is not None else self.stderr
        return parameter_table(self.params, stderr, truth, level=level)

    def diagnostics_table(self) -> pd.DataFrame:
        """Per-individual surrogate checks, indexed by id: `pareto_k`, `ess`, `ess_fraction` and
        `flag` of the importance weights, and `summary_distance`, `summary_tail_prob`,
        `outlier` of the summary-space check (empty without `diagnose`)."""
        parts = []
        if self.importance is not None:
            parts.append(self.importance.table())
        if self.outliers is not None:
            parts.append(self.outliers.table().rename(columns={"distance": "summary_distance", "tail_prob": "summary_tail_prob", "flag": "outlier"}))
        return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=pd.Index(self.ids, name="id"))

    def diagnostics_summary(self) -> dict:
        """A JSON-able summary of the surrogate checks (counts, worst values, flagged ids)."""
        out = {}
        if self.importance is not None:
            k = np.asarray(self.importance.pareto_k)
            out["pareto_k_above_0.7"] = int(np.sum(k > 0.7))
            out["pareto_k_max"] = float(np.max(k))
            out["ess_median"] = float(np.median(self.importance.ess))
            out["num_draws"] = int(self.importance.num_draws)
            out["high_k_ids"] = list(self.importance.bad())
        out["raised"] = len(self.raised)
        out["raised_ids"] = list(self.raised)
        out["max_draws"] = int(self.max_draws)
        if self.refined is not None:
            k = np.asarray(self.refined.pareto_k)
            out["refined"] = {"pareto_k_above_0.7": int(np.sum(k > 0.7)), "ess_median": float(np.median(self.refined.ess)),
                              "num_proposals": int(self.refined.values.shape[1])}
        out["fixed_treatment"] = self.fixed_treatment
        if self.outliers is not None:
            out["summary_outlier_ids"] = list(self.outliers.bad(2.0))
        if self.fixed_widths:
            out["fixed_posterior_over_prior_sd"] = dict(self.fixed_widths)
        return out

    def to_arviz(self, data=None):
        """The estimate as an ArviZ DataTree with one chain of one draw (plus log-likelihood)."""
        from ._datatree import to_datatree

        posterior = {k: np.asarray(v)[None, None] for k, v in self.site_values.items()}
        loglik = np.asarray(self.pointwise)[None, None]
        return to_datatree(self.population, posterior, loglik, ids=self.ids, data=data, site=self.site)

    def __repr__(self) -> str:
        return f"MAPResult(best start {self.best}, converged={bool(self.converged[self.best])}, loglik={self.log_likelihood:.3f})\n{self.table()}"


def parameter_table(params: dict, stderr: dict | None = None, truth: dict | None = None, *, level: float = 0.95) -> pd.DataFrame:
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    rows = []
    for label, est in params.items():
        row = {"parameter": label, "estimate": est}
        if stderr is not None:
            se = stderr.get(label, np.nan)
            row["se"] = se
            row["rse_percent"] = 100 * abs(se / est) if est != 0 else np.nan
            row["ci_lower"], row["ci_upper"] = est - z * se, est + z * se
        row["value"] = math.exp(est) if label.startswith("mean[") else np.nan
        row["cv_percent"] = 100 * math.sqrt(math.expm1(est**2)) if label.startswith("sd[") else np.nan
        if truth is not None:
            row["truth"] = truth.get(label, np.nan)
            row["error"] = est - row["truth"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("parameter")
