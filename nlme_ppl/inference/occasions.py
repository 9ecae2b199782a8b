"""Inter-occasion variability: the population likelihood when the rows of the data are
occasions of individuals, with the same estimator applied per occasion.

Rows u are occasions, each a conditionally independent unit of the individual model with
its own posterior q(φ | y_u) (the estimator, refined where the likelihood is tractable).
Individual i has the parameter vector ψ_i ~ N(μ_i, Ω) (μ_i shifted by its covariates;
parameters without random effect sit at μ_i), and its occasion u has φ_u = ψ_i + (κ_u on the
IOV parameters O), κ_u ~ N(0, Γ). The parameters S without IOV are shared by the occasions,
so the occasions' independent draws never agree on them: a point mass that the draws-based
surrogate of `fit_map` cannot weigh. Instead, split φ = (s, o) and, for each occasion,

    p(y_u | s, IOV around o_i) / p_train(y_u) = ∫ q(s, o | y_u) N(o; o_i, Γ) / π(s, o) do
                                              ≈ (1/M) Σ_j N(s; a_u + B_u o_uj, C_u) N(o_uj; o_i, Γ) / π(s, o_uj),

with o_uj the O-part of the occasion's draws (its marginal posterior, non-Gaussian as it is)
and N(s; a + B o, C) the Gaussian conditional of s given o fitted to the same draws (exact for
a Gaussian posterior; no kernel bandwidth). π is the training prior, a product over
parameters. The individual's integral over ψ_i is then taken by importance sampling: L points
per individual, the same points at every evaluation, so that the objective is smooth in the
population parameters and L-BFGS finds its maximum. The first points come from a defensive
mixture (the individual's occasions' draws pooled and widened, and the population's spread of
them); after each fit they are drawn again around each individual's Laplace approximation at
the estimate, and the fit is redone:

    log p(y_i | θ) ≈ log (1/L) Σ_l N(ψ_il; μ_i, Ω) Π_u p̂(y_u | ψ_il) / r_i(ψ_il).

The log-likelihood is relative to the training prior's marginal likelihood of each occasion,
as `fit_map`'s. The Pareto k̂ and effective sample size of each individual's outer weights
are reported.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int
from numpyro.distributions.transforms import biject_to

from .._validate import check_keys
from ..data import Dataset, subject_index
from ..diagnostics import importance_diagnostics
from ._labels import flatten_params
from ._optimize import lbfgs
from ._result import MAPResult
from ._uncertainty import label_covariances

__all__ = ["OccasionTerms", "fit_occasions", "occasion_terms"]

_LOG2PI = math.log(2 * math.pi)


class OccasionTerms(eqx.Module):
    """What the IOV likelihood needs of the occasions' draws, computed once per data set.

    - `o_draws` `(N, M, o)`: the IOV parameters' draws; `log_prior_o` `(N, M)` their training prior.
    - `a` `(N, s)`, `WB` `(N, s, o)`, `W` `(N, s, s)`, `log_det_c` `(N,)`: the Gaussian conditional
      N(s; a + B o, C) of the shared parameters given the IOV ones, with W = chol(C)⁻¹.
    - `index` `(N,)`: each occasion's individual; `first` `(S,)`: each individual's first occasion.
    - `points` `(S, L, r)`: the importance points of each individual's random effects;
      `log_proposal` `(S, L)`: their proposal density.
    """

    o_draws: Float[Array, "units draws o"]
    log_prior_o: Float[Array, "units draws"]
    a: Float[Array, "units s"]
    WB: Float[Array, "units s o"]
    W: Float[Array, "units s s"]
    log_det_c: Float[Array, " units"]
    index: Int[Array, " units"]
    first: Int[Array, " subjects"]
    points: Float[Array, "subjects points r"]
    log_proposal: Float[Array, "subjects points"]
    shared: tuple[int, ...] = eqx.field(static=True)
    iov: tuple[int, ...] = eqx.field(static=True)
    random: tuple[int, ...] = eqx.field(static=True)


def _prior_parts(model, names):
    prior = getattr(model, "prior", {}) or {}
    missing = [n for n in names if n not in prior]
    if missing:
        raise ValueError(
            f"inter-occasion variability needs the training prior of each parameter separately (model.prior), and "
            f"model {model.name!r} has none for {missing}."
        )
    return [prior[n] for n in names]


def _log_prior(parts, x):
    """Σ_p log π_p(x[..., p]) over the parameters of `parts`."""
    if not parts:
        return jnp.zeros(x.shape[:-1])
    return sum(d.log_prob(x[..., p]) for p, d in enumerate(parts))


def occasion_terms(population, values: Float[Array, "units draws k"], data: Dataset, model, key, *, num_points: int = 256) -> OccasionTerms:
    """[`OccasionTerms`][nlme_ppl.inference.OccasionTerms] from the occasions' draws `values`."""
    names = population.param_names
    iov = tuple(names.index(n) for n in population.occasions)
    shared = tuple(j for j in range(len(names)) if j not in iov)
    random = tuple(names.index(n) for n in population.random)
    values = jnp.asarray(values, jnp.float64)
    n, m, _ = values.shape
    s_idx, o_idx = np.array(shared, int), np.array(iov, int)
    centre = values.mean(axis=1)
    dev = values - centre[:, None]
    cov = jnp.einsum("umi,umj->uij", dev, dev) / (m - 1)
    vss, vso, voo = cov[:, s_idx][:, :, s_idx], cov[:, s_idx][:, :, o_idx], cov[:, o_idx][:, :, o_idx]
    B = jnp.linalg.solve(voo, jnp.swapaxes(vso, 1, 2)).swapaxes(1, 2) if iov else jnp.zeros((n, len(shared), 0))
    C = vss - B @ jnp.swapaxes(vso, 1, 2)
    chol = jnp.linalg.cholesky(C + 1e-12 * jnp.eye(len(shared)))
    if not bool(jnp.all(jnp.isfinite(chol))):
        bad = int(np.flatnonzero(~np.all(np.isfinite(np.asarray(chol)), axis=(1, 2)))[0])
        raise ValueError(f"the draws of occasion {data.ids[bad]!r} are degenerate in the parameters without IOV; draw more (num_draws).")
    W = jnp.linalg.inv(chol)
    a = centre[:, s_idx] - jnp.einsum("usO,uO->us", B, centre[:, o_idx])
    o_parts = _prior_parts(model, [names[j] for j in iov])
    index, subjects = subject_index(data)
    points, log_r = _proposal(values[:, :, np.array(random, int)], index, len(subjects), key, num_points)
    return OccasionTerms(
        values[:, :, o_idx], _log_prior(o_parts, values[:, :, o_idx]), a, W @ B, W,
        2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=-1), jnp.asarray(index),
        jnp.asarray(np.unique(index, return_index=True)[1]), points, log_r,
        shared, iov, random,
    )


