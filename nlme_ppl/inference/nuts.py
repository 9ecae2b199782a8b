"""Full posterior of the population parameters: NumPyro NUTS over the amortized surrogate."""

from __future__ import annotations

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS, init_to_median, init_to_value
from numpyro.infer.util import log_likelihood

from .._validate import check_keys, positive_int
from ..likelihood import amortize, prepare_draws, wants_cross_products
from .map import fit_map_draws

__all__ = ["fit_nuts"]

_EXTRA = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy", "adapt_state.step_size")


def fit_nuts(
    population,
    posterior,
    data,
    key,
    *,
    num_draws: int = 100,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    target_accept_prob: float = 0.8,
    chain_method: str | None = None,
    init_map: bool = True,
    init=None,
    progress: bool = True,
    site: str = "obs",
):
    """Sample the population posterior with NumPyro NUTS over the amortized surrogate.

    The draws φ_ij ~ q(φ | y_i) are taken once (`num_draws` per individual) and passed to the
    sampler as an input. Chains start at `init` (a [`MAPResult`][nlme_ppl.inference.map.MAPResult] you
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
    """
    check_keys(key)
    num_chains = positive_int(num_chains, name="num_chains")
    k_draws, k_map, k_mcmc = jax.random.split(key, 3)
    draws = prepare_draws(posterior, data, k_draws, num_draws=positive_int(num_draws, name="num_draws"), cross=wants_cross_products(population))
    surrogate = amortize(population, site=site)  # the draws are a model argument
    if init is None and init_map:
        init = fit_map_draws(population, draws, data, k_map, num_starts=4, site=site)
    init = {} if init is None else {k: v for k, v in init.site_values.items() if k != "corr"}
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    strategy = init_to_value(values=init) if init else init_to_median
    kernel = NUTS(surrogate, init_strategy=strategy, target_accept_prob=target_accept_prob)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains, chain_method=chain_method, progress_bar=progress)
    mcmc.run(k_mcmc, data, draws=draws, extra_fields=_EXTRA)
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()}
    ll = log_likelihood(surrogate, flat, data, draws=draws)[site]
    ll = np.asarray(ll).reshape(num_chains, num_samples, -1)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {
        "diverging": extra["diverging"],
        "n_steps": extra["num_steps"],
        "acceptance_rate": extra["accept_prob"],
        "energy": extra["energy"],
        "lp": -np.asarray(extra["potential_energy"]),
        "step_size": extra["adapt_state.step_size"],
    }
    from ..io.arviz import to_datatree

    attrs = {"inference": "NUTS over the amortized surrogate", "num_draws_per_individual": int(num_draws), "chain_method": chain_method}
    return to_datatree(population, {k: np.asarray(v) for k, v in samples.items()}, ll, ids=data.ids, data=data, sample_stats=stats, site=site, attrs=attrs)
