"""Posterior predictive draws of a surrogate NUTS fit, and the observation-level log-likelihood.

For each posterior draw θ_s, individual i's parameters are drawn from its conditional posterior
p(φ | y_i, θ_s) ∝ p(y_i | φ) p(φ | θ_s) by resampling its estimator draws φ_ij ~ q(φ | y_i) with
the surrogate's own importance weights p(φ_ij | θ_s) / p_train(φ_ij) (sampling-importance
resampling: q(φ | y_i) ≈ p_train(φ | y_i) ∝ p(y_i | φ) p_train(φ)). Parameters without a random
effect (a `Delta` population distribution) take their population value. Replicate data
ỹ_i ~ p(y | φ_i) are then simulated through the individual model at the individual's own design.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float

from ..likelihood import _evaluated
from ..simulation import _simulate_given

__all__ = ["posterior_predictive"]

#: Posterior draws per vectorised batch (bounds the memory of the (batch, N, M) weights).
_BATCH = 64


def _observation_log_prob(model, phi, design, obs):
    """log p(y_it | φ) of each observation `(T,)` (0 where masked), one individual."""
    cond = numpyro.handlers.condition(model.fn, data={n: phi[a] for a, n in enumerate(model.param_names)})
    site = numpyro.handlers.trace(numpyro.handlers.seed(cond, 0)).get_trace(design, obs=obs)[model.obs_site]
    fn = site["fn"]
    while isinstance(fn, dist.Independent):  # keep the per-observation terms (masking and censoring stay)
        fn = fn.base_dist
    return jnp.broadcast_to(fn.log_prob(site["value"]), jnp.shape(design["times"]))


def posterior_predictive(
    population, model, draws, samples: dict, data, key, *, observation_loglik: bool = True
) -> tuple[Float[np.ndarray, "samples individuals times"], Float[np.ndarray, "samples individuals times"] | None]:
    """Replicate data for every posterior draw, by importance resampling of the stored draws.

    **Arguments:**

    - `population`: the population NumPyro program that was sampled.
    - `model`: the [`IndividualModel`][nlme_ppl.IndividualModel] (the estimator's `model`).
    - `draws`: the [`SurrogateDraws`][nlme_ppl.SurrogateDraws] the fit used (extra draws included).
    - `samples`: constrained site values by name, each `(S, ...)` (the posterior draws, flattened).
    - `data`: the [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX key.
    - `observation_loglik`: also return log p(y_it | φ_i) at the resampled φ_i (tractable models).

    **Returns:** `(replicates, loglik)`, each `(S, N, T)`: the simulated observations (NaN where
    `data.mask` is False) and the observed data's log-density per observation (0 where masked),
    or `None` when not asked for or the model is not tractable.
    """
    designs = model.designs_from_data(data)
    mask = jnp.asarray(data.mask)
    n, names = data.num_individuals, model.param_names
    values = draws.values.astype(jnp.float64)  # stored in float32
    if draws.extra is not None:  # one pool per individual: its M draws, then its extra ones (-inf weight elsewhere)
        idx, m_e = draws.extra_index, draws.extra.num_draws
        values = jnp.concatenate([values, jnp.broadcast_to(draws.centre[:, None], (n, m_e, len(names))).at[idx].set(draws.extra.values)], 1)
    want_ll = observation_loglik and model.tractable

    def one(args) -> tuple[Array, Array]:
        k, params = args
        handler = _evaluated(population, draws, params, (data,), {})
        lw = handler.log_weights()
        if draws.extra is not None:
            more = jnp.full((n, draws.extra.num_draws), -jnp.inf).at[draws.extra_index].set(handler.log_weights_extra())
            lw = jnp.concatenate([lw, more], 1)
        k_pick, k_sim = jax.random.split(k)
        j = jax.random.categorical(k_pick, lw, axis=-1)  # (N,)
        phi = jnp.take_along_axis(values, j[:, None, None], axis=1)[:, 0]
        for name, loc in handler.fixed_loc.items():  # no random effect: the population value
            phi = phi.at[:, names.index(name)].set(loc)
        y = jnp.where(mask, _simulate_given(model, jax.random.split(k_sim, n), phi, designs), jnp.nan)
        ll = jax.vmap(lambda p, d, o: _observation_log_prob(model, p, d, o))(phi, designs, jnp.asarray(data.values)) if want_ll else y
        return y, jnp.where(mask, ll, 0.0)

    num = next(iter(samples.values())).shape[0]
    params = {k: jnp.asarray(v) for k, v in samples.items()}
    y, ll = jax.lax.map(one, (jax.random.split(key, num), params), batch_size=min(_BATCH, num))
    return np.asarray(y), (np.asarray(ll) if want_ll else None)