def _proposal(values, index, num_subjects: int, key, num_points: int):
    """Each individual's first importance points: a defensive mixture of its occasions' pooled
    draws (covariance ×2.25, weight 0.6) and the population's spread of the individuals' means
    (covariance ×2.25, weight 0.4)."""
    n, m, r = values.shape
    if r == 0:
        return jnp.zeros((num_subjects, num_points, 0)), jnp.zeros((num_subjects, num_points))
    idx = jnp.asarray(index)
    count = jax.ops.segment_sum(jnp.ones(n), idx, num_subjects)
    pooled_mean = jax.ops.segment_sum(values.sum(axis=1), idx, num_subjects) / (count * m)[:, None]
    dev = values - pooled_mean[idx][:, None]
    pooled_cov = jax.ops.segment_sum(jnp.einsum("umi,umj->uij", dev, dev), idx, num_subjects) / (count * m - 1)[:, None, None]
    grand = pooled_mean.mean(axis=0)
    spread = jnp.cov(pooled_mean.T).reshape(r, r) if num_subjects > 1 else jnp.zeros((r, r))
    wide = jnp.broadcast_to(spread + pooled_cov.mean(axis=0), pooled_cov.shape)
    return _mixture(key, num_points, [(0.6, pooled_mean, 2.25 * pooled_cov), (0.4, jnp.broadcast_to(grand, pooled_mean.shape), 2.25 * wide)])


