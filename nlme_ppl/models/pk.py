"""Pharmacokinetic models with dosing events: one-compartment oral absorption, closed form.

Doses reach the simulator through the design (`dose_times`, `dose_amounts`, `dose_rates`,
`dose_cmt`, `dose_mask`; see [`Doses`][nlme_ppl.Doses]) and act by superposition: the model
is linear in the doses, so the concentration is a sum of one closed-form term per dose.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..data import CENTRAL, DEPOT
from ._individual import IndividualModel
from ._prior import with_prior
from ._pk_program import PK_ERROR_PRIOR as PK_ERROR_PRIOR, SD_FLOOR as _SD_FLOOR, error_name, pk_model  # re-exported
from ._pk_designs import add_dose_records, add_lloq
from ._pk_closed_forms import bolus_series, dose_grid, infusion_series, live, oral_1cmt_ss_extra, two_compartment_rates
from .frohlich import bateman

__all__ = [
    "PK_ORAL_1CMT_PRIOR",
    "PK_ORAL_2CMT_PRIOR",
    "one_compartment_concentration",
    "pk_design_prior",
    "pk_oral_1cmt",
    "pk_oral_2cmt",
    "two_compartment_concentration",
]

#: Training prior of the structural parameters of `pk_oral_1cmt` (log scale): name -> (mean, SD).
#: Units: ka in 1/h, CL in L/h, V in L, with doses in mg and concentrations in mg/L.
PK_ORAL_1CMT_PRIOR = {"ka": (0.0, 1.0), "CL": (1.0, 1.0), "V": (3.5, 1.0)}

#: Design prior of the shipped estimator: dose numbers, intervals, amounts and sampling.
PK_DESIGN = {
    "max_doses": 3,  # 1, 2 or 3 oral doses, the first at t = 0
    "interval_h": (8.0, 24.0),  # uniform dosing interval
    "amount_mg": (50.0, 1000.0),  # log-uniform, the same amount for every dose of a regimen
    "max_observations": 16,  # 6..16 samples per individual
    "follow_up_h": (12.0, 36.0),  # sampling continues this long after the last dose (uniform)
    "predose_probability": 0.3,  # chance of a sample at t = 0 before the first dose
    # with censoring=True only: the chance that an individual's assay has a limit of quantification,
    # and the limit (log-uniform, mg/L, one per individual); the others have none (LLOQ = -inf)
    "lloq_probability": 0.7,
    "lloq_mg_l": (0.05, 2.0),
    # with steady_state=True only: the chance that the first dose is at steady state (SS=1, II = the
    # interval), and the chance of a reset-and-dose (EVID=4) at a later dose
    "ss_probability": 0.3,
    "reset_probability": 0.1,
}


def one_compartment_concentration(
    times: Float[Array, " T"], dose_times, dose_amounts, dose_rates, dose_cmt, dose_mask, ka, CL, V, *, dose_ii=None, dose_end=None
) -> Float[Array, " T"]:
    """Concentration of a one-compartment model with first-order absorption and elimination.

    Each dose adds, for τ = t - t_dose > 0 (ke = CL / V):

    - oral bolus (cmt 1, rate 0): A·ka / V · (e^{-ke τ} - e^{-ka τ}) / (ka - ke);
    - IV bolus (cmt 2, rate 0): A / V · e^{-ke τ};
    - zero-order infusion into the central compartment (cmt 2, rate R > 0, duration A / R):
      R / CL · (1 - e^{-ke min(τ, A/R)}) · e^{-ke max(τ - A/R, 0)}.

    With `dose_ii` (`(D,)`, > 0 for a steady-state dose, 0 otherwise) a steady-state dose adds
    the geometric series of its earlier doses (see `nlme_ppl.models._pk_closed_forms`); with
    `dose_end` (`(D,)`, +inf for none) a dose stops acting after a reset at that time.

    A zero-order input into the depot (cmt 1, rate > 0) is not modelled and gives NaN
    (`pk_oral_1cmt` refuses such data with a message before simulating).
    """
    ke = CL / V
    tau, pos, amount, rate, duration = dose_grid(times, dose_times, dose_amounts, dose_rates)
    oral = amount * ka / V * bateman(tau, ka, ke)
    iv = amount / V * jnp.exp(-ke * tau)
    infusion = rate / CL * -jnp.expm1(-ke * jnp.minimum(tau, duration)) * jnp.exp(-ke * jnp.maximum(tau - duration, 0.0))
    if dose_ii is not None:  # the earlier doses of steady-state series
        oral = oral + amount * ka / V * oral_1cmt_ss_extra(tau, ka, ke, dose_ii)
        iv = iv + amount * bolus_series(tau, [(1 / V, ke)], dose_ii)
        infusion = infusion + infusion_series(tau, rate, duration, [(1 / V, ke)], dose_ii)
    return _superpose(oral, iv, infusion, rate, dose_cmt, live(times, pos, dose_mask, dose_end))


def _superpose(oral, iv, infusion, rate, dose_cmt, acting):
    """Sum over the `acting` doses of the response of each one's route: depot bolus (`oral`),
    central bolus (`iv`) or central infusion; a depot infusion (not modelled) is NaN."""
    central = jnp.where(rate > 0, infusion, iv)
    depot = jnp.where(rate > 0, jnp.nan, oral)
    term = jnp.where(dose_cmt[None, :] == CENTRAL, central, depot)
    return jnp.sum(jnp.where(acting, term, 0.0), axis=1)


def two_compartment_concentration(
    times: Float[Array, " T"], dose_times, dose_amounts, dose_rates, dose_cmt, dose_mask, ka, CL, V1, Q, V2, *, dose_ii=None,
    dose_end=None,
) -> Float[Array, " T"]:
    """Central concentration of a two-compartment model with first-order absorption.

    With k10 = CL/V1, k12 = Q/V1, k21 = Q/V2 and the disposition rates α > β (the roots of
    λ² - (k10 + k12 + k21) λ + k10 k21), each dose adds, for τ = t - t_dose > 0:

    - oral bolus (cmt 1): A·ka/V1 · Σ_{λ ∈ {α, β, ka}} (k21 - λ) e^{-λτ} / Π_{μ ≠ λ} (μ - λ);
    - IV bolus (cmt 2): A/V1 · [(α - k21) e^{-ατ} + (k21 - β) e^{-βτ}] / (α - β);
    - zero-order infusion into the central compartment (cmt 2, rate R, duration A/R): the IV
      response integrated over the infusion.

    `dose_ii` (steady state) and `dose_end` (resets) as in
    [`one_compartment_concentration`][nlme_ppl.models.pk.one_compartment_concentration].

    The partial-fraction form divides by ka - α and ka - β, so ka is nudged by a relative 1e-6
    where it comes closer than that to a disposition rate (the error this makes is of that order).
    """
    alpha, beta, k21, disposition = two_compartment_rates(CL, V1, Q, V2)
    for lam in (alpha, beta):
        close = jnp.abs(ka - lam) < 1e-6 * lam
        ka = jnp.where(close, lam * (1 + 2e-6), ka)
    tau, pos, amount, rate, duration = dose_grid(times, dose_times, dose_amounts, dose_rates)
    e_a, e_b, e_k = jnp.exp(-alpha * tau), jnp.exp(-beta * tau), jnp.exp(-ka * tau)
    oral = amount * ka / V1 * (
        (k21 - alpha) / ((ka - alpha) * (beta - alpha)) * e_a
        + (k21 - beta) / ((ka - beta) * (alpha - beta)) * e_b
        + (k21 - ka) / ((alpha - ka) * (beta - ka)) * e_k
    )
    ca, cb = (alpha - k21) / (alpha - beta), (k21 - beta) / (alpha - beta)
    iv = amount / V1 * (ca * e_a + cb * e_b)
    on = jnp.minimum(tau, duration)
    after = jnp.maximum(tau - duration, 0.0)
    infusion = rate / V1 * (
        ca / alpha * -jnp.expm1(-alpha * on) * jnp.exp(-alpha * after) + cb / beta * -jnp.expm1(-beta * on) * jnp.exp(-beta * after)
    )
    if dose_ii is not None:  # the earlier doses of steady-state series
        oral_modes = [
            (ka / V1 * (k21 - alpha) / ((ka - alpha) * (beta - alpha)), alpha),
            (ka / V1 * (k21 - beta) / ((ka - beta) * (alpha - beta)), beta),
            (ka / V1 * (k21 - ka) / ((alpha - ka) * (beta - ka)), ka),
        ]
        oral = oral + amount * bolus_series(tau, oral_modes, dose_ii)
        iv = iv + amount * bolus_series(tau, disposition, dose_ii)
        infusion = infusion + infusion_series(tau, rate, duration, disposition, dose_ii)
    return _superpose(oral, iv, infusion, rate, dose_cmt, live(times, pos, dose_mask, dose_end))


#: Training prior of the structural parameters of `pk_oral_2cmt` (log scale): name -> (mean, SD).
PK_ORAL_2CMT_PRIOR = {"ka": (0.0, 1.0), "CL": (1.0, 1.0), "V1": (3.0, 1.0), "Q": (1.0, 1.0), "V2": (4.0, 1.0)}

_STRUCTURAL = {
    "1cmt": (PK_ORAL_1CMT_PRIOR, one_compartment_concentration),
    "2cmt": (PK_ORAL_2CMT_PRIOR, two_compartment_concentration),
}


def pk_design_prior(key, num: int, *, design=PK_DESIGN, censoring: bool = False, steady_state: bool = False) -> dict:
    """`num` random dosing-and-sampling designs (oral doses), as documented in `PK_DESIGN`;
    with `censoring`, each individual also gets a limit of quantification `lloq` (or none, -inf);
    with `steady_state`, the dose records `dose_ii` and `dose_end` (a share of individuals at
    steady state from their first dose, and a share with a reset; `ss_probability`,
    `reset_probability`)."""
    ks = jax.random.split(key, 8)
    nd, no = design["max_doses"], design["max_observations"]
    n_doses = jax.random.randint(ks[0], (num,), 1, nd + 1)
    interval = jax.random.uniform(ks[1], (num, 1), minval=design["interval_h"][0], maxval=design["interval_h"][1])
    lo, hi = np.log(design["amount_mg"][0]), np.log(design["amount_mg"][1])
    amount = jnp.exp(jax.random.uniform(ks[2], (num, 1), minval=lo, maxval=hi))
    idx = jnp.arange(nd)[None, :]
    dose_mask = idx < n_doses[:, None]
    dose_times = jnp.where(dose_mask, idx * interval, 0.0)
    last = jnp.max(dose_times, axis=1, keepdims=True)
    end = last + jax.random.uniform(ks[3], (num, 1), minval=design["follow_up_h"][0], maxval=design["follow_up_h"][1])
    n_obs = jax.random.randint(ks[4], (num,), 6, no + 1)
    # half the samples log-uniform from 0.1 h (dense early sampling), half uniform over the study
    u = jax.random.uniform(ks[5], (num, no))
    log_t = jnp.exp(jnp.log(0.1) + u * (jnp.log(end) - jnp.log(0.1)))
    lin = jax.random.uniform(ks[6], (num, no)) * end
    t = jnp.where(jnp.arange(no)[None, :] % 2 == 0, log_t, lin)
    predose = jax.random.uniform(ks[7], (num, 1)) < design["predose_probability"]
    t = t.at[:, :1].set(jnp.where(predose, 0.0, t[:, :1]))
    obs_mask = jnp.arange(no)[None, :] < n_obs[:, None]
    t = jnp.sort(jnp.where(obs_mask, t, jnp.inf), axis=1)  # observed first, in time order
    t = jnp.where(jnp.isfinite(t), t, end)
    out = {
        "times": t, "mask": obs_mask,
        "dose_times": dose_times, "dose_amounts": jnp.where(dose_mask, amount, 0.0),
        "dose_rates": jnp.zeros((num, nd)), "dose_cmt": jnp.full((num, nd), DEPOT, jnp.int32), "dose_mask": dose_mask,
    }
    if censoring:
        add_lloq(jax.random.fold_in(key, 1), out, probability=design["lloq_probability"], limits=design["lloq_mg_l"])
    if steady_state:
        add_dose_records(jax.random.fold_in(key, 2), out, interval, n_doses, ss_probability=design["ss_probability"],
                         reset_probability=design["reset_probability"])
    return out


def pk_censored_design_prior(key, num: int) -> dict:
    """`pk_design_prior` with a limit of quantification per individual (`censoring=True`)."""
    return pk_design_prior(key, num, censoring=True)


def _check_doses(data, model_name: str) -> None:
    d = data.doses
    bad = np.asarray(d.mask) & (np.asarray(d.rates) > 0) & (np.asarray(d.cmt) == DEPOT)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"dose {j} of individual {data.ids[i]!r} is a zero-order input into the depot (CMT=1, RATE>0), "
            f"which {model_name} does not model; give infusions CMT=2 (central) or make the dose a bolus (RATE=0)."
        )


@functools.lru_cache(maxsize=None)
def _dose_check(model_name: str):
    """The data check of a PK model: one object per name, since models are compared (and
    compiled functions cached) by their static fields."""
    return functools.partial(_check_doses, model_name=model_name)


def pk_oral_1cmt(*, error: str = "additive", censoring: bool = False, steady_state: bool = False, prior=None) -> IndividualModel:
    """One-compartment model with first-order absorption: parameters `ka` (1/h), `CL` (L/h),
    `V` (L), on the log scale, and the residual error.

    **Arguments:**

    - `error`: `"additive"` (y = C + a·ε, parameter `sigma_add` = log a),
      `"proportional"` (y = C·(1 + b·ε), `sigma_prop` = log b), or `"combined"`
      (SD √(a² + b²C²), both). The proportional model's SD is floored at 1e-4 mg/L
      (√(b²C² + 10⁻⁸)), so that samples with C = 0 (before the first dose) keep a density.

    Doses: oral (depot) and IV boluses and zero-order IV infusions, any number (see
    [`one_compartment_concentration`][nlme_ppl.models.pk.one_compartment_concentration]); amounts in mg,
    concentrations in mg/L. The training design prior (`PK_DESIGN`) draws 1–3 oral doses
    of 50–1000 mg every 8–24 h and 6–16 samples up to 12–36 h after the last dose, so an
    estimator trained under it serves real oral schedules of that kind.

    - `censoring`: observations below a lower limit of quantification are censored (M3:
      recorded as the limit, flagged, likelihood P(y < LLOQ)); see
      [`LeftCensored`][nlme_ppl.models.LeftCensored]. The design gains `lloq`, one limit per
      observation; the design prior gives 70% of individuals an LLOQ of 0.05–2 mg/L
      (log-uniform) and the rest none. The model is named `pk_oral_1cmt_censored`, and its
      estimator reads the censoring flags (`Dataset.censored`, from CENS/BLQ columns with
      `read_nonmem(..., blq="keep")`).
    - `steady_state`: the model also simulates steady-state doses (NONMEM SS=1/2 with II) and
      resets (EVID=3/4): its design gains `dose_ii` and `dose_end`, and its design prior puts 30%
      of individuals at steady state from their first dose and gives 10% a reset-and-dose at a
      later dose. Named with `_ss` (e.g. `pk_oral_1cmt_ss`); no estimator ships for it. Without
      it, data with such records are refused (they would be simulated as plain doses).

    Dose compartments (NONMEM ADVAN2): CMT 1 = depot, CMT 2 = central.

    Training prior: `prior={name: (mean, sd)}` (log scale) replaces those parameters' training priors by
    `Normal(mean, sd)` ([`with_prior`][nlme_ppl.models.with_prior]); the fingerprint changes with it.
    """
    return with_prior(_pk_model("1cmt", error, "One-compartment oral PK (ka, CL, V)", censoring, steady_state), prior)


def pk_oral_2cmt(*, error: str = "additive", censoring: bool = False, steady_state: bool = False, prior=None) -> IndividualModel:
    """Two-compartment model with first-order absorption: `ka` (1/h), `CL` (L/h), `V1`
    (central, L), `Q` (intercompartmental clearance, L/h), `V2` (peripheral, L), on the log
    scale, then the residual error as in [`pk_oral_1cmt`][nlme_ppl.models.pk_oral_1cmt].

    The same doses, design prior and encoding as `pk_oral_1cmt`; the concentration is the
    closed form [`two_compartment_concentration`][nlme_ppl.models.pk.two_compartment_concentration].
    `censoring` and `steady_state` as in `pk_oral_1cmt`. Dose compartments (NONMEM ADVAN4):
    CMT 1 = depot, CMT 2 = central.
    No estimator ships for it: train one with `nlme-ppl train --model pk_oral_2cmt --out FILE`.

    Training prior: `prior={name: (mean, sd)}` (log scale) replaces those parameters' training priors by
    `Normal(mean, sd)` ([`with_prior`][nlme_ppl.models.with_prior]); the fingerprint changes with it.
    """
    return with_prior(_pk_model("2cmt", error, "Two-compartment oral PK (ka, CL, V1, Q, V2)", censoring, steady_state), prior)


@functools.lru_cache(maxsize=None)
def _design_prior(censoring: bool, steady_state: bool):
    """One design-prior object per variant (models are compared by their static fields)."""
    if not steady_state:
        return pk_censored_design_prior if censoring else pk_design_prior
    return functools.partial(pk_design_prior, censoring=censoring, steady_state=True)


def _pk_model(kind: str, error: str, what: str, censoring: bool, steady_state: bool = False) -> IndividualModel:
    """A built-in PK model: the `kind` program, the design prior, and the dose check."""
    censoring, steady_state = bool(censoring), bool(steady_state)
    base = f"pk_oral_{kind}"
    return pk_model(
        base, _STRUCTURAL[kind], error=error, censoring=censoring, suffix="_ss" if steady_state else "",
        design_prior=_design_prior(censoring, steady_state),
        description=f"{what}, {error} error{', censored below the LLOQ (M3)' if censoring else ''}, "
        "closed form with superposition over doses" + (", steady state and resets." if steady_state else "."),
        data_check=_dose_check(error_name(base, error) + ("_ss" if steady_state else "") + ("_censored" if censoring else "")),
    )
