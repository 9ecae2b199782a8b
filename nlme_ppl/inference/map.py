"""Maximum a posteriori population estimates: optax L-BFGS from several starts in one compiled loop."""

from __future__ import annotations

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import Predictive
from numpyro.infer.util import unconstrain_fn

from .._sharding import shard_individuals
from .._timing import phase, record
from .._validate import check_keys, positive_int
from ..data import Dataset
from ..designs import check_designs
from ..diagnostics import SurrogateWarning
from ..likelihood import SurrogateDraws, prepare_draws, wants_cross_products
from ._diagnose import diagnose_fit
from ._labels import flatten_params
from ._objective import Objective, surrogate_model
from ._optimize import preconditioner
from ._result import MAPResult, parameter_table
from ._uncertainty import label_covariances
from .loglik import objective_function
from .occasions import fit_occasions
from .fixed import expand_fixed, fixed_point, initial_point, wants_likelihood_treatment
from ._raise import _RAISE_STREAM, RAISE_THRESHOLD, _max_draws, bucket_size, high_k_rows, with_extra_draws  # noqa: F401  (re-exported)
from .refine import RefinedPosterior, wants_refinement
from .refine import refine as refine_posterior

__all__ = ["MAPResult", "bucket_size", "fit_likelihood_treatment", "fit_map", "fit_map_draws", "high_k_rows", "objective_at_fit", "parameter_table", "with_extra_draws"]

#: The stream of a fit's key that the refinement draws from (`fold_in`; the fit's own splits are unchanged).
_REFINE_STREAM = 0x5EF1

_init_values = eqx.filter_jit(lambda population, values: population.init_values(values))


_pointwise = eqx.filter_jit(lambda objective, site_values, draws, data: objective.pointwise(site_values, draws, data))


@eqx.filter_jit
def _label_jacobian(population, objective: Objective, postprocess, z) -> jnp.ndarray:
    """The Jacobian in z of the labelled parameters (`flatten_params`), one compiled program
    per program and shapes (`postprocess` is a `jax.tree_util.Partial`: its draws and data are
    arguments, not constants)."""
    return jax.jacfwd(lambda zz: jnp.stack(list(flatten_params(population, postprocess(objective.unravel(zz))).values())))(z)


@eqx.filter_jit
def _unconstrained(objective: Objective, draws: SurrogateDraws, data, values: dict) -> jnp.ndarray:
    """The flat unconstrained point of constrained site `values` (one compiled program: run
    eagerly, NumPyro's replay of the program was dozens of one-operation programs)."""
    return objective.ravel(unconstrain_fn(objective.surrogate, (data,), {"draws": draws}, values))


def _starts(objective: Objective, draws: SurrogateDraws, key, num_starts: int, jitter: float, probe, init: dict | None = None) -> jnp.ndarray:
    """Unconstrained starting points `(num_starts, d)`: around `init` (constrained site values)
    when given, else the population's `init_values`, else from its prior. `probe`: the
    `(draws, data)` on which to run the program for its transforms (see `_probe`)."""
    surrogate, (probe_draws, probe_data) = objective.surrogate, probe
    if init is not None or hasattr(objective.population, "init_values"):
        if init is not None:
            base = {k: jnp.asarray(v) for k, v in init.items() if k in objective.template}
        else:
            base = _init_values(objective.population, draws.values)
        z0 = _unconstrained(objective, probe_draws, probe_data, base)
        noise = jitter * jax.random.normal(key, (num_starts, z0.shape[0]))
        return z0 + noise.at[0].set(0.0)
    samples = Predictive(surrogate, num_samples=num_starts, return_sites=list(objective.template))(key, probe_data, draws=probe_draws)
    return jax.vmap(lambda p: _unconstrained(objective, probe_draws, probe_data, p))(samples)