def _mixture(key, num_points: int, components) -> tuple[Float[Array, "subjects points r"], Float[Array, "subjects points"]]:
    """Stratified points of a per-individual Gaussian mixture `[(weight, (S, r) means, (S, r, r) covariances)]`
    (each component gets its weight's share of the points) and the mixture's log density at them."""
    points, chols, start = [], [], 0
    keys = jax.random.split(key, len(components))
    for c, (w, mean, cov) in enumerate(components):
        count = num_points - start if c == len(components) - 1 else int(round(w * num_points))
        chol = jnp.linalg.cholesky(cov + 1e-9 * jnp.eye(cov.shape[-1]))
        z = jax.random.normal(keys[c], mean.shape[:1] + (count, mean.shape[-1]))
        points.append(mean[:, None] + jnp.einsum("sij,slj->sli", chol, z))
        chols.append(chol)
        start += count
    points = jnp.concatenate(points, axis=1)
    parts = [math.log(w) + dist.MultivariateNormal(mean[:, None], scale_tril=chol[:, None]).log_prob(points)
             for (w, mean, _), chol in zip(components, chols)]
    return points, jax.nn.logsumexp(jnp.stack(parts), axis=0)


def _adapted(population, model, terms: OccasionTerms, site_values: dict, data: Dataset, key, *, newton_steps: int = 20) -> OccasionTerms:
    """New importance points at population parameters `site_values`, from each individual's
    Laplace approximation of its conditional posterior of ψ: Newton steps (eigenvalues of the
    Hessian made negative, steps capped at 1 on the log scale) from its best current point, then
    a mixture of N(mode, 1.5² H⁻¹) (weight 0.5), N(mode, 3² H⁻¹) (0.3) and the population
    distribution N(μ_i, 1.5 Ω) (0.2, defensive)."""
    r = terms.points.shape[-1]
    if r == 0:
        return terms
    loc_random, omega = _population_normal(population, terms, site_values, data)

    def total(psi):  # (S, r) -> scalar; separable across individuals, so its Hessian is block diagonal
        return jnp.sum(_log_density(population, model, terms, site_values, data, psi[:, None]))

    grad = jax.grad(total)

    def blocks(psi):  # each individual's (r, r) Hessian block, by r Hessian-vector products
        cols = [jax.jvp(grad, (psi,), (jnp.zeros_like(psi).at[:, c].set(1.0),))[1] for c in range(r)]
        return jnp.stack(cols, axis=-1)

    def negative(h):  # eigenvalues at most -1e-6 of the largest magnitude, so that -H is a precision
        lam, vec = jnp.linalg.eigh(0.5 * (h + jnp.swapaxes(h, -1, -2)))
        floor = 1e-6 * jnp.max(jnp.abs(lam), axis=-1, keepdims=True) + 1e-9
        return vec, jnp.minimum(lam, -floor)

    def step(_, psi):
        vec, lam = negative(blocks(psi))
        delta = -jnp.einsum("sij,sj,skj,sk->si", vec, 1.0 / lam, vec, grad(psi))
        norm = jnp.linalg.norm(delta, axis=-1, keepdims=True)
        return psi + delta * jnp.minimum(1.0, 1.0 / jnp.maximum(norm, 1e-12))

    lw = _log_weights(population, model, terms, site_values, data)
    start = jnp.take_along_axis(terms.points, jnp.argmax(lw, axis=1)[:, None, None], axis=1)[:, 0]
    mode = jax.lax.fori_loop(0, newton_steps, step, start)
    vec, lam = negative(blocks(mode))
    cov = jnp.einsum("sij,sj,skj->sik", vec, -1.0 / lam, vec)
    omega = jnp.broadcast_to(omega, cov.shape)
    points, log_r = _mixture(key, terms.points.shape[1], [(0.5, mode, 2.25 * cov), (0.3, mode, 9.0 * cov), (0.2, loc_random, 1.5 * omega)])
    return eqx.tree_at(lambda t: (t.points, t.log_proposal), terms, (points, log_r))


