"""Pharmacokinetic models of intravenous dosing: one and two compartments (NONMEM ADVAN1 and
ADVAN3), IV boluses and zero-order infusions, any number of doses, steady state and resets.

Compartment numbers follow NONMEM: for these models CMT 1 (or no CMT column) is the central
compartment, and a dose into any other compartment is refused. The concentration is a sum of
exponential modes per dose (`nlme_ppl.models._pk_closed_forms`), checked against an ODE solve
in `tests/models/test_pk_iv.py`.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._individual import IndividualModel
from ._prior import with_prior
from ._pk_closed_forms import bolus_series, dose_grid, infusion_series, live, modal_bolus, modal_infusion, two_compartment_rates
from ._pk_designs import add_dose_records, add_lloq
from ._pk_program import pk_model

__all__ = [
    "IV_CENTRAL", "PK_IV_1CMT_PRIOR", "PK_IV_2CMT_PRIOR", "PK_IV_DESIGN", "iv_one_compartment_concentration",
    "iv_two_compartment_concentration", "pk_iv_1cmt", "pk_iv_2cmt", "pk_iv_design_prior",
]

#: The central compartment's CMT number in the IV models (NONMEM ADVAN1 and ADVAN3).
IV_CENTRAL = 1

#: Training prior of `pk_iv_1cmt`'s structural parameters (log scale): name -> (mean, SD).
#: Units: CL in L/h, V in L, with doses in mg and concentrations in mg/L.
PK_IV_1CMT_PRIOR = {"CL": (1.0, 1.0), "V": (3.5, 1.0)}
#: Training prior of `pk_iv_2cmt`'s structural parameters (log scale): name -> (mean, SD).
PK_IV_2CMT_PRIOR = {"CL": (1.0, 1.0), "V1": (3.0, 1.0), "Q": (1.0, 1.0), "V2": (4.0, 1.0)}

#: Design prior of the IV models: repeated boluses or infusions over days, sparse to rich sampling.
PK_IV_DESIGN = {
    "max_doses": 10,  # 1..10 doses, the first at t = 0
    "interval_h": (6.0, 48.0),  # uniform dosing interval
    "amount_mg": (10.0, 2000.0),  # log-uniform maintenance dose, the same for every dose of a regimen
    "loading_probability": 0.25,  # chance that the first dose is a loading dose ...
    "loading_factor": (1.5, 3.0),  # ... this many times the maintenance dose (uniform)
    "infusion_probability": 0.5,  # chance that the regimen is zero-order infusions rather than boluses
    "infusion_h": (0.25, 4.0),  # infusion duration, log-uniform (shorter than any interval)
    "min_observations": 2,  # 2..24 samples per individual (uniform): trough-only to rich
    "max_observations": 24,
    "follow_up_h": (12.0, 72.0),  # sampling continues this long after the last dose (uniform)
    "post_dose_share": 0.5,  # share of samples taken 0.05 h..one interval after a random dose (log-uniform)
    "predose_probability": 0.2,  # chance of a sample at t = 0 before the first dose (not at steady state)
    "ss_probability": 0.25,  # chance that the first dose is at steady state (SS=1, II = the interval)
    "reset_probability": 0.1,  # chance of a reset-and-dose (EVID=4) at a later dose
    "lloq_probability": 0.7,  # with censoring=True: chance of a limit of quantification ...
    "lloq_mg_l": (0.05, 2.0),  # ... log-uniform, one per individual
}


def iv_one_compartment_concentration(
    times: Float[Array, " T"], dose_times, dose_amounts, dose_rates, dose_cmt, dose_mask, CL, V, *, dose_ii=None, dose_end=None
) -> Float[Array, " T"]:
    """Concentration of a one-compartment IV model (ADVAN1): with ke = CL / V, each dose adds,
    for τ = t - t_dose > 0,

    - bolus (rate 0): A / V · e^{-ke τ};
    - zero-order infusion (rate R > 0, duration A / R): R / CL · (1 - e^{-ke min(τ, A/R)}) e^{-ke max(τ - A/R, 0)};
    - at steady state (`dose_ii` > 0): the same plus its earlier doses every II, the geometric
      series A / V · e^{-ke τ} / (e^{ke II} - 1) for a bolus (likewise for an infusion shorter than II).

    Doses act until their `dose_end` (a reset). `dose_cmt` must be 1 (central); any other gives
    NaN (`pk_iv_1cmt` refuses such data with a message first). Arrays `(D,)` per dose.
    """
    modes = [(1 / V, CL / V)]
    return _iv(times, dose_times, dose_amounts, dose_rates, dose_cmt, dose_mask, modes, dose_ii, dose_end)


def iv_two_compartment_concentration(
    times: Float[Array, " T"], dose_times, dose_amounts, dose_rates, dose_cmt, dose_mask, CL, V1, Q, V2, *, dose_ii=None,
    dose_end=None,
) -> Float[Array, " T"]:
    """Central concentration of a two-compartment IV model (ADVAN3): with the disposition rates
    α > β, a bolus adds A/V1 · [(α - k21) e^{-ατ} + (k21 - β) e^{-βτ}] / (α - β) (k21 = Q/V2),
    an infusion that response integrated over the infusion, and a steady-state dose the
    geometric series of each mode, as in [`iv_one_compartment_concentration`][nlme_ppl.models.pk_iv.iv_one_compartment_concentration].
    """
    *_, modes = two_compartment_rates(CL, V1, Q, V2)
    return _iv(times, dose_times, dose_amounts, dose_rates, dose_cmt, dose_mask, modes, dose_ii, dose_end)


def _iv(times, dose_times, dose_amounts, dose_rates, dose_cmt, dose_mask, modes, dose_ii, dose_end):
    tau, pos, amount, rate, duration = dose_grid(times, dose_times, dose_amounts, dose_rates)
    bolus, infusion = amount * modal_bolus(tau, modes), modal_infusion(tau, rate, duration, modes)
    if dose_ii is not None:
        bolus = bolus + amount * bolus_series(tau, modes, dose_ii)
        infusion = infusion + infusion_series(tau, rate, duration, modes, dose_ii)
    term = jnp.where(rate > 0, infusion, bolus)
    term = jnp.where(dose_cmt[None, :] == IV_CENTRAL, term, jnp.nan)
    return jnp.sum(jnp.where(live(times, pos, dose_mask, dose_end), term, 0.0), axis=1)


def pk_iv_design_prior(key, num: int, *, design=PK_IV_DESIGN, censoring: bool = False) -> dict:
    """`num` random IV designs, as documented in `PK_IV_DESIGN`: 1–10 boluses or infusions
    (a share with a loading dose, at steady state, or with a reset), 2–24 samples over the study
    and after doses; with `censoring`, a limit of quantification `lloq` per individual."""
    ks = jax.random.split(key, 12)
    nd, no = design["max_doses"], design["max_observations"]
    n_doses = jax.random.randint(ks[0], (num,), 1, nd + 1)
    interval = jax.random.uniform(ks[1], (num, 1), minval=design["interval_h"][0], maxval=design["interval_h"][1])
    lo, hi = np.log(design["amount_mg"][0]), np.log(design["amount_mg"][1])
    amount = jnp.exp(jax.random.uniform(ks[2], (num, 1), minval=lo, maxval=hi))
    idx = jnp.arange(nd)[None, :]
    dose_mask = idx < n_doses[:, None]
    loading = jax.random.uniform(ks[3], (num, 1)) < design["loading_probability"]
    factor = jax.random.uniform(ks[4], (num, 1), minval=design["loading_factor"][0], maxval=design["loading_factor"][1])
    amounts = jnp.where(dose_mask, amount * jnp.where(loading & (idx == 0), factor, 1.0), 0.0)
    lo, hi = np.log(design["infusion_h"][0]), np.log(design["infusion_h"][1])
    infused = jax.random.uniform(ks[5], (num, 1)) < design["infusion_probability"]
    duration = jnp.exp(jax.random.uniform(ks[6], (num, 1), minval=lo, maxval=hi))
    rates = jnp.where(dose_mask & infused, amounts / duration, 0.0)
    dose_times = jnp.where(dose_mask, idx * interval, 0.0)
    end = jnp.max(dose_times, axis=1, keepdims=True) + jax.random.uniform(
        ks[7], (num, 1), minval=design["follow_up_h"][0], maxval=design["follow_up_h"][1]
    )
    n_obs = jax.random.randint(ks[8], (num,), design["min_observations"], no + 1)
    # post-dose samples: a random given dose, then 0.05 h .. one interval later (log-uniform);
    # the others uniform over the study
    which = jnp.floor(jax.random.uniform(ks[9], (num, no)) * n_doses[:, None]).astype(jnp.int32)
    after = jnp.exp(np.log(0.05) + jax.random.uniform(ks[10], (num, no)) * (jnp.log(interval) - np.log(0.05)))
    post = jnp.take_along_axis(dose_times, which, axis=1) + after
    k_pick, k_lin, k_pre, k_rec, k_lloq = jax.random.split(ks[11], 5)
    lin = jax.random.uniform(k_lin, (num, no)) * end
    t = jnp.minimum(jnp.where(jax.random.uniform(k_pick, (num, no)) < design["post_dose_share"], post, lin), end)
    out = {
        "dose_times": dose_times, "dose_amounts": amounts, "dose_rates": rates,
        "dose_cmt": jnp.full((num, nd), IV_CENTRAL, jnp.int32), "dose_mask": dose_mask,
    }
    add_dose_records(k_rec, out, interval, n_doses, ss_probability=design["ss_probability"],
                     reset_probability=design["reset_probability"])
    predose = (jax.random.uniform(k_pre, (num, 1)) < design["predose_probability"]) & (out["dose_ii"][:, :1] == 0)
    t = t.at[:, :1].set(jnp.where(predose, 0.0, t[:, :1]))
    obs_mask = jnp.arange(no)[None, :] < n_obs[:, None]
    t = jnp.sort(jnp.where(obs_mask, t, jnp.inf), axis=1)  # observed first, in time order
    out["times"], out["mask"] = jnp.where(jnp.isfinite(t), t, end), obs_mask
    if censoring:
        add_lloq(k_lloq, out, probability=design["lloq_probability"], limits=design["lloq_mg_l"])
    return out


def pk_iv_censored_design_prior(key, num: int) -> dict:
    """`pk_iv_design_prior` with a limit of quantification per individual (`censoring=True`)."""
    return pk_iv_design_prior(key, num, censoring=True)


_STRUCTURAL = {
    "1cmt": (PK_IV_1CMT_PRIOR, iv_one_compartment_concentration),
    "2cmt": (PK_IV_2CMT_PRIOR, iv_two_compartment_concentration),
}


def pk_iv_1cmt(*, error: str = "additive", censoring: bool = False, prior=None) -> IndividualModel:
    """One-compartment IV model (NONMEM ADVAN1): `CL` (L/h) and `V` (L) on the log scale, then
    the residual error.

    **Arguments:**

    - `error`: `"additive"`, `"proportional"` or `"combined"`, as in
      [`pk_oral_1cmt`][nlme_ppl.models.pk_oral_1cmt] (`sigma_add`, `sigma_prop`).
    - `censoring`: observations below a limit of quantification are censored (M3), as in
      `pk_oral_1cmt`; the model is then named `pk_iv_1cmt_censored`.

    Doses: IV boluses (RATE 0) and zero-order infusions (RATE > 0) into the central
    compartment, **CMT 1** (or no CMT column); any number, steady state (SS with II) and resets
    (EVID 3/4). See [`iv_one_compartment_concentration`][nlme_ppl.models.pk_iv.iv_one_compartment_concentration].
    The training design prior (`PK_IV_DESIGN`) draws 1–10 boluses or infusions of 10–2000 mg
    every 6–48 h (a share with a loading dose, at steady state, or with a reset) and 2–24
    samples up to 12–72 h after the last dose. No estimator ships for it: train one with
    `nlme-ppl train --model pk_iv_1cmt --out FILE` (or on a study's own designs).

    Training prior: `prior={name: (mean, sd)}` (log scale) replaces those parameters' training priors by
    `Normal(mean, sd)` ([`with_prior`][nlme_ppl.models.with_prior]); the fingerprint changes with it.
    """
    return with_prior(_iv_model("1cmt", error, "One-compartment IV PK (CL, V)", censoring), prior)


def pk_iv_2cmt(*, error: str = "additive", censoring: bool = False, prior=None) -> IndividualModel:
    """Two-compartment IV model (NONMEM ADVAN3): `CL` (L/h), `V1` (central, L), `Q`
    (intercompartmental clearance, L/h), `V2` (peripheral, L) on the log scale, then the
    residual error. Doses into the central compartment, **CMT 1** (CMT 2, the peripheral
    compartment, is refused), as boluses or infusions; the rest as in
    [`pk_iv_1cmt`][nlme_ppl.models.pk_iv_1cmt]. See
    [`iv_two_compartment_concentration`][nlme_ppl.models.pk_iv.iv_two_compartment_concentration].

    Training prior: `prior={name: (mean, sd)}` (log scale) replaces those parameters' training priors by
    `Normal(mean, sd)` ([`with_prior`][nlme_ppl.models.with_prior]); the fingerprint changes with it.
    """
    return with_prior(_iv_model("2cmt", error, "Two-compartment IV PK (CL, V1, Q, V2)", censoring), prior)


def _iv_model(kind: str, error: str, what: str, censoring: bool) -> IndividualModel:
    return pk_model(
        f"pk_iv_{kind}", _STRUCTURAL[kind], error=error, censoring=censoring,
        design_prior=pk_iv_censored_design_prior if censoring else pk_iv_design_prior,
        description=f"{what}, {error} error{', censored below the LLOQ (M3)' if censoring else ''}, closed form with "
        "superposition over IV boluses and infusions, steady state and resets.",
        dose_compartments={IV_CENTRAL: "central"},
    )
