"""Profile likelihoods of the population parameters, on the draws of the fit.

For a parameter ψ (one labelled entry: `mean[CL]`, `sd[CL]`, `beta[CL,WT]`), the profile is
ℓ_p(ψ) = max over the other parameters of the surrogate log-likelihood with ψ held, and the
likelihood-ratio interval at level 1 − α is {ψ : 2 (ℓ(θ̂) − ℓ_p(ψ)) ≤ χ²₁(1 − α)} (θ̂ the
maximum-likelihood estimate; the population prior is left out).

Every point of every profile is evaluated on the *same* draws φ_ij, those of the fit, so the
surrogate is a smooth, deterministic function of θ and the profiles carry no Monte Carlo
jitter (a profile on fresh draws per point would). The constrained maximisations of all points
of all parameters run together, one L-BFGS per point under `vmap`, each started at the
estimate and whitened by the Hessian there with the held coordinate removed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float, Int
from scipy.stats import chi2

from ..data import Dataset
from ._labels import flatten_params
from ._objective import Objective
from .map import objective_at_fit
from ._optimize import lbfgs, preconditioner

__all__ = ["ProfileResult", "profile", "plot_waterfall"]


class ProfileResult:
    """The profiles of a fit ([`profile`][nlme_ppl.profile]).

    **Attributes:**

    - `estimate`: the maximum-likelihood estimate by label (on the fit's draws; the MAP's
      prior left out).
    - `loglik`: the surrogate log-likelihood there (relative scale, see `MAPResult.log_likelihood`).
    - `profiles`: label -> DataFrame with one row per point: `value` (the held parameter),
      `deviance` 2 (ℓ(θ̂) − ℓ_p), `converged`.
    - `levels`: the interval levels.
    - `seconds`: wall time of the profiles (after the fit).
    - `skipped`: labels not profiled, with the reason.
    """

    def __init__(self, estimate, loglik, profiles, levels, seconds, skipped):
        self.estimate, self.loglik, self.profiles, self.levels = estimate, loglik, profiles, tuple(levels)
        self.seconds, self.skipped = seconds, skipped

    def intervals(self) -> pd.DataFrame:
        """Likelihood-ratio intervals: per label, `estimate` and `lower_<level>`, `upper_<level>`
        (percent levels, e.g. `lower_95`); ±inf where the profile does not cross the threshold
        within its span (widen `span`)."""
        rows = []
        for label, prof in self.profiles.items():
            row = {"parameter": label, "estimate": self.estimate[label]}
            for level in self.levels:
                lo, hi = _crossings(prof["value"].to_numpy(), prof["deviance"].to_numpy(), self.estimate[label], chi2.ppf(level, 1))
                row[f"lower_{round(100 * level)}"], row[f"upper_{round(100 * level)}"] = lo, hi
            rows.append(row)
        return pd.DataFrame(rows).set_index("parameter")

    table = intervals

    def plot(self, *, path=None):
        """One panel per profiled parameter: the deviance against the value, with the χ²₁
        thresholds of `levels` and the estimate. Returns the matplotlib Figure (a PNG at `path`)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = list(self.profiles)
        cols = min(4, max(1, len(labels)))
        rows = -(-len(labels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
        for ax, label in zip(axes.flat, labels):
            prof = self.profiles[label]
            ax.plot(prof["value"], prof["deviance"], "o-", ms=3, color="C0")
            for level, style in zip(self.levels, (":", "--", "-.", "-")):
                ax.axhline(chi2.ppf(level, 1), color="grey", lw=0.8, ls=style, label=f"{round(100 * level)}%")
            ax.axvline(self.estimate[label], color="C3", lw=0.8)
            ax.set_title(label, fontsize=9)
            ax.set_ylim(bottom=-0.2, top=max(6.0, min(float(prof["deviance"].max()), 12.0)))
        for ax in list(axes.flat)[len(labels) :]:
            ax.axis("off")
        axes.flat[0].set_ylabel("2 (ℓ̂ − ℓ_p)")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    def __repr__(self) -> str:
        return f"ProfileResult({len(self.profiles)} parameters, {self.seconds:.1f} s)\n{self.intervals()}"


def _crossings(values, deviance, estimate, threshold) -> tuple[float, float]:
    """Where the deviance crosses `threshold` on each side of the estimate (linear interpolation)."""
    out = []
    for side in (-1, 1):
        sel = (values - estimate) * side >= 0
        v, d = values[sel], deviance[sel]
        order = np.argsort(np.abs(v - estimate))
        v, d = v[order], d[order]
        above = np.flatnonzero(d > threshold)
        if above.size == 0 or above[0] == 0:
            out.append(side * np.inf if above.size == 0 else float(v[0]))
            continue
        j = above[0]
        out.append(float(v[j - 1] + (threshold - d[j - 1]) * (v[j] - v[j - 1]) / (d[j] - d[j - 1])))
    return out[0], out[1]


@eqx.filter_jit
def _held_minimise(lik: Objective, z_hat, hess, coords: Int[Array, " b"], held: Float[Array, " b"], draws, data, max_iter: int, tol: float):
    """Minimise `lik` with coordinate `coords[b]` held at `held[b]`, for every b under `vmap`."""
    d = z_hat.shape[0]

    cov = jnp.linalg.pinv(hess)

    def one(c, v):
        e = jax.nn.one_hot(c, d, dtype=z_hat.dtype)
        keep = 1.0 - e
        h = hess * keep[:, None] * keep[None, :] + jnp.diag(e)
        precond = preconditioner(h) * keep[:, None]
        # start at the conditional optimum of the quadratic approximation at the estimate (the
        # Wald profile path): the other coordinates follow the held one by cov[:, c] / cov[c, c]
        base = z_hat + cov[:, c] / cov[c, c] * (v - z_hat[c])

        def f(w):
            return lik(base + precond @ w, draws, data)

        w, value, converged, _ = lbfgs(f, jnp.zeros(d, z_hat.dtype), max_iter=max_iter, tol=tol)
        return base + precond @ w, value, converged

    return jax.vmap(one)(coords, held)


def profile(
    fit,
    data: Dataset,
    *,
    params: Sequence[str] | None = None,
    levels: Sequence[float] = (0.8, 0.9, 0.95),
    num_points: int = 15,
    span: float = 4.0,
    max_iter: int = 300,
    tol: float = 1e-7,
) -> ProfileResult:
    """Profile likelihoods of a fit's population parameters, with likelihood-ratio intervals.

    **Arguments:**

    - `fit`: a [`MAPResult`][nlme_ppl.MAPResult] (it carries its draws; the profiles re-use them).
    - `data`: the [`Dataset`][nlme_ppl.Dataset] it was fitted to.
    - `params`: labels to profile (default: every `mean`, `sd` and `beta` entry; correlations
      are not profiled).
    - `levels`: interval levels.
    - `num_points`: points per profile, evenly spaced in the unconstrained coordinate over
      ±`span` standard errors (from the Hessian at the estimate) around it.
    - `max_iter`, `tol`: the L-BFGS of each point.

    **Returns:** a [`ProfileResult`][nlme_ppl.inference.ProfileResult] (`.intervals()`, `.plot()`).
    """
    if getattr(fit, "draws", None) is None:
        raise ValueError("this fit does not carry its draws (MAPResult.draws); refit it with nlp.fit_map.")
    if num_points < 3:
        raise ValueError(f"num_points must be at least 3; got {num_points}.")
    t0 = time.perf_counter()
    population, draws = fit.population, fit.draws
    objective, postprocess, z_map = objective_at_fit(fit, data)
    lik = objective.likelihood()
    # the maximum-likelihood point, from the MAP
    hess = lik.hessian(z_map, draws, data)
    z_hat, value, _, _ = lik.minimise(z_map[None], preconditioner(hess), draws, data, max_iter, tol)
    z_hat, value = z_hat[0], float(value[0])
    hess = lik.hessian(z_hat, draws, data)

    def flat(z):
        return flatten_params(population, postprocess(objective.unravel(z)))

    labels = list(flat(z_hat))
    estimate = {k: float(v) for k, v in flat(z_hat).items()}
    jac = np.asarray(jax.jacfwd(lambda z: jnp.stack(list(flat(z).values())))(z_hat))
    wanted = [lab for lab in labels if not lab.startswith("corr")] if params is None else list(params)
    unknown = sorted(set(wanted) - set(labels))
    if unknown:
        raise ValueError(f"cannot profile {unknown}: the fit's parameters are {labels}.")
    skipped, coord = {}, {}
    for lab in wanted:
        nz = np.flatnonzero(np.abs(jac[labels.index(lab)]) > 1e-12)
        if nz.size != 1:
            skipped[lab] = "depends on several unconstrained coordinates (a correlation); not profiled"
        else:
            coord[lab] = int(nz[0])
    cov = np.linalg.pinv(np.asarray(hess))
    grid = np.linspace(-span, span, num_points)
    cs, held, owner = [], [], []
    for lab, c in coord.items():
        se = float(np.sqrt(max(cov[c, c], 1e-12)))
        cs.extend([c] * num_points)
        held.extend(float(z_hat[c]) + grid * se)
        owner.extend([lab] * num_points)
    z_opt, vals, conv = _held_minimise(lik, z_hat, hess, jnp.asarray(cs, int), jnp.asarray(held), draws, data, int(max_iter), float(tol))
    at = jax.vmap(lambda z: jnp.stack(list(flat(z).values())))(z_opt)
    at, vals, conv = (np.asarray(x) for x in (at, vals, conv))
    profiles = {}
    for lab in coord:
        sel = np.asarray(owner) == lab
        dev = np.maximum(2.0 * (vals[sel] - value), 0.0)
        profiles[lab] = pd.DataFrame({"value": at[sel, labels.index(lab)], "deviance": dev, "converged": conv[sel]})
    return ProfileResult(estimate, -value, profiles, levels, time.perf_counter() - t0, skipped)


def plot_waterfall(fit, *, path=None):
    """The multi-start waterfall: each start's final objective (negative log posterior) relative
    to the best, sorted, with the rescored starts marked. A flat first step across several starts
    says the optimum was found more than once. Returns the matplotlib Figure (a PNG at `path`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(fit.losses, float)
    order = np.argsort(losses)
    rel = losses[order] - np.nanmin(losses)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ok = np.isfinite(rel)
    ax.plot(np.arange(1, ok.sum() + 1), rel[ok], "o-", color="C0", label="final objective")
    conv = np.asarray(fit.converged)[order][ok]
    ax.plot(np.arange(1, ok.sum() + 1)[~conv], rel[ok][~conv], "x", color="C3", ms=9, label="not converged")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(-0.02, max(1.0, 1.5 * float(np.max(rel[ok], initial=0.0))))  # starts that all agree: a flat line at 0
    ax.set_xlabel("start (sorted)")
    ax.set_ylabel("objective − best")
    ax.set_title(f"{len(losses)} starts; {int(np.sum(rel[ok] < 0.1))} within 0.1 of the best", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