def _log_weights(population, model, terms: OccasionTerms, site_values: dict, data: Dataset) -> Float[Array, "subjects points"]:
    """log N(ψ_il; μ_i, Ω) + Σ_u log p̂(y_u | ψ_il) − log r_i(ψ_il) for every individual and point."""
    return _log_density(population, model, terms, site_values, data, terms.points) - terms.log_proposal


def _log_density(population, model, terms: OccasionTerms, site_values: dict, data: Dataset, points) -> Float[Array, "subjects points"]:
    """log N(ψ; μ_i, Ω) + Σ_u log p̂(y_u | ψ) at each individual's `points` `(S, P, r)` of its random effects."""
    names = population.param_names
    shared, iov, random = (np.array(t, int) for t in (terms.shared, terms.iov, terms.random))
    num_subjects = points.shape[0]
    loc = _subject_means(population, site_values, data, terms)
    psi = jnp.broadcast_to(loc[:, None], points.shape[:2] + (len(names),))
    psi = psi.at[:, :, random].set(points) if random.size else psi
    x = psi[terms.index]  # (N, L, k)
    xs, xo = x[:, :, shared], x[:, :, iov]
    zx = jnp.einsum("uij,ulj->uli", terms.W, xs - terms.a[:, None])  # (N, L, s)
    zj = jnp.einsum("uiO,umO->umi", terms.WB, terms.o_draws)  # (N, M, s)
    quad = jnp.sum(zx**2, -1)[:, :, None] - 2 * jnp.einsum("uli,umi->ulm", zx, zj) + jnp.sum(zj**2, -1)[:, None, :]
    s_parts = _prior_parts(model, [names[j] for j in shared])
    term = -0.5 * (quad + terms.log_det_c[:, None, None] + len(shared) * _LOG2PI) - _log_prior(s_parts, xs)[:, :, None]
    if iov.size:
        g = site_values["sd_occ"]
        d = (terms.o_draws[:, None, :, :] - xo[:, :, None, :]) / g
        term = term + (-0.5 * jnp.sum(d**2, -1) - jnp.sum(jnp.log(g)) - 0.5 * iov.size * _LOG2PI) - terms.log_prior_o[:, None, :]
    m = terms.o_draws.shape[1]
    per_unit = jax.nn.logsumexp(term, axis=-1) - math.log(m)  # (N, L)
    total = jax.ops.segment_sum(per_unit, terms.index, num_subjects)  # (S, L)
    if random.size:
        total = total + dist.MultivariateNormal(loc[:, None, random], scale_tril=_omega_chol(site_values)).log_prob(points)
    return total


def _omega_chol(site_values) -> Float[Array, "r r"]:
    """The Cholesky factor of the random effects' covariance Ω: diag(sd), or diag(sd) · corr_chol."""
    sd = site_values["sd"]
    return sd[:, None] * site_values["corr_chol"] if "corr_chol" in site_values else jnp.diag(sd)


def _with_corr(site_values: dict) -> dict:
    """The site values with the correlation matrix `corr` beside `corr_chol` (full covariance)."""
    if "corr_chol" in site_values:
        site_values = {**site_values, "corr": site_values["corr_chol"] @ site_values["corr_chol"].T}
    return site_values


def _subject_means(population, site_values, data, terms) -> Float[Array, "subjects k"]:
    """Each individual's population mean (covariates are constant within an individual: checked)."""
    loc_units = population.individual_means(site_values["mean"], site_values.get("beta"), data)  # (N, k)
    return loc_units[terms.first]


