"""Training the NN-NLME VAE: Adam on the ELBO summed over individuals, over the population
parameters (unconstrained z) and the encoder together, from several starts under `vmap`.

For individual i, with q_i = N(m_i(θ) + μ_i, diag σ_i²) from the encoder,

    ELBO_i(θ, ψ) = E_{q_i}[ log p(y_i | φ) + log p(φ | θ) ] + H[q_i]
                 ≤ log p(y_i | θ),

estimated with `num_samples` reparametrised draws φ = m_i(θ) + μ_i + σ_i ε (H[q_i] in closed
form). The sum over individuals is maximised; the bound is tight when q_i is the exact
posterior, so the optimum in θ is then the maximum-likelihood estimate.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from ._vae_model import Layout, encode_all, log_likelihood

__all__ = ["elbo", "train_starts"]

#: Adam rate of the per-individual offsets of q in the local (semi-amortized) phase.
LOCAL_LEARNING_RATE = 0.02


def elbo(layout: Layout, model, z: dict, encoder, inputs, data, designs, eps: Float[Array, "S N r"], local=None) -> Float[Array, " N"]:
    """The per-individual ELBO estimate `(N,)` with standard normal draws `eps` (`local`: the
    per-individual offsets of q in a semi-amortized fit)."""
    _, phi, dists, loc = layout.evaluate(z, data)
    mu, log_s = encode_all(encoder, inputs, local)
    phi_lat = loc + mu + jnp.exp(log_s) * eps  # (S, N, r)
    joint = log_likelihood(model, designs, data.values, layout.full(phi, phi_lat)) + layout.log_prior(dists, phi_lat)
    entropy = jnp.sum(log_s, axis=-1) + 0.5 * layout.latent_dim * (1.0 + math.log(2 * math.pi))
    return jnp.mean(joint, axis=0) + entropy


def _optimizer(num_steps: int, local_steps: int, lr_theta: float, lr_encoder: float, labels) -> optax.GradientTransformation:
    """Adam with a warm-up then cosine decay to 1%: θ over all steps, the encoder over the
    first `num_steps` (then frozen), the per-individual offsets over the last `local_steps`."""

    def schedule(lr, steps):
        warmup = min(100, steps // 10 + 1)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), end_value=0.01 * lr)

    zero = optax.constant_schedule(0.0)
    encoder = optax.join_schedules([schedule(lr_encoder, num_steps), zero], [num_steps])
    local = optax.join_schedules([zero, schedule(LOCAL_LEARNING_RATE, local_steps)], [num_steps]) if local_steps else zero
    return optax.multi_transform(
        {"theta": optax.adam(schedule(lr_theta, num_steps + local_steps)),
         "encoder": optax.chain(optax.clip_by_global_norm(10.0), optax.adam(encoder)), "local": optax.adam(local)},
        labels,
    )  # fmt: skip


@eqx.filter_jit
def train_starts(
    layout: Layout, model, z0: dict, encoders, inputs, data, designs, keys, *, num_steps: int, num_samples: int,
    lr_theta: float, lr_encoder: float, local_steps: int = 0,
):
    """Adam from every start at once (`vmap` over the leading axis of `z0`, `encoders`, `keys`).

    With `local_steps`, a second phase follows: the encoder is frozen and each individual's q
    gets its own offsets `(dloc, dlog_scale)` (semi-amortized variational inference), trained
    with θ. **Returns:** `(z, encoders, local, history)`: the final unconstrained population
    values, encoders and offsets (zeros without the local phase) of every start, and the ELBO
    (summed over individuals) at every step, `(starts, num_steps + local_steps)`. The ELBO is
    maximised as its mean per individual, so the step sizes do not depend on N.
    """
    n = data.num_individuals

    def one(z, encoder, key):
        local = (jnp.zeros((n, layout.latent_dim)), jnp.zeros((n, layout.latent_dim)))
        params, static = eqx.partition((z, encoder, local), eqx.is_inexact_array)
        labels = ("theta", jax.tree.map(lambda _: "encoder", params[1]), ("local", "local"))
        opt = _optimizer(num_steps, local_steps, lr_theta, lr_encoder, labels)

        def loss(p, k):
            zz, enc, loc = eqx.combine(p, static)
            eps = jax.random.normal(k, (num_samples, n, layout.latent_dim))
            total = jnp.sum(elbo(layout, model, zz, enc, inputs, data, designs, eps, loc))
            return -total / n, total

        def step(carry, k):
            p, state = carry
            (_, total), grads = jax.value_and_grad(loss, has_aux=True)(p, k)
            grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)
            updates, state = opt.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), total

        (p, _), history = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, num_steps + local_steps))
        return (*eqx.combine(p, static), history)

    return eqx.filter_vmap(one)(z0, encoders, keys)
