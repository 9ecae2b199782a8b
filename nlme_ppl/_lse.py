"""The surrogate's fused fast path: Σ_i logsumexp_j (s_ij · a_i + b_i - log p_train(φ_ij)) in one
pass over the sufficient statistics, with a custom JVP (see `nlme_ppl.likelihood`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from ._sharding import individual_sharding, inside_mapped_transform

__all__ = ["log_mean_exp", "lse_linear", "lse_linear_jit"]

def log_mean_exp(log_w):
    """log of the mean of exp(`log_w`) along the last axis, and its Monte Carlo SE by the delta
    method: the relative variance of a mean of P weights is (P Σ w̃² − 1) / P for the normalised
    weights w̃. Returns two NumPy arrays."""
    log_w = np.asarray(log_w, np.float64)
    m = log_w.shape[-1]
    log_sum = logsumexp(log_w, axis=-1)  # SciPy's: NumPy in, NumPy out (JAX's compiled a program per shape)
    norm = np.exp(log_w - log_sum[..., None])
    return log_sum - np.log(m), np.sqrt(np.maximum(np.sum(norm**2, axis=-1) - 1.0 / m, 0.0))


# The Gaussian fast path's log-likelihood is Σ_i logsumexp_j (s_ij · a_i + b_i - log p_train(φ_ij))
# with sufficient statistics s (N, M, C). Its value and gradient are bound by memory traffic:
# at N·M = 10⁶ the float64 statistics are 96 MB (k = 6, diagonal), and autodiff reads them twice
# (once for the value, once for the gradient in a). `lse_linear` reads them once: a loop over
# blocks of `_BLOCK` individuals (small enough to stay in cache) computes the log-sum-exp and the
# softmax-weighted mean statistics together, and its JVP is linear in those means. Second
# derivatives (the Hessians of `fit_map`) differentiate the loop itself.

#: Individuals per block of `lse_linear` (16 was the fastest of 16, 64, 256 and 1000 at N·M = 10⁶, k = 6).
_BLOCK = 16


def _lse_core(stats, coef, const, log_prior):
    """logsumexp_j and the softmax-weighted mean of the statistics, for a block of individuals."""
    s = jnp.einsum("nmc,nc->nm", stats, coef) + const[:, None] - log_prior
    top = jax.lax.stop_gradient(jnp.max(s, axis=1, keepdims=True))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    e = jnp.exp(s - top)
    z = jnp.sum(e, axis=1)
    return top[:, 0] + jnp.log(z), jnp.einsum("nm,nmc->nc", e, stats) / z[:, None]


def _lse_blocks(stats, coef, const, log_prior):
    """`_lse_local` on all individuals, each device looping over its own share of them when the
    individuals are split over several devices (`nlme_ppl._sharding`): the per-individual
    results are those of one device, and no statistics cross devices."""
    sharding = individual_sharding(stats.shape[0])
    if sharding is None or inside_mapped_transform():
        return _lse_local(stats, coef, const, log_prior)
    spec = sharding.spec
    local = jax.shard_map(_lse_local, mesh=sharding.mesh, in_specs=(spec,) * 4, out_specs=(spec, spec), check_vma=False)
    return local(stats, coef, const, log_prior)


def _lse_local(stats, coef, const, log_prior):
    n = stats.shape[0]
    if n <= _BLOCK:
        return _lse_core(stats, coef, const, log_prior)

    def body(b, out):
        # the last block is shifted back to end at row n: its overlap is recomputed identically
        start = jnp.minimum(b * _BLOCK, n - _BLOCK)
        take = lambda x: jax.lax.dynamic_slice_in_dim(x, start, _BLOCK)  # noqa: E731
        lse, mean = _lse_core(take(stats), take(coef), take(const), take(log_prior))
        return jax.lax.dynamic_update_slice_in_dim(out[0], lse, start, 0), jax.lax.dynamic_update_slice_in_dim(out[1], mean, start, 0)

    init = (jnp.zeros(n, stats.dtype), jnp.zeros((n, stats.shape[-1]), stats.dtype))
    return jax.lax.fori_loop(0, -(-n // _BLOCK), body, init)


@jax.custom_jvp
def lse_linear(stats, coef, const, log_prior):
    """logsumexp_j (stats[i, j] · coef[i] + const[i] - log_prior[i, j]), shape `(N,)`."""
    return _lse_blocks(stats, coef, const, log_prior)[0]


def _lse_linear_jvp(primals, tangents):
    from jax.custom_derivatives import SymbolicZero

    stats, coef, const, log_prior = primals
    t_stats, t_coef, t_const, t_log_prior = tangents
    lse, mean = _lse_blocks(stats, coef, const, log_prior)
    if not (isinstance(t_stats, SymbolicZero) and isinstance(t_log_prior, SymbolicZero)):
        # derivatives in the draws themselves: not used by inference, but keep them correct
        w = jnp.exp(jnp.einsum("nmc,nc->nm", stats, coef) + const[:, None] - log_prior - lse[:, None])
        extra = 0.0
        if not isinstance(t_stats, SymbolicZero):
            extra = extra + jnp.einsum("nm,nmc,nc->n", w, t_stats, coef)
        if not isinstance(t_log_prior, SymbolicZero):
            extra = extra - jnp.sum(w * t_log_prior, axis=1)
    else:
        extra = 0.0
    t = jnp.zeros_like(lse) + extra
    if not isinstance(t_coef, SymbolicZero):
        t = t + jnp.sum(mean * t_coef, axis=-1)
    if not isinstance(t_const, SymbolicZero):
        t = t + t_const
    return lse, t


lse_linear.defjvp(_lse_linear_jvp, symbolic_zeros=True)
# jitted so that NumPyro's eager passes over the surrogate (initialisation, `log_likelihood`)
# reuse one compiled loop instead of tracing it anew each call; inside a jit it is inlined
lse_linear_jit = jax.jit(lse_linear)