def _population_normal(population, terms, site_values, data):
    """The individuals' means of the random effects `(S, r)` and their covariance Ω `(r, r)`."""
    random = np.array(terms.random, int)
    chol = _omega_chol(site_values)
    return _subject_means(population, site_values, data, terms)[:, random], chol @ chol.T


def _check(population, data: Dataset):
    if not hasattr(population, "occasions"):
        raise TypeError("data whose rows are occasions (data.subjects) need a population from nlp.populations.gaussian(..., occasions=...).")
    if population.occasions and data.subjects is None:
        raise ValueError(
            f"the population has inter-occasion variability on {population.occasions}, but the data's rows are individuals: "
            "read the file with read_nonmem(..., occasion='OCC'), or mark each row's individual with data.with_subjects(ids)."
        )
    index, subjects = subject_index(data)
    for name, c in data.covariates.items():
        c = np.asarray(c)
        for s in range(len(subjects)):
            vals = c[index == s]
            if np.ptp(vals) > 0:
                raise ValueError(
                    f"covariate {name!r} changes between the occasions of individual {subjects[s]!r} ({sorted(set(vals.tolist()))}); "
                    "with occasions, covariates must be constant per individual."
                )


def fit_occasions(
    population, posterior, data: Dataset, key, *, num_draws: int = 100, num_points: int = 256, num_adapt: int = 3,
    max_iter: int = 500, tol: float = 1e-7,
) -> MAPResult:
    """The MAP fit of a population with occasions ([`fit_map`][nlme_ppl.fit_map] calls it for
    data whose rows are occasions, after refining the estimator where it refines). See the
    module's docstring for the likelihood. `num_draws` per occasion, `num_points` importance
    points per individual, and L-BFGS's `max_iter` and `tol` (on the gradient norm relative to
    1 + |f|). After the first fit the importance points are adapted to each individual's
    Laplace approximation at the estimate and the fit is redone from there, up to `num_adapt` times,
    until the median effective sample size of the outer weights reaches a quarter of `num_points`
    and the smallest 4% of it.

    **Returns:** a [`MAPResult`][nlme_ppl.MAPResult] indexed by individual (not occasion): `params`
    with `sd_occ[p]` for each IOV parameter, `stderr` from the Hessian, `log_likelihood` and
    `pointwise` per individual; `importance` holds the Pareto k̂ and effective sample size of
    each individual's outer importance weights (k̂ > 0.7: raise `num_points`).
    """
    return _fit(population, posterior, data, key, num_draws=num_draws, num_points=num_points, num_adapt=num_adapt, max_iter=max_iter, tol=tol)[0]


