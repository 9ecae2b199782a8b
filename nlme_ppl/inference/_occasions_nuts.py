"""NUTS for populations with occasions: the population sites under their priors, with the
occasions' likelihood of [`fit_occasions`][nlme_ppl.inference.fit_occasions] as a factor."""

from __future__ import annotations

import jax
import numpy as np
import numpyro

from ..data import subject_index
from ._mcmc import run_nuts
from .occasions import _fit, subject_loglik

__all__ = ["nuts_occasions"]


def nuts_occasions(population, posterior, data, key, *, num_draws: int, num_chains: int, num_warmup: int, num_samples: int,
                   target_accept_prob: float, chain_method, progress: bool, site: str):  # fmt: skip
    """The population posterior of a population with occasions, by NumPyro NUTS.

    The MAP comes first (`fit_occasions`, which also adapts the importance points of each
    individual to its estimate); the chains start there, on those points. Returns an ArviZ
    DataTree with `posterior`, `sample_stats`, `log_likelihood` (one term per individual, dim
    `individual` labelled by the individual's id) and the MAP's outer Pareto k̂ and ESS in a
    group `surrogate_diagnostics`.
    """
    import xarray as xr

    from ._datatree import to_datatree  # imports arviz: only when a tree is built

    k_map, k_mcmc = jax.random.split(key)
    fit, terms, sites = _fit(population, posterior, data, k_map, num_draws=num_draws, num_points=256, num_adapt=3, max_iter=500, tol=1e-7)
    model = posterior.model

    def program(terms):
        values = {n: numpyro.sample(n, fn) for n, fn in sites.items()}
        numpyro.factor(site, subject_loglik(population, model, terms, values, data).sum())

    init = {k: v for k, v in fit.site_values.items() if k in sites}
    samples, stats, chain_method = run_nuts(
        program, k_mcmc, terms, init=init, num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples,
        target_accept_prob=target_accept_prob, chain_method=chain_method, progress=progress,
    )
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()}
    # a few posterior draws at a time: one draw's terms are (occasions, points, draws) arrays
    ll = jax.lax.map(jax.jit(lambda v: subject_loglik(population, model, terms, v, data)), flat, batch_size=4)
    _, subjects = subject_index(data)
    ll = np.asarray(ll).reshape(num_chains, num_samples, -1)
    if "corr_chol" in samples:
        samples["corr"] = np.einsum("cdij,cdkj->cdik", samples["corr_chol"], samples["corr_chol"])
    attrs = {"inference": "NUTS over the occasions' surrogate (inter-occasion variability)", "num_draws_per_occasion": int(num_draws),
             "chain_method": chain_method, "num_occasions": int(data.num_individuals)}  # fmt: skip
    tree = to_datatree(population, samples, ll, ids=subjects, sample_stats=stats, site=site, attrs=attrs)
    outer = {"pareto_k": ("individual", np.asarray(fit.importance.pareto_k)), "ess": ("individual", np.asarray(fit.importance.ess))}
    tree["surrogate_diagnostics"] = xr.Dataset(outer, coords={"individual": list(subjects)})
    return tree
