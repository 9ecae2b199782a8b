"""The marginal likelihood of a VAE fit by importance sampling with the encoder as proposal, and
the observed Fisher information of the population parameters from the same estimate.

For individual i the proposal is a defensive mixture of the encoder's Gaussian, g_i =
(1 − α) N(μ_i, σ_i²) + α N(μ_i, (cσ_i)²) (α = 0.2, c = 3: heavier tails than q_i, so the
weights stay bounded where q_i is too narrow). With M draws φ_ij ~ g_i, fixed once,

    log p̂(y_i | θ) = logsumexp_j [ log p(y_i | φ_ij) + log p(φ_ij | θ) − log g_i(φ_ij) ] − log M.

Its sum over individuals is the log-likelihood on the absolute scale (no constant dropped), so
OFV/AIC/BIC compare with the other engines and with R `nlme`. Its Monte Carlo SE is the
delta-method SE of the log of a mean of weights, summed in quadrature over individuals.

The draws φ_ij do not depend on θ, so log p̂ is a smooth function of θ. Its autodiff Hessian
is the Monte Carlo estimate of the observed information (Louis' identity with self-normalised
weights: E_w[∇² ℓ] + Cov_w[∇ℓ]), the per-individual gradients its scores (NN-NLME takes the
same estimate with draws from p(φ | θ); the encoder's proposal needs far fewer draws).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from ._vae_model import Layout, encode_all, log_likelihood

__all__ = ["ISDraws", "draw_proposal", "information", "marginal"]

MIX_WEIGHT, MIX_WIDEN = 0.2, 3.0


class ISDraws(eqx.Module):
    """`phi_lat` `(M, N, r)` latent draws from the proposal and their `log_g` `(M, N)`."""

    phi_lat: Float[Array, "M N r"]
    log_g: Float[Array, "M N"]


def _log_normal(x, loc, scale):
    return jnp.sum(-0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1)


@eqx.filter_jit
def draw_proposal(layout: Layout, z: dict, encoder, inputs, data, key, num_draws: int, local=None) -> ISDraws:
    """`num_draws` draws per individual from the defensive mixture around the encoder's q_i
    (with the per-individual offsets `local` of a semi-amortized fit)."""
    _, _, _, loc = layout.evaluate(z, data)
    mu, log_s = encode_all(encoder, inputs, local)
    centre, scale = loc + mu, jnp.exp(log_s)
    k_eps, k_mix = jax.random.split(key)
    eps = jax.random.normal(k_eps, (num_draws, *centre.shape))
    wide = jax.random.bernoulli(k_mix, MIX_WEIGHT, (num_draws, centre.shape[0], 1))
    phi_lat = centre + jnp.where(wide, MIX_WIDEN, 1.0) * scale * eps
    log_g = jnp.logaddexp(
        math.log1p(-MIX_WEIGHT) + _log_normal(phi_lat, centre, scale), math.log(MIX_WEIGHT) + _log_normal(phi_lat, centre, MIX_WIDEN * scale)
    )
    return ISDraws(phi_lat, log_g)


def _log_weights(layout: Layout, model, z: dict, draws: ISDraws, data, designs) -> Float[Array, "M N"]:
    _, phi, dists, _ = layout.evaluate(z, data)
    lik = log_likelihood(model, designs, data.values, layout.full(phi, draws.phi_lat))
    return lik + layout.log_prior(dists, draws.phi_lat) - draws.log_g


@eqx.filter_jit
def marginal(layout: Layout, model, z: dict, draws: ISDraws, data, designs) -> tuple[Float[Array, " N"], Float[Array, " N"]]:
    """Per-individual log p̂(y_i | θ) `(N,)` and its Monte Carlo SE `(N,)`."""
    lw = _log_weights(layout, model, z, draws, data, designs)
    lw = jnp.where(jnp.isnan(lw), -jnp.inf, lw)
    m = lw.shape[0]
    value = jax.nn.logsumexp(lw, axis=0) - math.log(m)
    w = jax.nn.softmax(lw, axis=0)
    se = jnp.sqrt(jnp.maximum(m * jnp.sum(w**2, axis=0) - 1.0, 0.0) / m)
    return value, se


def _chunk_terms(layout, model, zflat, unravel, draws, data, designs, idx, keep):
    """Scores `(c, d)` and the Hessian `(d, d)` of the individuals `idx` (`keep`
    masks padding). The whole population runs (its covariates are per individual); only the
    chunk's likelihoods are evaluated."""
    sub_designs = jax.tree.map(lambda x: x[idx], designs)
    values = data.values[idx]

    def per_individual(zf):
        z = unravel(zf)
        _, phi, dists, _ = layout.evaluate(z, data)
        lat_full = jnp.zeros((draws.phi_lat.shape[0], data.num_individuals, layout.latent_dim)).at[:, idx].set(draws.phi_lat)
        prior = layout.log_prior(dists, lat_full)[:, idx]
        lik = log_likelihood(model, sub_designs, values, layout.full(phi[idx], draws.phi_lat))
        lw = lik + prior - draws.log_g
        lw = jnp.where(jnp.isnan(lw), -jnp.inf, lw)
        return jnp.where(keep, jax.nn.logsumexp(lw, axis=0) - math.log(lw.shape[0]), 0.0)

    scores = jax.jacfwd(per_individual)(zflat)
    hess = jax.hessian(lambda zf: jnp.sum(per_individual(zf)))(zflat)
    return scores, hess


_chunk_jit = eqx.filter_jit(_chunk_terms)


def information(layout: Layout, model, z: dict, draws: ISDraws, data, designs, *, max_elements: int = 2_000_000):
    """The Hessian of Σ_i log p̂(y_i | θ) in z and the per-individual scores, in chunks of
    individuals (at most `max_elements` draw-observation pairs per chunk).

    **Returns:** `(zflat, hessian (d, d), scores (N, d))`, numpy float64.
    """
    zflat, unravel = ravel_pytree(z)
    n = data.num_individuals
    m = draws.phi_lat.shape[0]
    size = int(max(1, min(n, max_elements // max(1, m * data.values.shape[1]))))
    hess = np.zeros((zflat.size, zflat.size))
    scores = np.zeros((n, zflat.size))
    for start in range(0, n, size):
        idx = np.arange(start, start + size)
        keep = idx < n
        idx = np.where(keep, idx, n - 1)
        sub = ISDraws(draws.phi_lat[:, idx], draws.log_g[:, idx])
        s, h = _chunk_jit(layout, model, zflat, unravel, sub, data, designs, jnp.asarray(idx), jnp.asarray(keep))
        hess += np.asarray(h)
        scores[idx[keep]] = np.asarray(s)[keep]
    return np.asarray(zflat), hess, scores