def _site_shapes(population, draws, data, site) -> dict:
    """Shapes of the surrogate's own sites (population parameters, deterministic sites), by name.

    Traced abstractly (`jax.eval_shape`: nothing is compiled; run eagerly, the two probes
    compiled about 130 one-operation programs, 3.7 s of a CLI fit); a program that needs
    concrete values (a Python `if` on data) is run eagerly instead."""
    kinds = {}

    def values(draws, data):
        tr = numpyro.handlers.trace(numpyro.handlers.seed(surrogate_model(population, site), 0)).get_trace(data, draws=draws)
        kinds.update({k: m["type"] for k, m in tr.items() if m["type"] in ("sample", "deterministic") and k != site})
        return {k: tr[k]["value"] for k in kinds}

    try:
        shapes = jax.eval_shape(values, draws, data)
    except jax.errors.JAXTypeError:
        kinds.clear()
        shapes = values(draws, data)
    return {k: (kinds[k], jnp.shape(v)) for k, v in shapes.items()}


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


def objective_at_fit(fit: MAPResult, data: Dataset) -> tuple[Objective, object, jnp.ndarray]:
    """The objective a fit was made with, rebuilt on its own draws (`fit.draws`): the
    `Objective`, NumPyro's `postprocess_fn`, and the estimate's unconstrained point `z`
    (used by the profiles and the bootstrap, which continue from the estimate)."""
    probe = _probe(fit.population, fit.draws, data, fit.site)
    objective, postprocess = Objective.build(fit.population, *probe, jax.random.key(0), site=fit.site)
    values = {k: jnp.asarray(fit.site_values[k]) for k in objective.template}
    z = _unconstrained(objective, *probe, values)
    return objective, postprocess, z


def fit_map_draws(
    population,
    draws: SurrogateDraws,
    data: Dataset,
    key,
    *,
    num_starts: int = 10,
    max_iter: int = 500,
    tol: float = 1e-8,
    jitter: float = 0.5,
    fresh_draws: SurrogateDraws | None = None,
    num_rescore: int = 3,
    site: str = "obs",
    init: dict | None = None,
) -> MAPResult:
    """[`fit_map`][nlme_ppl.fit_map] on draws already taken (used by `fit_nuts` too), without
    the surrogate checks (see [`diagnose_fit`][nlme_ppl.inference.diagnose_fit]). With `init`
    (constrained site values, e.g. a previous fit's `site_values`), the first start is there
    and the others are jittered around it."""
    check_keys(key)
    num_starts = positive_int(num_starts, name="num_starts")
    # the individuals split over the devices (nothing happens on one device, or when already placed)
    draws, data, fresh_draws = shard_individuals((draws, data, fresh_draws), draws.num_individuals)
    k_init, k_start = jax.random.split(key)
    # Site shapes do not depend on the number of draws (nor, usually, individuals): inspect the
    # program on a small probe, and build the one objective of this fit there.
    with phase("setup"):
        probe = _probe(population, draws, data, site)
        objective, postprocess = Objective.build(population, *probe, k_init, site=site)
        z0 = _starts(objective, draws, k_start, num_starts, jitter, probe, init)
        precond = jax.block_until_ready(preconditioner(objective.start_hessian(z0[0], draws, data)))
    with phase("starts"):
        zs, losses, converged, iters = jax.device_get(objective.minimise(z0, precond, draws, data, int(max_iter), float(tol)))
    losses = np.where(np.isfinite(losses), losses, np.inf)
    order = np.argsort(losses)
    rescored = np.full(num_starts, np.nan)
    best = int(order[0])
    if fresh_draws is not None and num_starts > 1:
        with phase("rescore"):
            cand = order[: min(num_rescore, num_starts)]
            cand = cand[np.isfinite(losses[cand])]
            rescored[cand] = jax.device_get(objective.values(jnp.asarray(zs[cand]), fresh_draws, data))
            best = int(cand[np.argmin(rescored[cand])])
    z = jnp.asarray(zs[best])
    with phase("stderr"):
        site_values = {k: np.asarray(v) for k, v in postprocess(objective.unravel(z)).items()}
        labels = list(flatten_params(population, site_values))
        jac = _label_jacobian(population, objective, postprocess, z)
        cov = label_covariances(np.asarray(objective.hessian(z, draws, data)), np.asarray(objective.scores(z, draws, data)), jac, labels)
    with phase("pointwise"):
        pointwise = np.asarray(_pointwise(objective, site_values, draws, data))
    return MAPResult(
        params={k: float(v) for k, v in flatten_params(population, site_values).items()},
        stderr=cov.stderr(),
        robust_stderr=cov.stderr(robust=True),
        covariance=cov.hessian,
        robust_covariance=cov.robust,
        draws=draws,
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
        site=site,
    )


