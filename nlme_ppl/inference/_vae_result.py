"""The result of a VAE fit, and its identifiability report across starts."""

from __future__ import annotations

import equinox as eqx
import numpy as np
import pandas as pd

from ._result import parameter_table

__all__ = ["VAEResult", "identifiability_report"]


def identifiability_report(
    start_params: dict[str, np.ndarray], start_loglik: np.ndarray, best: int, stderr: dict[str, float], correlation: np.ndarray | None,
    *, loglik_tolerance: float = 1.0, max_correlation: float = 0.99,
) -> dict[str, list]:
    """Per parameter: how far the starts that reached the best log-likelihood (within
    `loglik_tolerance`) spread, against the best start's SE.

    A parameter is flagged when (a) those starts disagree beyond their SEs (range > 2 SE),
    (b) its SE is not finite (the observed information is singular in its direction), or (c)
    its estimate is correlated beyond `max_correlation` with another one (only a combination of
    them is identified, e.g. two parameters that enter as a product). Starts that ended lower
    found another local optimum; they are counted, not used for the spread.
    """
    ll = np.asarray(start_loglik, float)
    same = np.flatnonzero(np.isfinite(ll) & (ll >= ll[best] - loglik_tolerance))
    labels = list(start_params)
    out: dict[str, list] = {k: [] for k in ("parameter", "estimate", "se", "start_min", "start_max", "start_sd", "range_over_se", "flag", "reason")}
    for j, label in enumerate(labels):
        values = np.asarray(start_params[label], float)[same]
        se = float(stderr.get(label, np.nan))
        spread = float(values.max() - values.min()) if values.size else np.nan
        reasons = []
        if not np.isfinite(se):
            reasons.append("singular information (no finite SE)" + (f"; starts range {spread:.3g}" if values.size > 1 else ""))
        elif values.size > 1 and spread > 2 * se:
            reasons.append(f"starts disagree: range {spread:.3g} > 2 SE (not identified, or the starts not converged to one point)")
        if correlation is not None and np.isfinite(se):
            row = np.abs(np.asarray(correlation)[j])
            partners = [labels[i] for i in np.flatnonzero(row > max_correlation) if i != j]
            if partners:
                reasons.append("confounded with " + ", ".join(partners))
        out["parameter"].append(label)
        out["estimate"].append(float(np.asarray(start_params[label])[best]))
        out["se"].append(se)
        out["start_min"].append(float(values.min()))
        out["start_max"].append(float(values.max()))
        out["start_sd"].append(float(values.std(ddof=1)) if values.size > 1 else np.nan)
        out["range_over_se"].append(spread / se if np.isfinite(se) and se > 0 else np.nan)
        out["flag"].append(bool(reasons))
        out["reason"].append("; ".join(reasons))
    out["equivalent_starts"] = [int(same.size)] * len(labels)
    return out


