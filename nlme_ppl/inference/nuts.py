"""Full posterior of the population parameters: NumPyro NUTS over the amortized surrogate."""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from numpyro.infer.util import log_likelihood as site_log_likelihood

from .._validate import check_keys, positive_int
from ..data import Dataset
from ..designs import check_designs
from ..likelihood import prepare_draws, wants_cross_products
from ._diagnose import diagnose_fit
from ._mcmc import run_nuts
from ._occasions_nuts import nuts_occasions
from ._objective import surrogate_model
from ._predictive import posterior_predictive as predictive_draws
from ._result import MAPResult
from .fixed import expand_fixed, initial_point, wants_likelihood_treatment
from .map import _RAISE_STREAM, _max_draws, fit_likelihood_treatment, fit_map_draws, high_k_rows, refined_posterior, with_extra_draws
from .refine import RefinedPosterior

__all__ = ["fit_nuts"]

#: Key stream of the posterior predictive draws (folded into the key; the fit's own splits are unchanged).
_PREDICTIVE_STREAM = 0x505053


def fit_nuts(
    population,
    posterior,
    data: Dataset,
    key,
    *,
    num_draws: int = 100,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    target_accept_prob: float = 0.8,
    chain_method: str | None = None,
    init_map: bool = True,
    init: MAPResult | None = None,
    progress: bool = True,
    site: str = "obs",
    diagnose: bool = True,
    refine: bool | str = "auto",
    fixed: str = "auto",
    max_draws: int = 1000,
    posterior_predictive: bool = True,
    log_likelihood: str = "individual",
) -> xr.DataTree:
    """Sample the population posterior with NumPyro NUTS over the amortized surrogate.

    The draws φ_ij ~ q(φ | y_i) are taken once (`num_draws` per individual) and passed to the
    sampler as an input. Chains start at `init` (a [`MAPResult`][nlme_ppl.MAPResult] you
    already have), else at the MAP found on the same draws (`init_map=True`, recommended: a
    MAP start keeps step sizes sane at large N), else at NumPyro's default.

    `chain_method` defaults to `"parallel"` when JAX has at least `num_chains` devices (call
    `numpyro.set_host_device_count(n)` before importing JAX to get CPU devices), else
    `"sequential"`.

    **Returns:** an ArviZ `DataTree` with groups `posterior`, `sample_stats` (with `diverging`,
    `tree_depth`-like `num_steps`, `step_size`, `energy`, `lp`), `log_likelihood` (`site`, one
    term per individual, dim `individual` labelled by id), `observed_data` and `constant_data`.
    Population parameters carry a `param` coordinate (`mean`), `sd_param` (`sd`) and
    `corr_param`/`corr_param_bis` (`corr`).

    With `diagnose=True` (default) the tree also has a group `surrogate_diagnostics` (dim
    `individual`): `pareto_k` and `ess` of each individual's importance weights at the
    posterior draw of highest density, and `summary_distance` / `summary_tail_prob` of the
    data against the training simulations; a
    [`SurrogateWarning`][nlme_ppl.diagnostics.SurrogateWarning] names the individuals where
    either check fails (see [`fit_map`][nlme_ppl.fit_map]). Its attributes
    `fixed_posterior_over_prior_sd_<name>` give, for each parameter without random effect,
    the median posterior/prior SD ratio of the individual draws (warned above 0.8).

    `refine` is as in [`fit_map`][nlme_ppl.fit_map]: by default the estimator is refined into
    the exact individual posteriors where the likelihood is tractable; the tree's attributes
    say whether it was (`refined`), and its `surrogate_diagnostics` group then has the
    refinement's `refined_pareto_k` and `refined_ess` per individual.

    `fixed` is as in [`fit_map`][nlme_ppl.fit_map]: with the likelihood treatment (the default
    on refined draws of a tractable model), the expansion point is `init`'s estimate, or the
    MAP's (found with the treatment), and the attribute `fixed_treatment` says which was used.

    `max_draws` is as in [`fit_map`][nlme_ppl.fit_map]: individuals whose importance weights at
    the start (`init`, or the MAP) have Pareto k > 0.7 get extra draws, up to `max_draws` each,
    before sampling; the attribute `num_raised` counts them, and the `surrogate_diagnostics`
    group's `draws` (present when some were raised) gives each individual's draws.

    `posterior_predictive=True` (default) adds a group `posterior_predictive` with `site`
    (dims `individual`, `obs_index`, as `observed_data`; NaN where unobserved): for each
    posterior draw θ_s, each individual's φ_i is drawn from its conditional posterior
    p(φ | y_i, θ_s) by resampling its draws with the importance weights
    p(φ_ij | θ_s) / p_train(φ_ij) (parameters without random effect take their population
    value), and its data are simulated through the individual model at its own design. It
    costs about one surrogate evaluation and one simulation of the data set per posterior
    draw; the attribute `posterior_predictive_seconds` gives the time it took.
    `az.plot_ppc_dist(tree)` then compares the replicates with the data.

    Where the model is tractable it also stores log p(y_it | φ_i) at the resampled φ_i, one
    term per observation, which LOO-PIT needs (`az.loo_pit` pairs the log-likelihood with the
    predictive of the same shape). `log_likelihood` says which terms the `log_likelihood`
    group holds under `site`: `"individual"` (default) the surrogate's per-individual terms,
    for `az.loo` / `az.compare` across population models (the observation terms go to a
    group `log_likelihood_observation`); `"observation"` the per-observation terms, so that
    `az.plot_loo_pit(tree)` runs directly (the per-individual terms go to a group
    `log_likelihood_individual`, and `az.loo` then leaves out one observation at a time).

    Data whose rows are occasions (`data.subjects`) with a population with `occasions` are
    sampled on the likelihood of [`fit_occasions`][nlme_ppl.inference.fit_occasions], from its MAP
    (`nuts_occasions`): the tree then has `posterior`, `sample_stats`, `log_likelihood` (one
    term per individual) and `surrogate_diagnostics` (the outer weights' `pareto_k` and `ess`
    at the MAP); `init`, `init_map`, `fixed`, `max_draws`, `posterior_predictive`, `diagnose`
    and `log_likelihood` do not apply there.
    """
    check_keys(key)
    if isinstance(data, Dataset):
        check_designs(posterior, data, stacklevel=2)
    if log_likelihood not in ("individual", "observation"):
        raise ValueError(f"`log_likelihood` must be 'individual' or 'observation'; got {log_likelihood!r}.")
    if log_likelihood == "observation" and not (posterior_predictive and posterior.model.tractable):
        raise ValueError(
            "log_likelihood='observation' needs the per-observation terms log p(y_it | phi_i): pass "
            f"posterior_predictive=True, with a tractable model (model {posterior.model.name!r} "
            f"{'is' if posterior.model.tractable else 'is not'} tractable)."
        )
    num_chains = positive_int(num_chains, name="num_chains")
    posterior = refined_posterior(posterior, data, key, refine)
    num_draws = positive_int(num_draws, name="num_draws")
    if getattr(population, "occasions", ()) or getattr(data, "subjects", None) is not None:
        return nuts_occasions(population, posterior, data, key, num_draws=num_draws, num_chains=num_chains, num_warmup=num_warmup,
                              num_samples=num_samples, target_accept_prob=target_accept_prob, chain_method=chain_method,
                              progress=progress, site=site)  # fmt: skip
    max_draws = _max_draws(max_draws, num_draws)
    k_draws, k_map, k_mcmc = jax.random.split(key, 3)
    base = draws = prepare_draws(posterior, data, k_draws, num_draws=num_draws, cross=wants_cross_products(population))
    surrogate = surrogate_model(population, site)  # the draws are a model argument
    treatment = "kernel"
    if wants_likelihood_treatment(fixed, posterior):
        if init is None and init_map:
            init, draws = fit_likelihood_treatment(population, posterior.model, draws, data, k_map, num_starts=4, site=site)
        else:  # expanded at the given start (or at the median of the individual posterior means)
            point = initial_point(population, draws, data, None if init is None else init.site_values)
            draws = expand_fixed(draws, posterior.model, data, point) if point else draws
        treatment = "likelihood" if draws.fixed_names else "kernel"
    elif init is None and init_map:
        init = fit_map_draws(population, draws, data, k_map, num_starts=4, site=site)
    rows = np.zeros(0, int)
    if init is not None and max_draws > num_draws:
        rows = high_k_rows(population, draws, init.site_values, data, site=site)
    if rows.size:  # extra draws where the weights at the start are heavy-tailed
        more = with_extra_draws(posterior, base, data, rows, jax.random.fold_in(key, _RAISE_STREAM), max_draws=max_draws).extra
        if draws.fixed_names:  # expanded at their individuals' points; the others' expansion is kept, not redone
            point = {n: draws.fixed_point[rows, a] for a, n in enumerate(draws.fixed_names)}
            more = expand_fixed(more, posterior.model, data.subset(rows), point)
        draws = eqx.tree_at(lambda d: (d.extra, d.extra_index), draws, (more, jnp.asarray(rows)), is_leaf=lambda x: x is None)
    init = {} if init is None else {k: v for k, v in init.site_values.items() if k != "corr"}
    samples, stats, chain_method = run_nuts(
        surrogate, k_mcmc, data, draws=draws, init=init, num_chains=num_chains, num_warmup=num_warmup,
        num_samples=num_samples, target_accept_prob=target_accept_prob, chain_method=chain_method, progress=progress,
    )
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()}
    ll = site_log_likelihood(surrogate, flat, data, draws=draws)[site]
    ll = np.asarray(ll).reshape(num_chains, num_samples, -1)
    from ._datatree import to_datatree  # imports arviz: only when a tree is built

    refined = isinstance(posterior, RefinedPosterior)
    attrs = {"inference": "NUTS over the amortized surrogate", "num_draws_per_individual": int(num_draws), "chain_method": chain_method,
             "refined": int(refined), "fixed_treatment": treatment, "num_raised": int(rows.size), "max_draws": max_draws}  # fmt: skip
    predictive = None
    if posterior_predictive:
        start = time.perf_counter()
        k_pred = jax.random.fold_in(key, _PREDICTIVE_STREAM)
        reps, obs_ll = predictive_draws(population, posterior.model, draws, flat, data, k_pred)
        attrs["posterior_predictive_seconds"] = time.perf_counter() - start
        shape = (num_chains, num_samples, *reps.shape[1:])
        predictive = (reps.reshape(shape), None if obs_ll is None else obs_ll.reshape(shape))
    tree = to_datatree(population, {k: np.asarray(v) for k, v in samples.items()}, ll, ids=data.ids, data=data, sample_stats=stats,
                       site=site, attrs=attrs, predictive=predictive, log_likelihood_kind=log_likelihood)  # fmt: skip
    if diagnose:
        best = int(np.argmax(np.asarray(stats["lp"]).reshape(-1)))  # the posterior draw of highest density
        checks = diagnose_fit(population, posterior, draws, {k: v[best] for k, v in flat.items()}, data, k_draws, site=site)
        ds = checks.to_dataset(data.ids)
        if refined:
            ds["refined_pareto_k"] = ("individual", np.asarray(posterior.pareto_k))
            ds["refined_ess"] = ("individual", np.asarray(posterior.ess))
        tree["surrogate_diagnostics"] = ds
    return tree
