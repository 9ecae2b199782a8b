"""Maximum a posteriori population estimates: optax L-BFGS, multi-start under `vmap`."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pandas as pd
from jax.flatten_util import ravel_pytree
from numpyro.infer import Predictive
from numpyro.infer.util import constrain_fn, initialize_model, log_density, log_likelihood, unconstrain_fn

from .._validate import check_keys, positive_int
from ..likelihood import SurrogateDraws, amortize, prepare_draws, wants_cross_products
from ._labels import flatten_params

__all__ = ["MAPResult", "check_outliers", "fit_map"]


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

    def table(self, truth: dict[str, float] | None = None) -> pd.DataFrame:
        """Estimates with standard errors, back-transformed values and CV%.

        `value` is exp(estimate) for `mean[...]` rows (the median on the natural scale of a
        log-scale parameter); `cv_percent` is 100·sqrt(exp(sd²) - 1) for `sd[...]` rows.
        With `truth` (by label), adds `truth` and `error` columns.
        """
        return parameter_table(self.params, self.stderr, truth)

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
        if self.outliers is not None:
            out["summary_outlier_ids"] = list(self.outliers.bad(2.0))
        if self.fixed_widths:
            out["fixed_posterior_over_prior_sd"] = dict(self.fixed_widths)
        return out

    def to_arviz(self, data=None):
        """The estimate as an ArviZ DataTree with one chain of one draw (plus log-likelihood)."""
        from ..io.arviz import to_datatree

        posterior = {k: np.asarray(v)[None, None] for k, v in self.site_values.items()}
        loglik = np.asarray(self.pointwise)[None, None]
        return to_datatree(self.population, posterior, loglik, ids=self.ids, data=data)

    def __repr__(self) -> str:
        return f"MAPResult(best start {self.best}, converged={bool(self.converged[self.best])}, loglik={self.log_likelihood:.3f})\n{self.table()}"


def parameter_table(params: dict, stderr: dict | None = None, truth: dict | None = None) -> pd.DataFrame:
    rows = []
    for label, est in params.items():
        row = {"parameter": label, "estimate": est}
        if stderr is not None:
            se = stderr.get(label, np.nan)
            row["se"] = se
            row["rse_percent"] = 100 * abs(se / est) if est != 0 else np.nan
        row["value"] = math.exp(est) if label.startswith("mean[") else np.nan
        row["cv_percent"] = 100 * math.sqrt(math.expm1(est**2)) if label.startswith("sd[") else np.nan
        if truth is not None:
            row["truth"] = truth.get(label, np.nan)
            row["error"] = est - row["truth"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("parameter")


_init_values = eqx.filter_jit(lambda population, values: population.init_values(values))


def _starts(population, data, draws: SurrogateDraws, key, num_starts: int, jitter: float, template, site, *, probe=None):
    """Unconstrained starting points `(num_starts, d)`. `probe`: the `(draws, data)` on which to
    run the program for its transforms (see `_probe`); default `draws` and `data`."""
    probe_draws, probe_data = (draws, data) if probe is None else probe
    surrogate = amortize(population, probe_draws, site=site)
    if hasattr(population, "init_values"):
        base = _init_values(population, draws.values)
        z0, _ = ravel_pytree(unconstrain_fn(surrogate, (probe_data,), {}, base))
        noise = jitter * jax.random.normal(key, (num_starts, z0.shape[0]))
        return z0 + noise.at[0].set(0.0)
    samples = Predictive(surrogate, num_samples=num_starts, return_sites=list(template))(key, probe_data)
    return jax.vmap(lambda p: ravel_pytree(unconstrain_fn(surrogate, (probe_data,), {}, p))[0])(samples)


def _site_shapes(population, draws, data, site) -> dict:
    """Shapes of the surrogate's own sites (population parameters, deterministic sites), by name."""
    tr = numpyro.handlers.trace(numpyro.handlers.seed(amortize(population, draws, site=site), 0)).get_trace(data)
    return {k: (m["type"], jnp.shape(m["value"])) for k, m in tr.items() if m["type"] in ("sample", "deterministic") and k != site}


