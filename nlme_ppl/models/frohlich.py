"""Single-cell mRNA transfection models (Fröhlich et al. 2018; Arruda et al. 2024, Suppl. A.1)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float

from ._individual import IndividualModel

__all__ = ["frohlich_simple", "frohlich_simple_solution", "FROHLICH_SIMPLE_PRIOR"]

#: Training prior of `frohlich_simple`: name -> (mean, variance), all on log scale.
FROHLICH_SIMPLE_PRIOR = {
    "delta": (-3.0, 5.0),
    "gamma": (-3.0, 5.0),
    "k_m0_scale": (5.0, 11.0),
    "t0": (0.0, 2.0),
    "offset": (0.0, 6.0),
    "sigma": (-1.0, 2.0),
}

#: Observation times of the experiment: every 10 minutes from 10 min to 30 h (180 points).
FROHLICH_TIMES = np.arange(1, 181) / 6.0


def _one_minus_exp_over_x(x):
    """(1 - e^{-x}) / x for x >= 0, accurate at x -> 0 (value 1) and safe under autodiff."""
    small = x < 1e-4
    x_safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 - x / 2.0 + x * x / 6.0, -jnp.expm1(-x_safe) / x_safe)


def frohlich_simple_solution(
    times: Float[Array, " T"], delta, gamma, k_m0_scale, t0
) -> Float[Array, " T"]:
    """Protein level p(t) of the two-state model, on the natural scale.

    dm/dt = -δ m, dp/dt = k m - γ p, with m(t0) = 1, p(t0) = 0, k = `k_m0_scale`; p = 0 before t0.
    For τ = t - t0 > 0, p = k/(δ-γ) (e^{-γτ} - e^{-δτ}) = k τ e^{-min(δ,γ)τ} (1-e^{-|δ-γ|τ})/(|δ-γ|τ),
    which is the form used here: symmetric in (δ, γ), finite at δ = γ, and free of overflow.
    """
    tau = jnp.maximum(times - t0, 0.0)
    lo = jnp.minimum(delta, gamma)
    gap = jnp.abs(delta - gamma)
    return k_m0_scale * tau * jnp.exp(-lo * tau) * _one_minus_exp_over_x(gap * tau)


def _frohlich_simple_program(design, obs=None):
    p = {
        name: numpyro.sample(name, dist.Normal(mean, float(np.sqrt(var))))
        for name, (mean, var) in FROHLICH_SIMPLE_PRIOR.items()
    }
    protein = frohlich_simple_solution(
        design["times"], jnp.exp(p["delta"]), jnp.exp(p["gamma"]), jnp.exp(p["k_m0_scale"]), jnp.exp(p["t0"])
    )
    mu = jnp.log(protein + jnp.exp(p["offset"]))
    numpyro.sample("obs", dist.Normal(mu, jnp.exp(p["sigma"])).mask(design["mask"]).to_event(1), obs=obs)


def frohlich_simple(times=None) -> IndividualModel:
    """The simple mRNA-transfection model (Fröhlich et al. 2018; Arruda et al. 2024, A.1).

    Individual parameters, all on the log scale: `delta` (mRNA degradation, 1/h), `gamma`
    (protein degradation, 1/h), `k_m0_scale` (translation rate × initial mRNA), `t0`
    (transfection time, h), `offset` (background fluorescence), `sigma` (noise SD).

    Observations: y(t) = log(p(t) + offset) + sigma·ε at t = 1/6, 2/6, …, 30 h.

    δ and γ enter the solution symmetrically, so individual posteriors are bimodal; the model
    declares them `exchangeable`, so estimators learn the sorted pair and sample both modes
    exactly by symmetry. Population
    inference tells the two apart only through prior knowledge (mRNA usually decays faster
    than protein), e.g. priors on `mean[delta]` and `mean[gamma]` in
    [`populations.gaussian`][nlme_ppl.populations.gaussian].
    """
    t = FROHLICH_TIMES if times is None else np.asarray(times, float)
    return IndividualModel(
        _frohlich_simple_program,
        {"times": t},
        name="frohlich_simple",
        description="Fröhlich et al. (2018) two-state mRNA transfection model, closed form.",
        exchangeable=(("delta", "gamma"),),
    )
