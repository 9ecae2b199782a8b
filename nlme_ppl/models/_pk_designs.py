"""Pieces of the PK models' training design priors that the oral and IV priors share: dose
records (steady state, resets) and limits of quantification."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["add_dose_records", "add_lloq"]


def add_dose_records(key, out: dict, interval, n_doses, *, ss_probability: float, reset_probability: float) -> dict:
    """`out` (batched designs with `dose_times`, `dose_mask`) with `dose_ii` and `dose_end`:

    - with probability `ss_probability` an individual's first dose is at steady state (NONMEM
      SS=1, II = its dosing `interval`, `(num, 1)`): the last of an infinite series before it;
    - with probability `reset_probability`, where it has two doses or more, one of its doses after
      the first (uniform) resets the system (EVID=4): the doses before it stop acting at its time.
    """
    num, nd = out["dose_times"].shape
    k_ss, k_reset, k_at = jax.random.split(key, 3)
    idx = jnp.arange(nd)[None, :]
    ss = jax.random.uniform(k_ss, (num, 1)) < ss_probability
    out["dose_ii"] = jnp.where(ss & (idx == 0) & out["dose_mask"], interval, 0.0)
    reset = (jax.random.uniform(k_reset, (num, 1)) < reset_probability) & (n_doses[:, None] >= 2)
    at = 1 + jnp.floor(jax.random.uniform(k_at, (num, 1)) * (n_doses[:, None] - 1)).astype(jnp.int32)
    t_reset = jnp.take_along_axis(out["dose_times"], jnp.minimum(at, nd - 1), axis=1)
    out["dose_end"] = jnp.where(reset & (idx < at) & out["dose_mask"], t_reset, jnp.inf)
    return out


def add_lloq(key, out: dict, *, probability: float, limits: tuple[float, float]) -> dict:
    """`out` with `lloq` `(num, T)`: with `probability` an individual's assay has a limit of
    quantification, log-uniform in `limits` (one per individual); the others have none (-inf)."""
    num, no = out["times"].shape
    lo, hi = np.log(limits[0]), np.log(limits[1])
    k_lloq, k_has = jax.random.split(key)
    lloq = jnp.exp(jax.random.uniform(k_lloq, (num, 1), minval=lo, maxval=hi))
    has = jax.random.uniform(k_has, (num, 1)) < probability
    out["lloq"] = jnp.broadcast_to(jnp.where(has, lloq, -jnp.inf), (num, no))
    return out