def _probe(population, draws: SurrogateDraws, data, site):
    """The `(draws, data)` on which to inspect the surrogate program (its sites, transforms and
    postprocessing), which NumPyro does eagerly, op by op.

    Population sites usually do not depend on the number of individuals (the individual sites
    are intercepted), so one draw of one individual suffices; at N = 10,000 that cut the eager
    inspection (template and starts) by about a quarter here. That is checked by comparing the
    site shapes with 1 and 2 individuals. A program whose sites depend on the individuals, or
    with deterministic sites (whose values may depend on the data), is inspected on all
    individuals (one draw each)."""
    light = draws.subset(draws=slice(0, 1))
    if data.num_individuals < 2:
        return light, data
    small = [(light.subset(i), data.subset(i)) for i in (slice(0, 1), slice(0, 2))]
    shapes = [_site_shapes(population, *probe, site) for probe in small]
    if shapes[0] == shapes[1] and not any(kind == "deterministic" for kind, _ in shapes[0].values()):
        return small[0]
    return light, data


def _preconditioner(hess):
    """P with P Pᵀ = |H|⁻¹ (eigenvalues made positive and floored at 1e-8 of the largest), so
    that L-BFGS runs in coordinates where the start's curvature is the identity. The
    population parameters' curvatures span many orders of magnitude (a mean is pinned by N
    individuals, a fixed effect by N narrow kernels); without this L-BFGS needs ~3x the
    iterations. Falls back to the identity when the Hessian is not finite."""
    h = 0.5 * (hess + hess.T)
    ok = jnp.all(jnp.isfinite(h))
    lam, vec = jnp.linalg.eigh(jnp.where(ok, h, jnp.eye(h.shape[0])))
    lam = jnp.abs(lam)
    lam = jnp.maximum(lam, 1e-8 * jnp.max(lam))
    return jnp.where(ok & (jnp.max(lam) > 0), vec / jnp.sqrt(lam), jnp.eye(h.shape[0]))


def _lbfgs(value_fn, z0, *, max_iter: int, tol: float):
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(value_fn)

    def step(carry):
        z, state, i = carry
        value, grad = value_and_grad(z, state=state)
        updates, state = opt.update(grad, state, z, value=value, grad=grad, value_fn=value_fn)
        return optax.apply_updates(z, updates), state, i + 1

    def keep_going(carry):
        _, state, i = carry
        grad = optax.tree.get(state, "grad")
        value = optax.tree.get(state, "value")
        done = optax.tree.norm(grad) <= tol * (1.0 + jnp.abs(value))
        return (i == 0) | ((i < max_iter) & ~done & jnp.isfinite(value))

    z, state, iters = jax.lax.while_loop(keep_going, step, (z0, opt.init(z0), 0))
    value, grad = jax.value_and_grad(value_fn)(z)
    converged = jnp.linalg.norm(grad) <= tol * (1.0 + jnp.abs(value))
    return z, value, converged, iters


def _neg_log_post(population, site, draws, data, template, z):
    """Negative log posterior of the surrogate *without* the change-of-variables Jacobian, so
    that its optimum is the mode in the model's own parametrisation."""
    surrogate = amortize(population, draws, site=site)
    params = constrain_fn(surrogate, (data,), {}, ravel_pytree(template)[1](z))
    return -log_density(surrogate, (data,), {}, params)[0]


# Module-level and jitted with the draws and data as *inputs*: the compiled programs are
# cached across calls (same population, shapes and options) and never embed the N·M·k draws.
@eqx.filter_jit
def _run_lbfgs(population, site, draws, data, template, z0, precond, max_iter, tol):
    value_fn = lambda z: _neg_log_post(population, site, draws, data, template, z)  # noqa: E731

    def run(z):
        u, value, converged, iters = _lbfgs(lambda u: value_fn(z + precond @ u), jnp.zeros_like(z), max_iter=max_iter, tol=tol)
        return z + precond @ u, value, converged, iters

    return jax.vmap(run)(z0)


@eqx.filter_jit
def _values(population, site, draws, data, template, zs):
    return jax.vmap(lambda z: _neg_log_post(population, site, draws, data, template, z))(zs)


@eqx.filter_jit
def _hessian(population, site, draws, data, template, z):
    return jax.hessian(lambda zz: _neg_log_post(population, site, draws, data, template, zz))(z)


