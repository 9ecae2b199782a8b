"""Visual predictive check (VPC), with prediction correction as an option.

Each of R replicates simulates the whole study from the fitted population: new individual
parameters at each individual's covariates, observed at its own design (doses, times, limits
of quantification). Observations are binned by time; in each bin the observed percentiles are
set against the median and a `ci` interval of the same percentile over the replicates.

Censoring: a censored observation counts at its limit (LLOQ) both in the data and in the
simulations (the simulator records a value below the limit as the limit), so a percentile below
the LLOQ is not drawn; a second panel compares the fraction below the LLOQ instead.

Prediction correction (pcVPC, Bergstrand et al. 2011): every observed and simulated value is
multiplied by median(PRED in its bin) / PRED of its observation, removing the variability that
comes from the design (doses, times within a bin, covariates). An observation predicted at 0
(a sample before the first dose) is left uncorrected, and does not enter the bin's median.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._residuals import _moments, simulate_study, typical_parameters

__all__ = ["VPCResult", "vpc"]


class VPCResult(eqx.Module):
    """A visual predictive check: per time bin, observed and simulated percentiles.

    **Fields:**

    - `edges`: `(B + 1,)` bin edges in time; `mid`: `(B,)` median observed time of each bin.
    - `percentiles`: the `P` percentiles; `ci`: the width of the simulated intervals.
    - `observed`: `(B, P)` observed percentiles; `simulated`: `(B, P, 3)` the lower bound,
      median and upper bound over replicates of each simulated percentile.
    - `blq_observed`: `(B,)` observed fraction below the LLOQ, `blq_simulated` `(B, 3)` its
      simulated interval (both None without censoring); `lloq`: the smallest limit, or None.
    - `times`, `values`: the observations as plotted (prediction-corrected with `pred_corr`).
    - `counts`: `(B,)` observations per bin; `pred_corr`: whether values are prediction-corrected.
    """

    edges: np.ndarray
    mid: np.ndarray
    percentiles: tuple[float, ...] = eqx.field(static=True)
    ci: float = eqx.field(static=True)
    observed: np.ndarray
    simulated: np.ndarray
    blq_observed: np.ndarray | None
    blq_simulated: np.ndarray | None
    lloq: float | None
    times: np.ndarray
    values: np.ndarray
    counts: np.ndarray
    pred_corr: bool = eqx.field(static=True)

    def table(self) -> pd.DataFrame:
        """One row per bin: `t_lo`, `t_hi`, `t_mid`, `n`, and for each percentile p `obs_p`,
        `sim_p_lo`, `sim_p_median`, `sim_p_hi`; with censoring `blq_obs`, `blq_sim_lo`,
        `blq_sim_median`, `blq_sim_hi`."""
        cols = {"t_lo": self.edges[:-1], "t_hi": self.edges[1:], "t_mid": self.mid, "n": self.counts}
        for j, p in enumerate(self.percentiles):
            tag = f"{p:g}"
            cols[f"obs_{tag}"] = self.observed[:, j]
            for c, what in enumerate(("lo", "median", "hi")):
                cols[f"sim_{tag}_{what}"] = self.simulated[:, j, c]
        if self.blq_observed is not None:
            cols["blq_obs"] = self.blq_observed
            for c, what in enumerate(("lo", "median", "hi")):
                cols[f"blq_sim_{what}"] = self.blq_simulated[:, c]
        return pd.DataFrame(cols, index=pd.RangeIndex(len(self.mid), name="bin"))

    def plot(self, path=None):
        """The VPC as a matplotlib `Figure` (and a PNG at `path` if given): observations, observed
        percentiles (lines) over the simulated intervals (bands); with censoring, a second panel
        of the fraction below the LLOQ."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cens = self.blq_observed is not None
        fig, axes = plt.subplots(1, 2 if cens else 1, figsize=(11 if cens else 7, 4.5), squeeze=False)
        ax = axes[0, 0]
        ax.scatter(self.times, self.values, s=8, color="0.55", alpha=0.6, label="observations", zorder=1)
        floor = -np.inf if self.lloq is None or self.pred_corr else self.lloq
        for j, p in enumerate(self.percentiles):
            central = abs(p - 50) < 1e-9
            colour = "tab:red" if central else "tab:blue"
            lo, med, hi = (np.where(self.simulated[:, j, c] > floor, self.simulated[:, j, c], np.nan) for c in range(3))
            ax.fill_between(self.mid, lo, hi, color=colour, alpha=0.25, lw=0, label=f"simulated {p:g}th ({self.ci:.0%} CI)")
            ax.plot(self.mid, med, color=colour, lw=0.8, ls=":")
            obs = np.where(self.observed[:, j] > floor, self.observed[:, j], np.nan)
            ax.plot(self.mid, obs, color=colour, lw=2 if central else 1.4, ls="-" if central else "--", label=f"observed {p:g}th")
        if self.lloq is not None:
            ax.axhline(self.lloq, color="k", lw=0.8, ls="-.", label="LLOQ")
        ax.set_xlabel("time")
        ax.set_ylabel("prediction-corrected observation" if self.pred_corr else "observation")
        ax.set_title("pcVPC" if self.pred_corr else "VPC")
        ax.legend(fontsize=7, loc="best")
        if cens:
            bx = axes[0, 1]
            bx.fill_between(self.mid, self.blq_simulated[:, 0], self.blq_simulated[:, 2], color="tab:blue", alpha=0.25, lw=0,
                            label=f"simulated ({self.ci:.0%} CI)")  # fmt: skip
            bx.plot(self.mid, self.blq_simulated[:, 1], color="tab:blue", ls=":")
            bx.plot(self.mid, self.blq_observed, color="tab:red", lw=2, marker="o", ms=3, label="observed")
            bx.set_xlabel("time")
            bx.set_ylabel("fraction below LLOQ")
            bx.set_ylim(-0.02, 1.02)
            bx.set_title("censored observations")
            bx.legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def _edges(times: np.ndarray, bins) -> np.ndarray:
    if isinstance(bins, (int, np.integer)):
        if bins < 1:
            raise ValueError(f"`bins` must be a positive number of bins or an array of edges; got {bins}.")
        edges = np.unique(np.quantile(times, np.linspace(0, 1, int(bins) + 1)))
    else:
        edges = np.asarray(bins, np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"`bins` as edges must be an increasing 1-d array of at least 2 values; got {bins!r}.")
    return edges


