"""The algebra the closed-form PK models share: doses on a time grid, sums of exponential modes,
the steady-state geometric series, and superposition with resets.

A linear PK model's response to a unit bolus is a sum of exponential modes Σ_k c_k e^{-λ_k τ}
(τ = time since the dose). A zero-order infusion of rate R and duration D is that response
integrated over the infusion. A steady-state dose (NONMEM `SS` with `II`; the last of an
infinite series every II before it) adds the geometric series of the earlier doses,
Σ_{n≥1} f(τ + n·II): for a bolus Σ_k c_k e^{-λ_k τ} / (e^{λ_k II} - 1), and for an infusion
shorter than II, whose earlier doses have all ended, Σ_k R c_k/λ_k (1 - e^{-λ_k D})
e^{-λ_k (τ - D + II)} / (1 - e^{-λ_k II}). A dose acts from its time (exclusive: an observation
at a dose's time is taken before it) until its `end` (a reset; inclusive, likewise).
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = [
    "bolus_series", "dose_grid", "infusion_series", "live", "modal_bolus", "modal_infusion", "oral_1cmt_ss_extra",
    "two_compartment_rates",
]


def dose_grid(times, dose_times, dose_amounts, dose_rates):
    """Time since each dose `(T, D)` (0 before it), whether it has started, and the dose's
    amount, rate and infusion duration broadcast to `(1, D)`."""
    tau = times[:, None] - dose_times[None, :]
    pos = tau > 0
    amount, rate = dose_amounts[None, :], dose_rates[None, :]
    duration = amount / jnp.where(rate > 0, rate, 1.0)
    return jnp.where(pos, tau, 0.0), pos, amount, rate, duration


def live(times, pos, dose_mask, dose_end):
    """`(T, D)`: the doses that act at each time: started, not padding, and (with `dose_end`)
    not yet ended by a reset."""
    out = pos & dose_mask[None, :]
    if dose_end is not None:
        out = out & (times[:, None] <= dose_end[None, :])
    return out


def _safe_ii(dose_ii):
    """`(1, D)` intervals with the non-steady-state doses' 0 replaced by 1 (their series term is
    zeroed by `on`), and `on`: whether the dose is at steady state."""
    ii = dose_ii[None, :]
    on = ii > 0
    return jnp.where(on, ii, 1.0), on


def modal_bolus(tau, modes):
    """Σ_k c_k e^{-λ_k τ} for `modes` [(c_k, λ_k)]: the response to a unit bolus."""
    return sum(c * jnp.exp(-lam * tau) for c, lam in modes)


def bolus_series(tau, modes, dose_ii):
    """The earlier doses of a steady-state bolus series, Σ_k c_k e^{-λ_k τ} / (e^{λ_k II} - 1),
    where `dose_ii > 0`; else 0."""
    ii, on = _safe_ii(dose_ii)
    return jnp.where(on, sum(c * jnp.exp(-lam * tau) / jnp.expm1(lam * ii) for c, lam in modes), 0.0)


def modal_infusion(tau, rate, duration, modes):
    """The response to an infusion of `rate` for `duration`: Σ_k R c_k/λ_k (1 - e^{-λ_k min(τ, D)})
    e^{-λ_k max(τ - D, 0)}."""
    on_for, after = jnp.minimum(tau, duration), jnp.maximum(tau - duration, 0.0)
    return sum(rate * c / lam * -jnp.expm1(-lam * on_for) * jnp.exp(-lam * after) for c, lam in modes)


def infusion_series(tau, rate, duration, modes, dose_ii):
    """The earlier infusions of a steady-state series (D < II, checked by `Doses`, so all of
    them have ended): Σ_k R c_k/λ_k (1 - e^{-λ_k D}) e^{-λ_k (τ - D + II)} / (1 - e^{-λ_k II}),
    where `dose_ii > 0`; else 0."""
    ii, on = _safe_ii(dose_ii)
    d = jnp.minimum(duration, ii)  # D < II for a steady-state infusion; the min keeps padding finite
    series = sum(rate * c / lam * -jnp.expm1(-lam * d) * jnp.exp(-lam * (tau - d + ii)) / -jnp.expm1(-lam * ii) for c, lam in modes)
    return jnp.where(on, series, 0.0)


def oral_1cmt_ss_extra(tau, ka, ke, dose_ii):
    """Σ_{n≥1} (e^{-ke τ_n} - e^{-ka τ_n}) / (ka - ke) with τ_n = τ + n·II (the earlier doses of an
    oral steady-state series, per unit of A·ka/V), where `dose_ii > 0`; else 0.

    It is the divided difference -(h(ka) - h(ke)) / (ka - ke) of h(k) = e^{-kτ} / (e^{k II} - 1).
    Where ka and ke agree to a relative 1e-5 the difference cancels, and -h'((ka + ke)/2) is
    used instead (its error is of order (1e-5 · k(τ + II))², far below float64 rounding there)."""
    ii, on = _safe_ii(dose_ii)
    h = lambda k: jnp.exp(-k * tau) / jnp.expm1(k * ii)  # noqa: E731
    close = jnp.abs(ka - ke) < 1e-5 * jnp.maximum(ka, ke)
    diff = jnp.where(close, 1.0, ka - ke)
    direct = (h(ke) - h(ka)) / diff
    m = (ka + ke) / 2
    x = m * ii
    deriv = jnp.exp(-m * tau) * (tau / jnp.expm1(x) + ii / (jnp.expm1(x) * -jnp.expm1(-x)))
    return jnp.where(on, jnp.where(close, deriv, direct), 0.0)


def two_compartment_rates(CL, V1, Q, V2):
    """The disposition rates α > β of a two-compartment model (roots of λ² - (k10 + k12 + k21) λ
    + k10 k21 with k10 = CL/V1, k12 = Q/V1, k21 = Q/V2), and the unit-bolus central
    concentration's modes [(c_α, α), (c_β, β)]: c_α = (α - k21) / ((α - β) V1), c_β = (k21 - β) / ((α - β) V1)."""
    k10, k12, k21 = CL / V1, Q / V1, Q / V2
    total = k10 + k12 + k21
    disc = jnp.sqrt(jnp.maximum(total**2 - 4 * k10 * k21, 0.0))
    alpha, beta = (total + disc) / 2, (total - disc) / 2
    ca, cb = (alpha - k21) / (alpha - beta), (k21 - beta) / (alpha - beta)
    return alpha, beta, k21, [(ca / V1, alpha), (cb / V1, beta)]