def fit_map(
    population,
    posterior,
    data: Dataset,
    key,
    *,
    num_draws: int = 100,
    num_starts: int = 10,
    max_iter: int = 500,
    tol: float = 1e-8,
    jitter: float = 0.5,
    num_rescore: int = 3,
    diagnose: bool = True,
    site: str = "obs",
    refine: bool | str = "auto",
    fixed: str = "auto",
    max_draws: int = 1000,
    init: dict | None = None,
) -> MAPResult:
    """Maximum a posteriori population parameters under the amortized surrogate.

    Draws `num_draws` φ_ij ~ q(φ | y_i) per individual, then runs optax L-BFGS (zoom line
    search) on the unconstrained negative log posterior from `num_starts` starting points, one
    after another in one compiled loop (`lax.map`; under `vmap` each start paid the slowest
    one's iterations and line searches). Starts come from `population.init_values(draws)` when the population
    has it (the built-in ones do: medians of the individual draws), jittered by `jitter` in
    unconstrained space, else from the population prior. The `num_rescore` best starts are
    re-scored on fresh draws, and the best of those is returned.

    L-BFGS runs in coordinates whitened by the Hessian at the first start (its eigenvalues made
    positive), so that means, SDs and fixed effects, whose curvatures differ by orders of
    magnitude, converge together. A start has converged when the gradient in those
    coordinates (about the Newton decrement) has norm ≤ `tol`·(1 + |f|) within `max_iter`
    iterations.

    Data whose designs lie outside what the estimator was trained on (more doses or samples,
    longer follow-up, a route, steady state or resets it never saw) warn first with a
    [`DesignWarning`][nlme_ppl.designs.DesignWarning] ([`check_designs`][nlme_ppl.designs.check_designs]).

    With `diagnose=True` (default) the result carries two checks of the surrogate, and each
    warns with a [`SurrogateWarning`][nlme_ppl.diagnostics.SurrogateWarning] naming the
    individuals concerned: `importance` (PSIS Pareto k > 0.7 of an individual's importance
    weights at the estimate: more draws or a better estimator are needed there) and
    `outliers` (data far outside the training simulations in summary space; only for
    estimators with a summary network). They cost a few seconds at N = 10,000. A third,
    `fixed_widths`, warns when a parameter without random effect has individual posteriors that
    barely narrow the training prior (median SD ratio above 0.8): its estimate then magnifies
    small errors of the estimator (see [Diagnostics](guide/diagnostics.md#parameters-without-random-effect)).

    **Arguments:**

    - `population`: a NumPyro program `population(data)` (e.g. `nlp.populations.gaussian(model)`).
    - `posterior`: an estimator ([`Posterior`][nlme_ppl.estimators.Posterior]: e.g.
      [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior]).
    - `data`: a [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX random key.
    - `num_draws`: draws φ_ij per individual.
    - `num_starts`, `max_iter`, `tol`, `jitter`: the L-BFGS starts and their stopping rule.
    - `num_rescore`: how many of the best starts are re-scored on fresh draws.
    - `diagnose`: run the surrogate checks ([`diagnose_fit`][nlme_ppl.inference.diagnose_fit]).
    - `site`: the name of the surrogate's likelihood factor (and of the `log_likelihood`
      variable), as in [`fit_nuts`][nlme_ppl.fit_nuts].
    - `refine`: `"auto"` (default) refines the estimator into the exact individual posteriors
      ([`nlp.refine`][nlme_ppl.refine]) where the model's likelihood is tractable, and not
      otherwise; `False` is the pure amortized path; `True` insists (an error without a
      tractable likelihood). A [`RefinedPosterior`][nlme_ppl.RefinedPosterior] passed as
      `posterior` is used as it is.
    - `fixed`: how parameters without random effect (`Delta` sites) enter the surrogate:
      `"likelihood"` by a second-order expansion of the exact likelihood in them, with no
      kernel (tractable models; see [`expand_fixed`][nlme_ppl.inference.expand_fixed]),
      `"kernel"` by a Gaussian kernel around their value (any model), `"auto"` (default): the
      likelihood where the draws are exact (refinement on) and the model tractable.

    - `max_draws`: individuals whose importance weights at the estimate have Pareto k > 0.7 get
      extra draws from the same posterior, up to `max_draws` draws each in all, and the fit is
      redone from the estimate on them (once). Their count is rounded up (to min(8, N/16) at
      least, then by at most 25%; the next-highest k fill it) so that fits of similar data reuse the
      compiled programs. `max_draws=num_draws` turns it off.
    - Data whose rows are occasions (`data.subjects`, e.g. `read_nonmem(..., occasion="OCC")`)
      with a population with `occasions` (inter-occasion variability) are fitted by
      [`fit_occasions`][nlme_ppl.inference.fit_occasions] (one start; `num_starts`, `jitter`,
      `num_rescore`, `fixed`, `max_draws`, `init` and `diagnose` do not apply there).
    - `init`: constrained population site values (e.g. another fit's `site_values`): the first
      start is there and the others are jittered around it.

    **Returns:** a [`MAPResult`][nlme_ppl.MAPResult] (its `refined` field holds the refinement,
    `absolute` the log-likelihood, OFV, AIC and BIC on the absolute scale where the fit was refined
    (see [`objective_function`][nlme_ppl.inference.objective_function]),
    `fixed_treatment` says which treatment was used, `raised` which individuals got extra draws;
    its `importance` check is that of the final fit, on all draws).
    """
    with record() as timings:
        fit = _fit_map(
            population, posterior, data, key, num_draws=num_draws, num_starts=num_starts, max_iter=max_iter, tol=tol, jitter=jitter,
            num_rescore=num_rescore, diagnose=diagnose, site=site, refine=refine, fixed=fixed, max_draws=max_draws, init=init,
        )
    return eqx.tree_at(lambda f: f.timings, fit, timings, is_leaf=lambda x: x is None)