class VAEResult(eqx.Module):
    """The result of [`fit_vae`][nlme_ppl.fit_vae].

    **Fields:**

    - `params`: population parameters by label (`mean[CL]`, `sd[CL]`, `corr[a,b]`), from the
      start with the largest marginal log-likelihood.
    - `stderr`, `robust_stderr`: SEs by label from the observed Fisher information (the
      autodiff Hessian of the importance-sampled log-likelihood), and the sandwich ones.
    - `covariance`, `robust_covariance`: `(L, L)` covariances in `params` order.
    - `site_values`: the constrained population site values.
    - `ebe_mean`, `ebe_sd`: `(N, k)` individual estimates, one encoder pass: the mean and SD of
      q(φ_i | y_i) per parameter (`param_names` order; a parameter without random effect has
      its population value and SD 0).
    - `elbo_history`: `(num_starts, num_steps)` ELBO (summed over individuals) at every step.
    - `start_params`: label -> `(num_starts,)` estimates of every start; `start_loglik`: their
      marginal log-likelihoods; `best`: the chosen start.
    - `absolute`: the log-likelihood at the estimate (an
      [`ObjectiveFunction`][nlme_ppl.inference.ObjectiveFunction]: loglik, OFV, AIC, BIC, with
      its Monte Carlo SE), by importance sampling with the encoder as proposal.
    - `pointwise`, `pointwise_mc_se`: `(N,)` per-individual log-likelihood terms and their SEs.
    - `identifiability`: the report of [`identifiability_table`][nlme_ppl.VAEResult.identifiability_table].
    - `encoder`: the trained encoder of the best start (an `eqx.Module`); `local`: its
      per-individual offsets `(dloc, dlog_scale)` of q after `local_steps`, or None.
    - `seconds`: wall time of the fit.
    """

    params: dict[str, float]
    stderr: dict[str, float]
    robust_stderr: dict[str, float]
    covariance: np.ndarray
    robust_covariance: np.ndarray
    site_values: dict
    ebe_mean: np.ndarray
    ebe_sd: np.ndarray
    elbo_history: np.ndarray
    start_params: dict
    start_loglik: np.ndarray
    best: int
    absolute: object
    pointwise: np.ndarray
    pointwise_mc_se: np.ndarray
    identifiability: dict
    encoder: object
    local: object
    seconds: float
    ids: tuple[str, ...] = eqx.field(static=True)
    param_names: tuple[str, ...] = eqx.field(static=True)
    population: object = eqx.field(static=True)
    site: str = eqx.field(static=True, default="obs")

    @property
    def loglik(self) -> float:
        return self.absolute.loglik

    @property
    def ofv(self) -> float:
        return self.absolute.ofv

    @property
    def aic(self) -> float:
        return self.absolute.aic

    @property
    def bic(self) -> float:
        return self.absolute.bic

    def table(self, truth: dict[str, float] | None = None, *, robust: bool = False, level: float = 0.95) -> pd.DataFrame:
        """Estimates with SEs, RSE%, Wald intervals, back-transformed values and CV% (as `MAPResult.table`)."""
        return parameter_table(self.params, self.robust_stderr if robust else self.stderr, truth, level=level)

    def identifiability_table(self) -> pd.DataFrame:
        """Per parameter: the estimate and SE, the range and SD of the estimates over the starts
        that reached the best log-likelihood, `range_over_se`, and `flag` with its `reason`."""
        return pd.DataFrame(self.identifiability).set_index("parameter")

    def starts_table(self) -> pd.DataFrame:
        """Every start's estimates, final ELBO and marginal log-likelihood (one row per start)."""
        frame = pd.DataFrame({k: np.asarray(v) for k, v in self.start_params.items()})
        frame["elbo"] = self.elbo_history[:, -max(1, self.elbo_history.shape[1] // 20) :].mean(axis=1)
        frame["loglik"] = self.start_loglik
        frame.index.name = "start"
        return frame

    def ebe(self) -> pd.DataFrame:
        """The individual estimates (encoder means and SDs), indexed by id."""
        cols = {n: self.ebe_mean[:, j] for j, n in enumerate(self.param_names)}
        cols.update({f"sd[{n}]": self.ebe_sd[:, j] for j, n in enumerate(self.param_names)})
        return pd.DataFrame(cols, index=pd.Index(self.ids, name="id"))

    def plot_elbo(self, path=None, *, ax=None):
        """The ELBO of every start against the step, with the importance-sampled log-likelihood
        at the estimate (the ELBO is a lower bound of it). Returns the figure; saved at `path`."""
        import matplotlib

        if path is not None and ax is None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4)) if ax is None else (ax.figure, ax)
        hist = np.asarray(self.elbo_history)
        steps = np.arange(1, hist.shape[1] + 1)
        width = max(1, hist.shape[1] // 50)  # a running mean: each step's ELBO is a Monte Carlo estimate
        smooth = np.stack([np.convolve(h, np.ones(width) / width, mode="valid") for h in hist])
        ax.plot(steps, hist[self.best], color="0.8", lw=0.5, label="best start, each step")
        for s, h in enumerate(smooth):
            ax.plot(steps[width - 1 :], h, lw=1.6 if s == self.best else 0.8, alpha=1.0 if s == self.best else 0.6,
                    label=f"start {s} (best), running mean" if s == self.best else None)  # fmt: skip
        ax.axhline(self.loglik, color="k", ls="--", lw=1, label=f"log-likelihood (IS) {self.loglik:.1f}")
        tail = smooth[:, smooth.shape[1] // 4 :]
        lo = np.nanmin(tail)
        hi = max(np.nanmax(tail), self.loglik)
        ax.set_ylim(lo - 0.05 * (hi - lo + 1), hi + 0.05 * (hi - lo + 1))
        ax.set_xlabel("Adam step")
        ax.set_ylabel("ELBO (sum over individuals)")
        ax.set_title(f"VAE training, {hist.shape[0]} starts")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    def to_arviz(self, data=None):
        """The estimate as an ArviZ DataTree with one chain of one draw, with the per-individual
        marginal log-likelihood as `log_likelihood`."""
        from ._datatree import to_datatree

        posterior = {k: np.asarray(v)[None, None] for k, v in self.site_values.items()}
        loglik = np.asarray(self.pointwise)[None, None]
        attrs = {"inference": "NN-NLME variational autoencoder (fit_vae)"}
        return to_datatree(self.population, posterior, loglik, ids=self.ids, data=data, site=self.site, attrs=attrs)

    def __repr__(self) -> str:
        return f"VAEResult(best start {self.best} of {len(self.start_loglik)}, loglik={self.loglik:.3f})\n{self.table()}"
