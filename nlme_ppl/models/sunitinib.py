"""Sunitinib and its active metabolite SU12662: the parent–metabolite model of Yu et al. (2015).

The structural model of Yu et al., Br J Clin Pharmacol 79:809 (2015), as used by Arruda et
al. (2024), following the NONMEM control stream (NONMEM compartment numbers):

- 1: depot (oral doses), absorbed first-order with rate `ka`;
- 2: sunitinib central, volume `V2` (observed, CMT=2);
- 3: SU12662 central, volume `V3` (observed, CMT=3);
- 4: SU12662 peripheral, volume `V4`, exchanging with 3 through the flow `Q34`;
- 5: sunitinib peripheral, volume `V5` (fixed at 588 L), exchanging with 2 through `Q25`.

Sunitinib reaching the liver, from the gut or from the blood, is cleared with a well-stirred
liver: with hepatic blood flow `QH` (fixed at 80 L/h) and intrinsic clearance `CLP`, the
liver concentration is CLIV = (ka·A1 + QH/V2·A2) / (QH + CLP), and

    dA1/dt = -ka·A1
    dA2/dt = QH·CLIV - QH/V2·A2 - Q25/V2·A2 + Q25/V5·A5
    dA3/dt = FM·CLP·CLIV - CLM/V3·A3 - Q34/V3·A3 + Q34/V4·A4
    dA4/dt = Q34/V3·A3 - Q34/V4·A4
    dA5/dt = Q25/V2·A2 - Q25/V5·A5

so a fraction QH/(QH + CLP) of an oral dose escapes first-pass extraction, the systemic
clearance of sunitinib is QH·CLP/(QH + CLP), and a fraction `FM` of all sunitinib cleared
becomes SU12662 (cleared by `CLM`).

Body weight scales every clearance and flow (QH, CLP, CLM, Q34, Q25) by (WT/70)^0.75 and
every volume (V2, V3, V4, V5) by WT/70; parameters are given for 70 kg.

Parameter roles, by name (NONMEM θ in brackets): `ka` [θ1] absorption rate (1/h); `V2` [θ2]
sunitinib central volume (L); `QH` [θ3, fixed 80 L/h]; `CLP` [θ4] sunitinib intrinsic
hepatic clearance (L/h); `CLM` [θ5] SU12662 clearance (L/h); `V3` [θ6] SU12662 central
volume (L); `Q34` [θ7] the inter-compartmental clearance between compartments 3 and 4 (L/h,
a clearance: scaled by (WT/70)^0.75); `V4` [θ8] the volume of compartment 4 (L, a volume:
scaled by WT/70); `FM` [θ9] fraction metabolised to SU12662 (typical value fixed at 0.21, with
between-subject variability, so an individual parameter here); `Q25` [θ10] inter-compartmental
clearance between 2 and 5 (L/h); `V5` [θ11, fixed 588 L]. The published reference Python/Julia
code mixed up θ7 and θ8; naming each one's role removes that ambiguity.

Observations are concentrations, as in NONMEM (S2 = V2, S3 = V3): sunitinib A2/V2 (CMT=2)
and SU12662 A3/V3 (CMT=3). (The reference Python/Julia code observed the amounts A2, A3.) With
doses in mg and volumes in L, C = 1000·A/V is in ng/mL (= µg/L).

The system is linear, dA/dt = K·A, and K is block lower-triangular (depot; sunitinib {2, 5};
SU12662 {3, 4}), so its eigenvalues are -ka and the roots of two 2×2 blocks, all real and
negative, and each dose's response is a sum of five exponentials (see
`sunitinib_concentrations`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Bool, Float, Int

from ..data import CENTRAL, DEPOT
from ._individual import IndividualModel
from ._prior import with_prior
from ._sunitinib_responses import _SERIES_RANGE, _SERIES_TERMS, _eigen_responses, _series_responses

__all__ = [
    "SUNITINIB_DESIGN",
    "SUNITINIB_PRIOR",
    "sunitinib",
    "sunitinib_design_prior",
    "FM_TYPICAL",
    "METABOLITE",
    "PARENT",
    "QH_L_PER_H",
    "SUNITINIB_SIGMA",
    "SUNITINIB_TYPICAL",
    "V5_L",
    "sunitinib_concentrations",
    "sunitinib_rate_matrix",
]

#: Hepatic blood flow QH (θ3, fixed), L/h for 70 kg.
QH_L_PER_H = 80.0
#: Sunitinib peripheral volume V5 (θ11, fixed), L for 70 kg.
V5_L = 588.0
#: Typical value of the fraction metabolised to SU12662, FM (θ9, fixed; FM varies between subjects).
FM_TYPICAL = 0.21
#: Observation compartments: sunitinib (parent) central and SU12662 (metabolite) central.
PARENT, METABOLITE = 2, 3

#: Published typical values for 70 kg (Yu et al. 2015): ka 1/h, volumes L, clearances L/h, FM a fraction.
SUNITINIB_TYPICAL = {
    "ka": 0.133, "V2": 1820.0, "CLP": 33.9, "CLM": 16.5, "V3": 730.0, "Q34": 2.75, "V4": 592.0, "FM": FM_TYPICAL,
    "Q25": 0.371,
}
#: Published residual SDs on the log concentration (θ12 sunitinib, θ13 SU12662).
SUNITINIB_SIGMA = {"parent": 0.367, "metabolite": 0.281}

def _scaled(ka, V2, CLP, CLM, V3, Q34, V4, FM, Q25, WT):
    """The parameters for weight `WT` (kg): clearances and flows × (WT/70)^0.75, volumes × WT/70."""
    ascl, asv = (WT / 70.0) ** 0.75, WT / 70.0
    return dict(
        ka=ka, FM=FM, QH=QH_L_PER_H * ascl, CLP=CLP * ascl, CLM=CLM * ascl, Q34=Q34 * ascl, Q25=Q25 * ascl,
        V2=V2 * asv, V3=V3 * asv, V4=V4 * asv, V5=V5_L * asv,
    )


def sunitinib_rate_matrix(ka, V2, CLP, CLM, V3, Q34, V4, FM, Q25, WT) -> Float[Array, "5 5"]:
    """The rate matrix K of dA/dt = K·A, A = (A1, ..., A5) in NONMEM compartment order.

    Parameters are 70-kg values (see the module docstring for their roles and units); `WT`
    (kg) scales them allometrically, and QH = `QH_L_PER_H`, V5 = `V5_L` are fixed. The
    sunitinib elimination term QH²/((QH + CLP)·V2) - QH/V2 of the DES is written in its
    equivalent form -QH·CLP/((QH + CLP)·V2), which has no cancellation.
    """
    p = _scaled(ka, V2, CLP, CLM, V3, Q34, V4, FM, Q25, WT)
    ka, QH, CLP, V2, V3, V4, V5 = p["ka"], p["QH"], p["CLP"], p["V2"], p["V3"], p["V4"], p["V5"]
    liver = 1.0 / (QH + CLP)  # CLIV = liver·(ka·A1 + QH/V2·A2)
    shape = jnp.broadcast_shapes(*(jnp.shape(x) for x in p.values()))
    entries = {
        (0, 0): -ka,
        (1, 0): QH * ka * liver,
        (1, 1): -QH * CLP * liver / V2 - p["Q25"] / V2,
        (1, 4): p["Q25"] / V5,
        (2, 0): p["FM"] * CLP * ka * liver,
        (2, 1): p["FM"] * CLP * QH / V2 * liver,
        (2, 2): -(p["CLM"] + p["Q34"]) / V3,
        (2, 3): p["Q34"] / V4,
        (3, 2): p["Q34"] / V3,
        (3, 3): -p["Q34"] / V4,
        (4, 1): p["Q25"] / V2,
        (4, 4): -p["Q25"] / V5,
    }
    rows = [[jnp.broadcast_to(entries.get((i, j), 0.0), shape) for j in range(5)] for i in range(5)]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def sunitinib_concentrations(
    times: Float[Array, " T"],
    obs_cmt: Int[Array, " T"],
    dose_times: Float[Array, " D"],
    dose_amounts: Float[Array, " D"],
    dose_rates: Float[Array, " D"],
    dose_cmt: Int[Array, " D"],
    dose_mask: Bool[Array, " D"],
    ka, V2, CLP, CLM, V3, Q34, V4, FM, Q25, WT,
) -> Float[Array, " T"]:
    """Concentrations (ng/mL, doses in mg) of sunitinib (`obs_cmt` 2) or SU12662 (`obs_cmt` 3).

    Parameters are 70-kg values scaled by the weight `WT` (kg); see the module docstring.
    Doses are boluses into the depot (`dose_cmt` 1, oral) or the sunitinib central
    compartment (`dose_cmt` 2, IV); those with `dose_mask` False are ignored. Neither the
    observation nor the dose times need be sorted, and an observation at the time of a dose is
    taken before it.

    Exact for the linear ODE, by superposition: each earlier dose adds its amount times the
    response exp(Kτ)[obs, dose] at τ = the time since the dose. For s·τ > 2 (s = the largest
    rate on K's diagonal) the response is a sum of five exponentials in the eigenvalues of K,
    with residues computed as products, without cancellation (see `_eigen_responses`); before
    that, where such a sum would cancel, it is a uniformisation series of non-negative terms
    (see `_series_responses`). Both are accurate to about 1e-12 relative (against a long-double
    reference, over a wide range of parameters), and the cost is five exponentials and a
    degree-24 polynomial per (observation, dose) pair, with no ODE solve. Where eigenvalues of
    different blocks coincide to a relative 1e-7 they are moved apart by at most 1.2e-6, which
    changes the result by about 1e-6 relative; where three (ka and one root of each block)
    coincide that closely, the error can reach 1e-3.

    Zero-order infusions (an unmasked dose with `dose_rates` > 0) are not modelled and make
    every concentration NaN (the caller refuses such data before simulating), as does an
    unmasked dose into a compartment other than 1 or 2; an observation compartment other than
    2 or 3 gives NaN for that observation.
    """
    K = sunitinib_rate_matrix(ka, V2, CLP, CLM, V3, Q34, V4, FM, Q25, WT)
    z, c = _eigen_responses(K)
    s, b = _series_responses(K)
    tau = times[:, None] - dose_times[None, :]
    given = (tau > 0) & dose_mask[None, :]
    tau = jnp.where(given, tau, 0.0)
    metabolite, iv = (obs_cmt == METABOLITE)[:, None], (dose_cmt == CENTRAL)[None, :]

    def pick(x):
        """Each (observation, dose) pair's entry of x `(2, 2)`: its analyte, the dose's route."""
        return jnp.where(metabolite, jnp.where(iv, x[1, 1], x[1, 0]), jnp.where(iv, x[0, 1], x[0, 0]))

    expo = sum(pick(c[..., i]) * jnp.exp(z[i] * tau) for i in range(5))  # exponents ≤ 0
    near = tau * s <= _SERIES_RANGE
    tau_s = jnp.where(near, tau, 0.0)  # the series by Horner's rule, in τ clipped to its range
    series = pick(b[..., -1])
    for k in range(_SERIES_TERMS - 1, -1, -1):
        series = series * tau_s + pick(b[..., k])
    response = jnp.where(near, series * jnp.exp(-s * tau_s), expo)
    amounts = jnp.sum(jnp.where(given, response, 0.0) * dose_amounts[None, :], axis=1)
    volume = jnp.where(metabolite[:, 0], V3, V2) * (WT / 70.0)
    conc = 1000.0 * amounts / volume
    bad_dose = jnp.any(dose_mask & ((dose_rates > 0) | ~((dose_cmt == DEPOT) | (dose_cmt == CENTRAL))))
    bad = bad_dose | ~((obs_cmt == PARENT) | (obs_cmt == METABOLITE))
    return jnp.where(bad, jnp.nan, conc)


#: Training prior of `sunitinib` (log scale): name -> (mean, SD). Centred on the published
#: typical values; the SD of 0.7 is wider than every published between-subject SD (0.25–0.58).
SUNITINIB_PRIOR = {
    **{n: (float(np.log(v)), 0.7) for n, v in SUNITINIB_TYPICAL.items()},
    "sigma_parent": (float(np.log(SUNITINIB_SIGMA["parent"])), 0.5),
    "sigma_metabolite": (float(np.log(SUNITINIB_SIGMA["metabolite"])), 0.5),
}
#: Design prior of `sunitinib`: once-daily oral regimens and paired parent/metabolite samples.
SUNITINIB_DESIGN = {
    "dose_mg": (25.0, 37.5, 50.0),  # one of these, the same every day
    "max_days": 28,  # 1..28 daily doses, the first at t = 0 (the 4-weeks-on schedule)
    "max_sample_times": 10,  # 3..10 sampling times, each with a sunitinib and an SU12662 sample
    "follow_up_h": (12.0, 48.0),  # sampling until this long after the last dose (uniform)
    "weight_kg": (75.0, 0.2),  # log-normal: median, SD of log WT (5-95 %: 54-104 kg)
}
#: Offset added to the concentration before the log (ng/mL): a zero concentration (before the
#: first dose) is then log(0.001) = -6.9, and concentrations above 0.1 ng/mL change by < 1 %.
LOG_OFFSET_NG_ML = 1e-3


def sunitinib_design_prior(key, num: int, *, design=SUNITINIB_DESIGN) -> dict:
    """`num` random designs: a daily regimen, sampling times, and a body weight `WT` (kg)."""
    ks = jax.random.split(key, 7)
    nd, nt = design["max_days"], design["max_sample_times"]
    days = jax.random.randint(ks[0], (num, 1), 1, nd + 1)
    amount = jnp.asarray(design["dose_mg"])[jax.random.randint(ks[1], (num, 1), 0, len(design["dose_mg"]))]
    idx = jnp.arange(nd)[None, :]
    dose_mask = idx < days
    dose_times = jnp.where(dose_mask, 24.0 * idx, 0.0)
    end = 24.0 * (days - 1) + jax.random.uniform(ks[2], (num, 1), minval=design["follow_up_h"][0], maxval=design["follow_up_h"][1])
    n_times = jax.random.randint(ks[3], (num, 1), 3, nt + 1)
    # half the times log-uniform from 0.5 h (absorption), half uniform over the study (accumulation, troughs)
    u = jax.random.uniform(ks[4], (num, nt))
    log_t = jnp.exp(jnp.log(0.5) + u * (jnp.log(end) - jnp.log(0.5)))
    lin = 0.5 + jax.random.uniform(ks[5], (num, nt)) * (end - 0.5)
    t = jnp.where(jnp.arange(nt)[None, :] % 2 == 0, log_t, lin)
    used = jnp.arange(nt)[None, :] < n_times
    t = jnp.sort(jnp.where(used, t, jnp.inf), axis=1)
    t = jnp.where(jnp.isfinite(t), t, end)
    median, sd = design["weight_kg"]
    return {
        "times": jnp.repeat(t, 2, axis=1), "mask": jnp.repeat(used, 2, axis=1),
        "obs_cmt": jnp.tile(jnp.array([PARENT, METABOLITE], jnp.int32), (num, nt)),
        "dose_times": dose_times, "dose_amounts": jnp.where(dose_mask, amount, 0.0), "dose_rates": jnp.zeros((num, nd)),
        "dose_cmt": jnp.full((num, nd), DEPOT, jnp.int32), "dose_mask": dose_mask,
        "WT": median * jnp.exp(sd * jax.random.normal(ks[6], (num,))),
    }


def _program(design, obs=None):
    p = {n: numpyro.sample(n, dist.Normal(m, s)) for n, (m, s) in SUNITINIB_PRIOR.items()}
    conc = sunitinib_concentrations(
        design["times"], design["obs_cmt"], design["dose_times"], design["dose_amounts"], design["dose_rates"],
        design["dose_cmt"], design["dose_mask"], *(jnp.exp(p[n]) for n in SUNITINIB_TYPICAL), design["WT"],
    )
    sd = jnp.where(design["obs_cmt"] == METABOLITE, jnp.exp(p["sigma_metabolite"]), jnp.exp(p["sigma_parent"]))
    numpyro.sample("obs", dist.Normal(jnp.log(conc + LOG_OFFSET_NG_ML), sd).mask(design["mask"]).to_event(1), obs=obs)


def _check_doses(data) -> None:
    d = data.doses
    bad = np.asarray(d.mask) & ((np.asarray(d.rates) > 0) | ~np.isin(np.asarray(d.cmt), (DEPOT, CENTRAL)))
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"dose {j} of individual {data.ids[i]!r} is an infusion or goes into compartment CMT={int(d.cmt[i, j])}; "
            "the sunitinib model takes bolus doses into the depot (CMT=1, oral) or the sunitinib central compartment (CMT=2)."
        )


def sunitinib(*, prior=None) -> IndividualModel:
    """The sunitinib / SU12662 parent–metabolite model (Yu et al. 2015), five compartments.

    Individual parameters (log scale, 70-kg values): `ka`, `V2`, `CLP`, `CLM`, `V3`, `Q34`,
    `V4`, `FM`, `Q25` (roles and units in the module docstring), then `sigma_parent` and
    `sigma_metabolite`, the log SDs of the additive error on the log concentration. QH = 80 L/h
    and V5 = 588 L are fixed in the simulator; FM's typical value 0.21 is fixed in a population
    model by a tight prior on `mean[FM]` (see the PK guide).

    Data: oral doses in mg (CMT 1); observations y = log(C + 0.001) with C in ng/mL, of
    sunitinib (CMT 2) and SU12662 (CMT 3), given per observation by `Dataset.obs_cmt`; the body
    weight `WT` (kg) per individual in `Dataset.covariates` (the simulator scales clearances by
    (WT/70)^0.75 and volumes by WT/70). The design prior (`SUNITINIB_DESIGN`) draws 1–28 daily
    doses of 25, 37.5 or 50 mg and 3–10 paired samples up to 12–48 h after the last dose.

    Training prior: `prior={name: (mean, sd)}` (log scale) replaces those parameters' training priors by
    `Normal(mean, sd)` ([`with_prior`][nlme_ppl.models.with_prior]); the fingerprint changes with it.
    """
    example = sunitinib_design_prior(jax.random.key(0), 1)
    return with_prior(IndividualModel(
        _program,
        {k: v[0] for k, v in example.items()},
        name="sunitinib",
        design_prior=sunitinib_design_prior,
        description="Sunitinib and SU12662 (Yu et al. 2015): five compartments, first-pass liver, allometric weight scaling.",
        data_check=_check_doses,
        analytes=(PARENT, METABOLITE),
        covariates={"WT": (75.0, 15.0)},
    ), prior)