def _fit_map(population, posterior, data, key, *, num_draws, num_starts, max_iter, tol, jitter, num_rescore, diagnose, site, refine, fixed, max_draws, init):
    check_keys(key)
    num_draws = positive_int(num_draws, name="num_draws")
    max_draws = _max_draws(max_draws, num_draws)
    if isinstance(data, Dataset):
        with phase("checks"):
            check_designs(posterior, data, stacklevel=3)
    with phase("refine"):
        posterior = refined_posterior(posterior, data, key, refine)
    if getattr(population, "occasions", ()) or getattr(data, "subjects", None) is not None:
        return fit_occasions(population, posterior, data, key, num_draws=num_draws, max_iter=max_iter, tol=max(tol, 1e-7))
    k_draws, k_fresh, k_fit = jax.random.split(key, 3)
    cross = wants_cross_products(population)
    with phase("draws"):
        base = prepare_draws(posterior, data, k_draws, num_draws=num_draws, cross=cross)
        base_fresh = prepare_draws(posterior, data, k_fresh, num_draws=num_draws, cross=cross) if num_starts > 1 else None
        jax.block_until_ready((base, base_fresh))
    options = dict(num_starts=num_starts, max_iter=max_iter, tol=tol, jitter=jitter, num_rescore=num_rescore, site=site)
    likelihood = wants_likelihood_treatment(fixed, posterior)

    def fit_on(draws, fresh, init):
        if likelihood:
            return fit_likelihood_treatment(population, posterior.model, draws, data, k_fit, fresh_draws=fresh, init=init, **options)
        return fit_map_draws(population, draws, data, k_fit, fresh_draws=fresh, init=init, **options), draws

    fit, draws = fit_on(base, base_fresh, init)
    with phase("raise"):
        rows = high_k_rows(population, draws, fit.site_values, data, site=site) if max_draws > num_draws else np.zeros(0, int)
        if rows.size:
            k_more, k_more_fresh = jax.random.split(jax.random.fold_in(key, _RAISE_STREAM))
            base = with_extra_draws(posterior, base, data, rows, k_more, max_draws=max_draws)
            base_fresh = None if base_fresh is None else with_extra_draws(posterior, base_fresh, data, rows, k_more_fresh, max_draws=max_draws)
    if rows.size:
        fit, draws = fit_on(base, base_fresh, fit.site_values)
    fit = dataclasses.replace(fit, raised=tuple(data.ids[i] for i in rows), max_draws=max_draws, posterior=posterior)
    if isinstance(posterior, RefinedPosterior):
        fit = eqx.tree_at(lambda f: f.refined, fit, posterior, is_leaf=lambda x: x is None)
        # the refinement estimated log p_train(y_i) on the way: the absolute scale costs nothing here
        with phase("absolute"):
            fit = eqx.tree_at(lambda f: f.absolute, fit, objective_function(fit, data), is_leaf=lambda x: x is None)
    if not diagnose:
        return fit
    with phase("diagnostics"):
        checks = diagnose_fit(population, posterior, draws, fit.site_values, data, k_draws, site=site, stacklevel=4)
    return eqx.tree_at(
        lambda f: (f.importance, f.outliers, f.fixed_widths), fit, tuple(checks), is_leaf=lambda x: x is None
    )


