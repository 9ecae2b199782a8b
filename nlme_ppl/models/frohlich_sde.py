"""The stochastic single-cell model: the chemical Langevin equation of the two-state model
(Fröhlich et al. 2018; Arruda et al. 2024, Suppl. A.1)."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import lineax
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray

from ._individual import IndividualModel
from ._prior import with_prior
from .frohlich import FROHLICH_TIMES, sample_prior

__all__ = ["FROHLICH_SDE_PRIOR", "frohlich_sde", "frohlich_sde_path"]

#: Training prior of `frohlich_sde`: name -> (mean, variance), all on log scale (Arruda et al. 2024).
FROHLICH_SDE_PRIOR = {
    "delta": (-3.0, 5.0),
    "gamma": (-3.0, 5.0),
    "k": (-1.0, 5.0),
    "m0": (5.0, 5.0),
    "scale": (0.0, 5.0),
    "t0": (0.0, 2.0),
    "offset": (1.0, 5.0),
    "sigma": (-3.0, 2.0),
}


def _drift(t, x, a):
    delta, gamma, k = a
    m, p = jnp.maximum(x[0], 0.0), jnp.maximum(x[1], 0.0)
    return jnp.stack([-delta * m, k * m - gamma * p])


def _diffusion(t, x, a):
    delta, gamma, k = a
    m, p = jnp.maximum(x[0], 0.0), jnp.maximum(x[1], 0.0)
    return lineax.DiagonalLinearOperator(jnp.sqrt(jnp.stack([delta * m, k * m + gamma * p])))


def frohlich_sde_path(
    key: PRNGKeyArray, times: Float[Array, " T"], delta, gamma, k, m0, t0, *, dt: float = 0.01
) -> Float[Array, " T"]:
    """One path of the protein copy number p(t) of the chemical Langevin equation

        dm = -δ m dt + √(δ m) dW₁,    dp = (k m - γ p) dt + √(k m + γ p) dW₂,

    from m(t0) = m0, p(t0) = 0 (p = 0 before t0), by Euler–Maruyama (diffrax `Euler`, step
    `dt` hours, values at `times` interpolated linearly between steps).

    The Brownian path is drawn from `key` alone (`diffrax.UnsafeBrownianPath`): every
    simulation that passes its own key gets its own path. Copy numbers cannot be negative,
    so the drift and diffusion read the state truncated at 0 (mRNA that reaches 0 stays
    degraded; protein is pushed back by production), and the returned p is truncated at 0.
    """
    dtype = jnp.result_type(float)
    times = jnp.asarray(times, dtype)
    args = tuple(jnp.asarray(a, dtype) for a in (delta, gamma, k))
    t0 = jnp.asarray(t0, dtype)
    tau = jax.lax.cummax(jnp.maximum(times - t0, 0.0))  # time since transfection, non-decreasing
    t1 = tau[-1] + dt
    bm = diffrax.UnsafeBrownianPath(shape=(2,), key=key, levy_area=diffrax.BrownianIncrement)
    terms = diffrax.MultiTerm(diffrax.ODETerm(_drift), diffrax.ControlTerm(_diffusion, bm))
    x0 = jnp.stack([jnp.asarray(m0, dtype), jnp.zeros((), dtype)])
    max_steps = int(np.ceil(float(np.max(FROHLICH_TIMES)) / dt)) + 2
    sol = diffrax.diffeqsolve(
        terms, diffrax.Euler(), 0.0, t1, dt, x0, args, saveat=diffrax.SaveAt(ts=tau),
        adjoint=diffrax.DirectAdjoint(), max_steps=max(max_steps, 16), throw=False,
    )
    ok = sol.result == diffrax.RESULTS.successful
    p = jnp.where(times > t0, jnp.maximum(sol.ys[:, 1], 0.0), 0.0)
    return jnp.where(ok, p, jnp.nan)


def _frohlich_sde_program(design, obs=None):
    p = sample_prior(FROHLICH_SDE_PRIOR)
    e = {n: jnp.exp(v) for n, v in p.items()}
    protein = frohlich_sde_path(numpyro.prng_key(), design["times"], e["delta"], e["gamma"], e["k"], e["m0"], e["t0"])
    mu = jnp.log(e["scale"] * protein + e["offset"])
    numpyro.sample("obs", dist.Normal(mu, e["sigma"]).mask(design["mask"]).to_event(1), obs=obs)


def frohlich_sde(times=None, *, prior=None) -> IndividualModel:
    """The stochastic two-state transfection model: mRNA m and protein p follow the chemical
    Langevin equation (see [`frohlich_sde_path`][nlme_ppl.models.frohlich_sde.frohlich_sde_path]), observed as
    y(t) = log(scale·p(t) + offset) + sigma·ε at t = 1/6, 2/6, …, 30 h.

    Parameters, all on the log scale: `delta`, `gamma` (mRNA and protein degradation, 1/h),
    `k` (translation, 1/h), `m0` (initial mRNA copies), `scale` (fluorescence per protein),
    `t0` (transfection time, h), `offset` (background), `sigma` (noise SD).

    Unlike the ODE models the copy numbers matter: intrinsic noise scales as 1/√copies, which
    is what identifies `m0` and `scale` separately. The likelihood is intractable (the path is
    hidden randomness), so the model is `tractable=False`: amortized inference only. In the
    limit of many copies the mean path is the ODE solution
    `frohlich_simple_solution` (in `nlme_ppl.models.frohlich`) with k·m0 as `k_m0_scale`.

    Training prior: `prior={name: (mean, sd)}` (log scale) replaces those parameters' training priors by
    `Normal(mean, sd)` ([`with_prior`][nlme_ppl.models.with_prior]); the fingerprint changes with it.
    """
    t = FROHLICH_TIMES if times is None else np.asarray(times, float)
    if t.size and float(np.max(t)) > float(np.max(FROHLICH_TIMES)):
        raise ValueError(f"frohlich_sde simulates up to {float(np.max(FROHLICH_TIMES))} h; got times up to {float(np.max(t))} h.")
    return with_prior(IndividualModel(
        _frohlich_sde_program,
        {"times": t},
        name="frohlich_sde",
        description="Fröhlich et al. (2018) two-state model as a chemical Langevin SDE (diffrax Euler–Maruyama, dt = 0.01 h).",
        tractable=False,
    ), prior)