def _study_limits(designs, data):
    """Each observation's limit for the simulated study: an individual's own (largest) recorded
    limit where it has censored observations, else the study's smallest; None without censoring."""
    if data.censored is None or "lloq" not in designs or not np.any(np.asarray(data.censored)):
        return None
    cens = np.asarray(data.censored) & np.asarray(data.mask)
    vals = np.where(cens, np.asarray(data.values, np.float64), np.nan)
    own = np.nanmax(np.where(cens.any(1, keepdims=True), vals, -np.inf), axis=1)
    per = np.where(np.isfinite(own), own, np.nanmin(vals))
    return np.broadcast_to(per[:, None], cens.shape).copy()


def vpc(
    fit, data, key, *, model, num_replicates: int = 200, bins=10, percentiles=(5, 50, 95), ci: float = 0.95, pred_corr: bool = False
) -> VPCResult:
    """Visual predictive check of a fitted population.

    **Arguments:**

    - `fit`: the population fit (`population`, `site_values` are read; a [`MAPResult`][nlme_ppl.MAPResult]).
    - `data`: the fitted [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX key.
    - `model`: the [`IndividualModel`][nlme_ppl.models.IndividualModel] that simulates the study.
    - `num_replicates`: R, the simulated replicates of the study.
    - `bins`: a number of time bins (quantiles of the observed times, so that bins hold about
      as many observations each), or an array of bin edges.
    - `percentiles`: the percentiles compared, in percent.
    - `ci`: the width of each simulated percentile's interval over replicates.
    - `pred_corr`: prediction-corrected VPC (Bergstrand et al. 2011).

    With censored data, the simulated study censors every observation at the individual's own
    recorded limit (its largest), or, for an individual without a censored observation, at the
    smallest limit in the data (a data set records the limit only where it applied).

    **Returns:** a [`VPCResult`][nlme_ppl.diagnostics.VPCResult] (`.table()`, `.plot(path)`).
    """
    if not 0 < ci < 1:
        raise ValueError(f"`ci` must be in (0, 1); got {ci}.")
    pcts = tuple(float(p) for p in percentiles)
    if not pcts or any(not 0 <= p <= 100 for p in pcts):
        raise ValueError(f"`percentiles` must be values in [0, 100]; got {percentiles}.")
    if int(num_replicates) < 2:
        raise ValueError(f"`num_replicates` must be at least 2; got {num_replicates}.")
    k_sim, k_typ, k_mom = jax.random.split(key, 3)
    designs = model.designs_from_data(data)
    limits = _study_limits(designs, data)
    if limits is not None:
        designs = {**designs, "lloq": jnp.asarray(np.where(np.asarray(data.mask), limits, -np.inf))}
    sims = simulate_study(fit, model, data, k_sim, num_replicates=int(num_replicates), designs=designs)
    mask = np.asarray(data.mask)
    t, y = np.asarray(data.times, np.float64)[mask], np.asarray(data.values, np.float64)[mask]
    s = sims[:, mask]  # (R, n_obs)
    edges = _edges(t, bins)
    b = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, edges.size - 2)
    if pred_corr:
        typical, _ = typical_parameters(fit, data, k_typ)
        pred = np.asarray(_moments(model, jnp.asarray(typical), designs, k_mom)[0])[mask]
        positive = pred > 1e-12 * np.max(np.abs(pred))  # a predose sample predicts 0: left uncorrected
        median = np.array([np.median(pred[(b == i) & positive]) if np.any((b == i) & positive) else np.nan
                           for i in range(edges.size - 1)])  # fmt: skip
        factor = np.where(positive, median[b] / np.where(positive, pred, 1.0), 1.0)
        y, s = y * factor, s * factor
    q = ((1 - ci) / 2 * 100, 50.0, (1 + ci) / 2 * 100)
    nb = edges.size - 1
    observed, simulated = np.full((nb, len(pcts)), np.nan), np.full((nb, len(pcts), 3), np.nan)
    mid, counts = np.full(nb, np.nan), np.zeros(nb, int)
    cens = limits is not None
    blq_obs, blq_sim = (np.full(nb, np.nan), np.full((nb, 3), np.nan)) if cens else (None, None)
    obs_blq = (np.asarray(data.censored) & mask)[mask] if cens else None
    sim_blq = (sims <= limits[None])[:, mask] if cens else None
    for i in range(nb):  # a loop over time bins, not individuals
        sel = b == i
        counts[i] = int(sel.sum())
        if not counts[i]:
            continue
        mid[i] = np.median(t[sel])
        observed[i] = np.percentile(y[sel], pcts)
        simulated[i] = np.percentile(np.percentile(s[:, sel], pcts, axis=1), q, axis=1).T
        if cens:
            blq_obs[i] = obs_blq[sel].mean()
            blq_sim[i] = np.percentile(sim_blq[:, sel].mean(1), q)
    return VPCResult(
        edges=edges, mid=mid, percentiles=pcts, ci=float(ci), observed=observed, simulated=simulated, blq_observed=blq_obs,
        blq_simulated=blq_sim, lloq=float(np.min(limits)) if cens else None, times=t, values=y, counts=counts,
        pred_corr=bool(pred_corr),
    )  # fmt: skip