def _fit(population, posterior, data, key, *, num_draws, num_points, num_adapt, max_iter, tol) -> tuple[MAPResult, OccasionTerms, dict]:
    """`fit_occasions`, also returning the adapted importance terms and the population sites' priors."""
    check_keys(key)
    _check(population, data)
    model = posterior.model
    k_draws, k_points, k_sites = jax.random.split(jax.random.fold_in(key, 17), 3)
    values = jnp.asarray(posterior.sample(data, k_draws, num_draws=num_draws), jnp.float64)
    terms = occasion_terms(population, values, data, model, k_points, num_points=num_points)
    sites = _global_sites(population, data, k_sites)
    init = _initial(population, values, terms, data)
    transforms = {n: biject_to(fn.support) for n, fn in sites.items()}
    z0, unravel = ravel_pytree({n: transforms[n].inv(jnp.asarray(init[n])) for n in sites})

    def constrain(z):
        return {n: transforms[n](v) for n, v in unravel(z).items()}

    def pointwise(z, terms):
        return subject_loglik(population, model, terms, constrain(z), data)

    def neg_log_post(z, terms):
        v = constrain(z)
        prior = sum(jnp.sum(sites[n].log_prob(v[n])) for n in sites)
        return -(jnp.sum(pointwise(z, terms)) + prior)

    solve = jax.jit(lambda z0, terms: lbfgs(lambda z: neg_log_post(z, terms), z0, max_iter=max_iter, tol=tol))
    log_weights = jax.jit(lambda z, terms: _log_weights(population, model, terms, constrain(z), data))
    adapt = jax.jit(lambda z, terms, key: _adapted(population, model, terms, constrain(z), data, key))
    z, total_iters = z0, 0
    for round_ in range(num_adapt + 1):
        if round_:
            terms = adapt(z, terms, jax.random.fold_in(k_points, round_))
        z, value, converged, iters = solve(z, terms)
        total_iters += int(iters)
        lw = np.asarray(log_weights(z, terms))
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        ess = w.sum(axis=1) ** 2 / (w**2).sum(axis=1)
        if round_ and np.median(ess) >= 0.25 * num_points and np.min(ess) >= 0.04 * num_points:
            break
    final_pointwise, final_objective = functools.partial(pointwise, terms=terms), functools.partial(neg_log_post, terms=terms)
    values_c = _with_corr(constrain(z))
    labels = list(flatten_params(population, values_c))

    def flat(zz):
        return jnp.stack(list(flatten_params(population, _with_corr(constrain(zz))).values()))

    hess = jax.hessian(final_objective)(z)
    scores = jax.jacfwd(final_pointwise)(z)
    cov = label_covariances(np.asarray(hess), np.asarray(scores), np.asarray(jax.jacfwd(flat)(z)), labels)
    point = np.asarray(jax.nn.logsumexp(lw, axis=1)) - math.log(lw.shape[1])  # the last round's weights are those at the estimate
    _, subjects = subject_index(data)
    outer = importance_diagnostics(lw, ids=subjects)
    return MAPResult(
        params={k: float(v) for k, v in flatten_params(population, values_c).items()},
        stderr=cov.stderr(), site_values={k: np.asarray(v) for k, v in values_c.items()},
        losses=np.array([float(value)]), rescored=np.array([np.nan]), converged=np.array([bool(converged)]),
        iterations=np.array([total_iters]), best=0, log_likelihood=float(point.sum()), pointwise=point,
        ids=subjects, population=population, importance=outer,
        robust_stderr=cov.stderr(robust=True), covariance=cov.hessian, robust_covariance=cov.robust,
    ), terms, sites


def subject_loglik(population, model, terms: OccasionTerms, site_values: dict, data: Dataset) -> Float[Array, " subjects"]:
    """Each individual's log-likelihood `(S,)` at the population site values (relative to the
    training prior's marginal of its occasions)."""
    w = _log_weights(population, model, terms, site_values, data)
    return jax.nn.logsumexp(w, axis=1) - math.log(w.shape[1])


def _global_sites(population, data, key) -> dict:
    """The population sites outside every plate (mean, sd, corr_chol, beta, sd_occ) and their priors."""
    tr = numpyro.handlers.trace(numpyro.handlers.seed(population, key)).get_trace(data)
    return {n: msg["fn"] for n, msg in tr.items() if msg["type"] == "sample" and not msg["cond_indep_stack"] and not msg["is_observed"]}


def _initial(population, values, terms: OccasionTerms, data) -> dict:
    """Start: the mean of the individuals' pooled draws, their spread for `sd`, and the spread of
    the occasions' means within individuals for `sd_occ` (each floored at 0.05)."""
    index = np.asarray(terms.index)
    centre = np.asarray(values.mean(axis=1))  # (N, k)
    subjects = np.unique(index)
    per_subject = np.stack([centre[index == s].mean(axis=0) for s in subjects])
    out = population.init_values(jnp.asarray(per_subject)[:, None, :])
    if population.occasions:
        iov = np.array(terms.iov, int)
        within = np.concatenate([centre[index == s][:, iov] - per_subject[i, iov] for i, s in enumerate(subjects)])
        out["sd_occ"] = jnp.maximum(jnp.asarray(within.std(axis=0) * math.sqrt(len(index) / max(len(index) - len(subjects), 1))), 0.05)
    return out
