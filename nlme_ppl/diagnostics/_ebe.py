"""Empirical Bayes estimates (EBEs) of the individual parameters under a fitted population.

Individual i's conditional posterior under the fitted population θ̂ is

    p(φ | y_i, θ̂) ∝ p(y_i | φ) p(φ | θ̂) = p(φ | y_i) · p(φ | θ̂) / p_train(φ) · const,

so the draws φ_ij of the estimator (or, better, of the refined exact posterior under the training
prior) reweighted by w_ij ∝ p(φ_ij | θ̂) / p_train(φ_ij) — the surrogate's own importance weights —
give its mean and SD. The mode is found by Newton's method on log p(y_i | φ) + log p(φ | θ̂) for a
tractable model.

η-shrinkage as NONMEM defines it (Savic & Karlsson 2009), per random-effect parameter p:

    sh_η(p) = 100 · (1 - SD_i(η̂_ip) / ω_p),    η̂_ip = φ̂_ip - μ_ip,

with φ̂ the conditional mode (NONMEM's EBE), μ_i the individual's population mean (covariates
included) and ω_p the fitted SD.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from jaxtyping import Float

from .._draws import draws_from_values, wants_cross_products
from .._sites import SiteReader
from ..likelihood import _evaluated, _unwrap
from ._importance import importance_diagnostics

__all__ = ["EBEResult", "ebe"]

#: Newton iterations of the conditional mode (each with a backtracking search over `_STEPS`).
_NEWTON_ITERS = 30
_STEPS = 0.5 ** jnp.arange(10.0)


class EBEResult(eqx.Module):
    """Empirical Bayes estimates of every individual under a fitted population.

    **Fields:**

    - `mean`, `sd`: `(N, k)` conditional mean and SD of φ_i given y_i and θ̂.
    - `mode`: `(N, k)` conditional mode (the EBE of NONMEM's POSTHOC step).
    - `param_names`, `ids`: the `k` parameter names and `N` individual ids.
    - `pareto_k`: `(N,)` PSIS Pareto k̂ of each individual's weights (above 0.7: unreliable).
    - `eta_shrinkage`: η-shrinkage in percent by random-effect parameter (NaN where not defined).
    - `shrinkage_note`: how the shrinkage was computed, or why it is NaN.
    - `population_mean`: `(N, k)` each individual's population mean μ_i (Gaussian populations),
      or None.
    - `fixed`: the parameters without random effect; their EBE is the fitted value, SD 0.
    - `draws`, `log_weights`: `(N, M, k)` the draws and `(N, M)` their normalised log weights.
    - `mode_method`: `"newton"` (exact likelihood) or `"best draw"` (see [`ebe`][nlme_ppl.diagnostics.ebe]).
    """

    mean: Float[np.ndarray, "individuals k"]
    sd: Float[np.ndarray, "individuals k"]
    mode: Float[np.ndarray, "individuals k"]
    param_names: tuple[str, ...] = eqx.field(static=True)
    ids: tuple[str, ...] = eqx.field(static=True)
    pareto_k: Float[np.ndarray, " individuals"]
    eta_shrinkage: dict
    shrinkage_note: str = eqx.field(static=True)
    population_mean: np.ndarray | None
    fixed: tuple[str, ...] = eqx.field(static=True)
    draws: Float[np.ndarray, "individuals draws k"]
    log_weights: Float[np.ndarray, "individuals draws"]
    mode_method: str = eqx.field(static=True)

    @property
    def eta(self) -> np.ndarray | None:
        """`(N, k)` η̂ = mode − population mean (None without a Gaussian population)."""
        return None if self.population_mean is None else self.mode - self.population_mean

    def table(self) -> pd.DataFrame:
        """One row per individual, indexed by id: `mean[p]`, `sd[p]`, `mode[p]` for each
        parameter p (and `eta[p]` with a Gaussian population), and `pareto_k`."""
        cols = {}
        for what in ("mean", "sd", "mode", "eta"):
            arr = getattr(self, what)
            if arr is not None:
                cols.update({f"{what}[{p}]": np.asarray(arr)[:, j] for j, p in enumerate(self.param_names)})
        cols["pareto_k"] = np.asarray(self.pareto_k)
        return pd.DataFrame(cols, index=pd.Index(self.ids, name="id"))

    def __repr__(self) -> str:
        sh = ", ".join(f"{p}: {v:.1f}%" for p, v in self.eta_shrinkage.items())
        return f"EBEResult({len(self.ids)} individuals, params={self.param_names}; eta-shrinkage {sh})"


def _claims(population, site_values, data, names) -> dict[str, tuple[str, ...]]:
    """Random-effect site -> the individual parameters it declares (a site named after one, or a
    vector site); `Delta` sites (no random effect) are left out."""
    reader = SiteReader(names)
    with numpyro.handlers.seed(rng_seed=0):
        tr = numpyro.handlers.trace(numpyro.handlers.substitute(population, data=site_values)).get_trace(data)
    claims = {s: c for s, msg in tr.items() if (c := reader.claim(msg)) is not None}
    return {s: c for s, c in claims.items() if not isinstance(_unwrap(tr[s]["fn"]), dist.Delta)}


def population_log_density(population, site_values: dict, data, names):
    """`phi (N, k) -> (N,)`: log p(φ_i | θ) of every individual, summed over the random-effect
    sites (a `Delta` site, a parameter without random effect, is skipped). Differentiable."""
    claims = _claims(population, site_values, data, names)
    index = {p: i for i, p in enumerate(names)}

    def log_density(phi):
        values = dict(site_values)
        for s, c in claims.items():
            cols = jnp.asarray([index[p] for p in c])
            values[s] = phi[:, cols[0]] if len(c) == 1 and s in index else phi[:, cols]
        with numpyro.handlers.seed(rng_seed=0):
            tr = numpyro.handlers.trace(numpyro.handlers.substitute(population, data=values)).get_trace(data)
        out = jnp.zeros(phi.shape[0], phi.dtype)
        for s in claims:
            out = out + jnp.broadcast_to(tr[s]["fn"].log_prob(tr[s]["value"]), out.shape)
        return out

    return log_density


def _newton(objective, x0, free):
    """Maximise the separable `objective: (N, k) -> (N,)` from `x0` by damped Newton steps in the
    coordinates `free` `(k,)` (others stay), with a per-individual backtracking search."""
    n, k = x0.shape
    grad = jax.grad(lambda x: jnp.sum(objective(x)))
    eye = jnp.eye(k)
    free = jnp.asarray(free, bool)

    def step(x, _):
        g = jnp.where(free, grad(x), 0.0)
        cols = [jax.jvp(grad, (x,), (jnp.broadcast_to(eye[j], (n, k)),))[1] for j in range(k)]
        h = -jnp.stack(cols, -1)  # (N, k, k) negative Hessian per individual
        h = jnp.where(free[:, None] & free[None, :], h, eye)
        w, v = jnp.linalg.eigh(0.5 * (h + jnp.swapaxes(h, 1, 2)))
        w = jnp.maximum(jnp.abs(w), 1e-8)
        d = jnp.einsum("nij,nj->ni", v, jnp.einsum("nji,nj->ni", v, g) / w)
        f0 = objective(x)
        trials = jax.vmap(lambda a: objective(x + a * d))(_STEPS)  # (S, N)
        trials = jnp.where(jnp.isfinite(trials), trials, -jnp.inf)
        best = jnp.argmax(trials, 0)
        better = trials[best, jnp.arange(n)] > f0
        return jnp.where(better[:, None], x + _STEPS[best][:, None] * d, x), None

    return jax.lax.scan(step, x0, None, length=_NEWTON_ITERS)[0]


def _check_fit(fit, data):
    for attr in ("population", "site_values"):
        if not hasattr(fit, attr):
            raise TypeError(f"`fit` must be a population fit with `population` and `site_values` (a MAPResult); got {type(fit).__name__}.")
    ids = getattr(fit, "ids", None)
    if ids is not None and tuple(ids) != tuple(data.ids):
        raise ValueError(
            f"the fit is of {len(ids)} individuals ({list(ids)[:3]}...) but `data` has {data.num_individuals} "
            f"({list(data.ids)[:3]}...); pass the data set that was fitted."
        )


def gaussian_means(population, site_values, data):
    """Each individual's population mean `(N, k)` for a Gaussian population (`individual_means`),
    or None for another population program."""
    if not hasattr(population, "individual_means") or "mean" not in site_values:
        return None
    return np.asarray(population.individual_means(jnp.asarray(site_values["mean"]), site_values.get("beta"), data), np.float64)


def _shrinkage(population, site_values, eta, names):
    random = tuple(getattr(population, "random", ()))
    if eta is None or "sd" not in site_values or not random:
        note = "eta-shrinkage is defined for Gaussian populations (a mean and an SD per random effect); this population has none"
        return {p: float("nan") for p in names}, note
    omega = np.asarray(site_values["sd"], np.float64)
    out = {p: float(100 * (1 - np.std(eta[:, names.index(p)], ddof=1) / omega[j])) for j, p in enumerate(random)}
    return out, "100·(1 − SD_i(η̂)/ω), η̂ = conditional mode − individual population mean, SD with N − 1"


def ebe(fit, posterior, data, key, *, num_draws: int = 1000) -> EBEResult:
    """Empirical Bayes estimates of each individual's parameters under a fitted population.

    Draws `num_draws` φ_ij from `fit.refined` (the exact posterior under the training prior,
    where the fit refined) or else from `posterior`, and weighs them by the surrogate's
    importance weights p(φ_ij | θ̂) / p_train(φ_ij) ([`log_weights`][nlme_ppl.log_weights]):
    the weighted draws are the conditional posterior p(φ | y_i, θ̂), whose mean and SD are
    returned. A parameter without random effect (a `Delta` site) is set to its fitted value:
    for a tractable model its weight is corrected exactly by p(y_i | φ, θ̂_f) / p(y_i | φ), else
    the surrogate's Gaussian kernel stands in for the point mass.

    The conditional mode maximises log p(y_i | φ) + log p(φ | θ̂) by Newton's method from the
    best-weighted draw (tractable models). For a model without a tractable likelihood it is
    the draw that maximises log q(φ | y_i) + log w_ij, the estimator's reweighted density (no
    gradient through the estimator).

    **Arguments:**

    - `fit`: the population fit (a [`MAPResult`][nlme_ppl.MAPResult]: its `population`,
      `site_values`, `refined` and `ids` are read).
    - `posterior`: the estimator the fit used (its `model` is the individual model).
    - `data`: the fitted [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX key.
    - `num_draws`: draws per individual (at least 25, for the Pareto k̂).

    **Returns:** an [`EBEResult`][nlme_ppl.diagnostics.EBEResult].
    """
    _check_fit(fit, data)
    model, population = posterior.model, fit.population
    names = tuple(model.param_names)
    params = {k: jnp.asarray(v) for k, v in fit.site_values.items()}
    source = fit.refined if getattr(fit, "refined", None) is not None else posterior
    values = jnp.asarray(source.sample(data, key, num_draws=int(num_draws)), jnp.float64)
    draws = draws_from_values(values, model, cross=wants_cross_products(population))
    handler = _evaluated(population, draws, params, (data,), {})
    log_w = handler.log_weights()
    fixed = tuple(handler.fixed)
    fidx = np.array([names.index(f) for f in fixed], int)
    if fixed:
        loc = jnp.stack([handler.fixed_loc[f] for f in fixed], -1)  # (N, F)
        moved = values.at[..., fidx].set(jnp.broadcast_to(loc[:, None, :], (*values.shape[:2], len(fixed))))
        if model.tractable:
            h = draws.bandwidth[:, fidx][:, None, :]
            kernel = jnp.sum(dist.Normal(loc[:, None, :], h).log_prob(values[..., fidx]), -1)
            loglik = _loglik(model, data)
            log_w = log_w - kernel + loglik(moved) - loglik(values)
        values = moved
    log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
    norm = log_w - jax.nn.logsumexp(log_w, axis=1, keepdims=True)
    w = jnp.exp(norm)[..., None]
    mean = jnp.sum(w * values, 1)
    sd = jnp.sqrt(jnp.sum(w * (values - mean[:, None, :]) ** 2, 1))
    khat = importance_diagnostics(np.asarray(log_w), ids=data.ids).pareto_k
    start = values[jnp.arange(values.shape[0]), jnp.argmax(log_w, 1)]
    logpop = population_log_density(population, params, data, names)
    if model.tractable:
        loglik1 = _loglik(model, data, one=True)
        mode, method = _newton(lambda x: loglik1(x) + logpop(x), start, [p not in fixed for p in names]), "newton"
    else:
        score = jnp.asarray(posterior.log_prob(data, values), jnp.float64) + log_w
        mode, method = values[jnp.arange(values.shape[0]), jnp.argmax(score, 1)], "best draw"
    mode = np.asarray(mode, np.float64)
    mu = gaussian_means(population, params, data)
    shrink, note = _shrinkage(population, params, None if mu is None else mode - mu, names)
    return EBEResult(
        mean=np.asarray(mean, np.float64), sd=np.asarray(sd, np.float64), mode=mode, param_names=names, ids=tuple(data.ids),
        pareto_k=np.asarray(khat), eta_shrinkage=shrink, shrinkage_note=note, population_mean=mu, fixed=fixed,
        draws=np.asarray(values, np.float64), log_weights=np.asarray(norm, np.float64), mode_method=method,
    )  # fmt: skip


def _loglik(model, data, *, one: bool = False):
    """log p(y_i | φ) for φ `(N, M, k)` -> `(N, M)` (or `(N, k)` -> `(N,)` with `one`)."""
    designs = model.designs_from_data(data)
    obs = jnp.asarray(data.values, jnp.float64)

    def per(phi, design, y):
        return model.log_likelihood(phi, design, y)

    if one:
        return lambda phi: jax.vmap(per)(phi, designs, obs)
    return lambda phi: jax.vmap(jax.vmap(per, (0, None, None)))(phi, designs, obs)