def fit_likelihood_treatment(
    population, model, draws: SurrogateDraws, data: Dataset, key, *, init: dict | None = None, fresh_draws=None,
    max_rounds: int = 3, tolerance: float = 0.1, **options,
) -> tuple[MAPResult, SurrogateDraws]:
    """[`fit_map_draws`][nlme_ppl.inference.map.fit_map_draws] with the likelihood treatment of
    the parameters without random effect ([`expand_fixed`][nlme_ppl.inference.expand_fixed]).

    The first expansion point is `init`'s values of those parameters where given, else the median
    over individuals of their posterior means. After each fit the expansion moves to the estimate
    until the estimate moves by at most `tolerance` individual posterior SDs (median over
    individuals) from the point, in at most `max_rounds` fits; later rounds start at the
    previous estimate. Returns the fit and the expanded draws it was made on (a program
    without such parameters: the plain fit and `draws`)."""
    point = initial_point(population, draws, data, init)
    if not point:
        return fit_map_draws(population, draws, data, key, fresh_draws=fresh_draws, init=init, **options), draws
    names = tuple(point)
    idx = [draws.param_names.index(n) for n in names]
    spread = np.maximum(np.median(np.std(np.asarray(draws.values, np.float64)[..., idx], axis=1), axis=0), 1e-12)  # (F,)
    for rounds in range(1, max_rounds + 1):
        with phase("expansion"):
            expanded = expand_fixed(draws, model, data, point)
            fresh = None if fresh_draws is None else expand_fixed(fresh_draws, model, data, point)
            jax.block_until_ready((expanded, fresh))
        fit = fit_map_draws(population, expanded, data, key, fresh_draws=fresh, init=init, **options)
        new = fixed_point(population, expanded, fit.site_values, data)
        moved = max(float(np.max(np.abs(np.asarray(new[n]) - np.asarray(point[n])))) / spread[a] for a, n in enumerate(names))
        init, point = fit.site_values, new
        if moved <= tolerance:
            break
    else:
        warnings.warn(
            f"the likelihood treatment of {list(names)}: after {max_rounds} fits the estimate still moved by {moved:.2f} "
            f"individual posterior SDs from the expansion point (tolerance {tolerance}); the second-order expansion may be "
            "inaccurate there. Check the fit's convergence, or use fixed='kernel'.",
            SurrogateWarning,
            stacklevel=5,
        )
    return dataclasses.replace(fit, fixed_treatment="likelihood", fixed_rounds=rounds), expanded


def refined_posterior(posterior, data, key, refine):
    """The posterior a fit uses: `refine(posterior, data, ...)` where `refine` resolves to on
    (see [`fit_map`][nlme_ppl.fit_map]), else `posterior`. Its key is folded from the fit's key,
    so that `refine=False` draws exactly what it drew before refinement existed."""
    if not wants_refinement(refine, posterior):
        return posterior
    return refine_posterior(posterior, data, jax.random.fold_in(key, _REFINE_STREAM))