def _start_hessian(population, site, draws, data, template, z, *, max_individuals: int = 1000):
    """The Hessian at the start, for the preconditioner only: on an evenly spaced subset of at
    most `max_individuals` individuals, scaled by N / n (the likelihood's curvature is a sum
    over individuals), which is accurate enough for whitening and 10x cheaper at N = 10,000."""
    n = draws.num_individuals
    if n <= max_individuals:
        return _hessian(population, site, draws, data, template, z)
    idx = np.linspace(0, n - 1, max_individuals).round().astype(int)
    return _hessian(population, site, draws.subset(idx), data.subset(idx), template, z) * (n / max_individuals)


def _template(population, draws, data, key, site):
    info = initialize_model(key, amortize(population, draws, site=site), model_args=(data,), dynamic_args=False)
    return info.param_info.z, info.postprocess_fn


def fit_map_draws(population, draws: SurrogateDraws, data, key, *, num_starts=10, max_iter=500, tol=1e-8, jitter=0.5, fresh_draws: SurrogateDraws | None = None, num_rescore=3, site="obs", diagnose=False):
    """[`fit_map`][nlme_ppl.fit_map] on draws already taken (used by `fit_nuts` too)."""
    check_keys(key)
    num_starts = positive_int(num_starts, name="num_starts")
    k_init, k_start = jax.random.split(key)
    # Site shapes do not depend on the number of draws (nor, usually, individuals): inspect the
    # program on a small probe.
    probe = _probe(population, draws, data, site)
    template, postprocess = _template(population, *probe, k_init, site)
    _, unravel = ravel_pytree(template)
    z0 = _starts(population, data, draws, k_start, num_starts, jitter, template, site, probe=probe)
    precond = _preconditioner(_start_hessian(population, site, draws, data, template, z0[0]))
    zs, losses, converged, iters = jax.device_get(_run_lbfgs(population, site, draws, data, template, z0, precond, int(max_iter), float(tol)))
    losses = np.where(np.isfinite(losses), losses, np.inf)
    order = np.argsort(losses)
    rescored = np.full(num_starts, np.nan)
    best = int(order[0])
    if fresh_draws is not None and num_starts > 1:
        cand = order[: min(num_rescore, num_starts)]
        cand = cand[np.isfinite(losses[cand])]
        rescored[cand] = jax.device_get(_values(population, site, fresh_draws, data, template, jnp.asarray(zs[cand])))
        best = int(cand[np.argmin(rescored[cand])])
    z = jnp.asarray(zs[best])
    site_values = {k: np.asarray(v) for k, v in postprocess(unravel(z)).items()}
    flat = lambda zz: jnp.stack(list(flatten_params(population, postprocess(unravel(zz))).values()))  # noqa: E731
    labels = list(flatten_params(population, site_values))
    stderr = _stderr(np.asarray(_hessian(population, site, draws, data, template, z)), flat, z, labels)
    surrogate = amortize(population, draws, site=site)
    pointwise = log_likelihood(surrogate, site_values, data, batch_ndims=0)[site]
    importance = None
    if diagnose:
        from ..diagnostics import importance_from_fit

        importance = importance_from_fit(population, draws, site_values, data)
        importance.warn(stacklevel=4)
    return MAPResult(
        params={k: float(v) for k, v in flatten_params(population, site_values).items()},
        stderr=stderr,
        site_values=site_values,
        losses=losses,
        rescored=rescored,
        converged=np.asarray(converged),
        iterations=np.asarray(iters),
        best=best,
        log_likelihood=float(jnp.sum(pointwise)),
        pointwise=np.asarray(pointwise),
        ids=tuple(data.ids),
        population=population,
        importance=importance,
    )


def _stderr(hess, flat, z, labels) -> dict[str, float]:
    try:
        chol = np.linalg.cholesky(hess)
    except np.linalg.LinAlgError:
        return {k: float("nan") for k in labels}
    cov_z = np.linalg.inv(chol).T @ np.linalg.inv(chol)
    jac = np.asarray(jax.jacfwd(flat)(z))
    var = np.einsum("ij,jk,ik->i", jac, cov_z, jac)
    return {k: float(np.sqrt(v)) for k, v in zip(labels, var)}


def fit_map(population, posterior, data, key, *, num_draws: int = 100, num_starts: int = 10, max_iter: int = 500, tol: float = 1e-8, jitter: float = 0.5, num_rescore: int = 3, diagnose: bool = True) -> MAPResult:
    """Maximum a posteriori population parameters under the amortized surrogate.

    Draws `num_draws` φ_ij ~ q(φ | y_i) per individual, then runs optax L-BFGS (zoom line
    search) on the unconstrained negative log posterior from `num_starts` starting points in
    parallel (`vmap`). Starts come from `population.init_values(draws)` when the population
    has it (the built-in ones do: medians of the individual draws), jittered by `jitter` in
    unconstrained space, else from the population prior. The `num_rescore` best starts are
    re-scored on fresh draws, and the best of those is returned.

    L-BFGS runs in coordinates whitened by the Hessian at the first start (its eigenvalues made
    positive), so that means, SDs and fixed effects, whose curvatures differ by orders of
    magnitude, converge together. A start has converged when the gradient in those
    coordinates (about the Newton decrement) has norm ≤ `tol`·(1 + |f|) within `max_iter`
    iterations.

    With `diagnose=True` (default) the result carries two checks of the surrogate, and each
    warns with a [`SurrogateWarning`][nlme_ppl.diagnostics.SurrogateWarning] naming the
    individuals concerned: `importance` (PSIS Pareto k > 0.7 of an individual's importance
    weights at the estimate: more draws or a better estimator are needed there) and
    `outliers` (data far outside the training simulations in summary space; only for
    estimators with `summaries`). They cost a few seconds at N = 10,000. A third,
    `fixed_widths`, warns when a parameter without random effect has individual posteriors that
    barely narrow the training prior (median SD ratio above 0.8): its estimate then magnifies
    small errors of the estimator (see [Diagnostics](guide/diagnostics.md#parameters-without-random-effect)).

    **Arguments:**

    - `population`: a NumPyro program `population(data)` (e.g. `nlp.populations.gaussian(model)`).
    - `posterior`: an estimator with `.sample(data, key, num_draws=...)` and `.model`.
    - `data`: a [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX random key.

    **Returns:** a [`MAPResult`][nlme_ppl.inference.map.MAPResult].
    """
    check_keys(key)
    num_draws = positive_int(num_draws, name="num_draws")
    k_draws, k_fresh, k_fit = jax.random.split(key, 3)
    cross = wants_cross_products(population)
    draws = prepare_draws(posterior, data, k_draws, num_draws=num_draws, cross=cross)
    fresh = prepare_draws(posterior, data, k_fresh, num_draws=num_draws, cross=cross) if num_starts > 1 else None
    fit = fit_map_draws(population, draws, data, k_fit, num_starts=num_starts, max_iter=max_iter, tol=tol, jitter=jitter, fresh_draws=fresh, num_rescore=num_rescore, diagnose=diagnose)
    if diagnose:
        fit = eqx.tree_at(lambda f: f.outliers, fit, check_outliers(posterior, data, k_draws), is_leaf=lambda x: x is None)
        fit = eqx.tree_at(lambda f: f.fixed_widths, fit, check_fixed(population, posterior, draws, fit.site_values, data), is_leaf=lambda x: x is None)
    return fit


def check_fixed(population, posterior, draws, params, data, *, stacklevel: int = 4) -> dict[str, float]:
    """The weak-fixed-parameter check used by `fit_map` and `fit_nuts`: posterior/prior SD ratios
    of the parameters without random effect, warning where one exceeds 0.8."""
    from ..diagnostics._fixed import fixed_parameter_widths, warn_weak_fixed

    widths = fixed_parameter_widths(population, draws, params, data, posterior.model)
    warn_weak_fixed(widths, stacklevel=stacklevel)
    return widths


def check_outliers(posterior, data, key, *, stacklevel: int = 4):
    """The summary-space outlier check used by `fit_map` and `fit_nuts` (None for estimators
    without `summaries`), warning for individuals beyond twice the farthest reference."""
    if not hasattr(posterior, "summaries"):
        return None
    from ..diagnostics import summary_outliers

    out = summary_outliers(posterior, data, jax.random.fold_in(key, 1))
    out.warn(margin=2.0, stacklevel=stacklevel)
    return out
