"""Sunitinib / SU12662 parent–metabolite model: the closed form against a scipy ODE of the NONMEM
DES and a cancellation-free matrix exponential, allometry and mass balance, gradients, and the
handling of masked doses and infusions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import simpson, solve_ivp

import nlme_ppl  # noqa: F401  (enables float64)
from nlme_ppl.models.sunitinib import (
    FM_TYPICAL,
    QH_L_PER_H,
    SUNITINIB_PRIOR,
    SUNITINIB_TYPICAL,
    V5_L,
    sunitinib_concentrations,
    sunitinib_rate_matrix,
)

NAMES = ("ka", "V2", "CLP", "CLM", "V3", "Q34", "V4", "FM", "Q25")
TYPICAL = np.array([SUNITINIB_TYPICAL[n] for n in NAMES])


@jax.jit
def _conc(theta, wt, times, obs_cmt, dose_times, dose_amounts, dose_rates, dose_cmt, dose_mask):
    return sunitinib_concentrations(times, obs_cmt, dose_times, dose_amounts, dose_rates, dose_cmt, dose_mask, *theta, wt)


def _call(theta, wt, times, obs_cmt, doses, mask=None):
    """`doses`: (time, amount mg, rate, cmt) tuples. Observations and doses are padded (to 32 or
    4096, and 10) so that the tests share a few compiled shapes; the padding doses are masked."""
    n, d = len(times), len(doses)
    pad_t, pad_d = (32 if n <= 32 else 4096) - n, 10 - d
    dt, da, dr, dc = (np.concatenate([np.array(x, float), np.zeros(pad_d)]) for x in zip(*doses))
    mask = np.ones(d, bool) if mask is None else np.asarray(mask)
    out = _conc(jnp.asarray(theta, float), float(wt), jnp.asarray(np.pad(np.asarray(times, float), (0, pad_t))),
                jnp.asarray(np.pad(np.asarray(obs_cmt), (0, pad_t), constant_values=2), jnp.int32),
                jnp.asarray(dt), jnp.asarray(da), jnp.asarray(dr), jnp.asarray(np.where(dc == 0, 1, dc), jnp.int32),
                jnp.asarray(np.pad(mask, (0, pad_d))))
    return np.asarray(out)[:n]


def _scaled_by_hand(theta, wt):
    """The individual's parameters for weight `wt`: flows × (wt/70)^0.75, volumes × wt/70."""
    p = dict(zip(NAMES, theta))
    ascl, asv = (wt / 70) ** 0.75, wt / 70
    return dict(ka=p["ka"], FM=p["FM"], QH=QH_L_PER_H * ascl, CLP=p["CLP"] * ascl, CLM=p["CLM"] * ascl,
                Q34=p["Q34"] * ascl, Q25=p["Q25"] * ascl, V2=p["V2"] * asv, V3=p["V3"] * asv, V4=p["V4"] * asv, V5=V5_L * asv)


def _des(p):
    """The NONMEM $DES, literally (amounts A1..A5)."""
    ka, QH, CLP, CLM, FM = p["ka"], p["QH"], p["CLP"], p["CLM"], p["FM"]
    V2, V3, V4, V5, Q34, Q25 = p["V2"], p["V3"], p["V4"], p["V5"], p["Q34"], p["Q25"]

    def rhs(t, a):
        clv = (ka * a[0] + QH / V2 * a[1]) / (QH + CLP)
        return [
            -ka * a[0],
            QH * clv - QH / V2 * a[1] - Q25 / V2 * a[1] + Q25 / V5 * a[4],
            FM * CLP * clv - CLM / V3 * a[2] - Q34 / V3 * a[2] + Q34 / V4 * a[3],
            Q34 / V3 * a[2] - Q34 / V4 * a[3],
            Q25 / V2 * a[1] - Q25 / V5 * a[4],
        ]

    return rhs


def _ode_concentrations(times, obs_cmt, doses, p):
    """Concentrations (ng/mL) by scipy (LSODA, rtol 1e-10, atol 1e-12 on amounts in µg), integrating
    from event to event (observations and doses) and adding each bolus to the state; an
    observation at a dose time is taken before the dose."""
    rhs = _des(p)
    events = sorted({0.0, *times, *(d[0] for d in doses)})
    x, state_at = np.zeros(5), {}
    for t_a, t_b in zip(events, events[1:] + [None]):
        state_at[t_a] = x.copy()  # before the doses at t_a
        for td, amount, _, cmt in doses:
            if td == t_a:
                x[int(cmt) - 1] += 1000.0 * amount  # mg -> µg
        if t_b is not None:
            x = solve_ivp(rhs, (t_a, t_b), x, method="LSODA", rtol=1e-10, atol=1e-12).y[:, -1]
    vol = {2: p["V2"], 3: p["V3"]}
    return np.array([state_at[t][c - 1] / vol[c] for t, c in zip(times, obs_cmt)])  # µg/L = ng/mL


def _exact_response(K, tau):
    """exp(K·τ) without cancellation: K + sI ≥ 0 (s = max |K_ii|), so its Taylor series on τ/2^m
    and the m squarings add only non-negative numbers (long double where the platform has it)."""
    K = np.asarray(K, np.longdouble)
    s = -np.min(np.diag(K))
    M = K + s * np.eye(5, dtype=np.longdouble)
    m = max(0, int(np.ceil(np.log2(max(float(s * tau), 1e-300) / 0.5))))
    h = np.longdouble(tau) / 2**m
    term, out = np.eye(5, dtype=np.longdouble), np.eye(5, dtype=np.longdouble)
    for k in range(1, 40):
        term = term @ M * (h / k)
        out = out + term
    out = out * np.exp(-s * h)
    for _ in range(m):
        out = out @ out
    return out.astype(float)


# 5 daily 50 mg oral doses, then a 20 mg IV bolus; given out of order
REGIMEN = [(48.0, 50.0, 0.0, 1), (0.0, 50.0, 0.0, 1), (96.0, 50.0, 0.0, 1), (24.0, 50.0, 0.0, 1),
           (110.0, 20.0, 0.0, 2), (72.0, 50.0, 0.0, 1)]
SAMPLE_TIMES = [0.0, 0.25, 2.0, 7.5, 24.0, 30.0, 48.0, 49.0, 72.0, 100.0, 110.0, 110.1, 115.0, 168.0, 400.0]


def test_rate_matrix_is_the_des():
    p = _scaled_by_hand(TYPICAL, 95.0)
    K = np.asarray(sunitinib_rate_matrix(*TYPICAL, 95.0))
    rhs = _des(p)
    np.testing.assert_allclose(K, np.column_stack([rhs(0.0, e) for e in np.eye(5)]), rtol=1e-12, atol=1e-18)
    # block lower-triangular: depot; sunitinib {2, 5}; SU12662 {3, 4}
    assert np.all(K[0, 1:] == 0) and np.all(K[[1, 4]][:, [2, 3]] == 0)


def test_matches_scipy_ode():
    """Both analytes at 15 times (shuffled), with pre-dose samples at dose times, WT 95 kg."""
    times = np.array(SAMPLE_TIMES * 2)
    obs_cmt = np.repeat([2, 3], len(SAMPLE_TIMES))
    order = np.random.default_rng(0).permutation(len(times))
    times, obs_cmt = times[order], obs_cmt[order]
    ours = _call(TYPICAL, 95.0, times, obs_cmt, REGIMEN)
    ref = _ode_concentrations(times, obs_cmt, REGIMEN, _scaled_by_hand(TYPICAL, 95.0))
    assert np.all(ours[times == 0.0] == 0.0)  # pre-dose at the first dose
    big = ref > 1e-6
    assert big.sum() == len(times) - 2
    rel = np.abs(ours[big] / ref[big] - 1)
    assert rel.max() <= 1e-6, rel.max()
    # the sample at 110 h precedes the IV bolus given then: just after it, C jumps by D/V2
    iv = _call(TYPICAL, 95.0, np.array([110.0, 110.0 + 1e-9]), np.array([2, 2]), REGIMEN)
    v2 = _scaled_by_hand(TYPICAL, 95.0)["V2"]
    np.testing.assert_allclose(iv[1] - iv[0], 1000.0 * 20.0 / v2, rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_matches_exact_exponential_random_parameters(seed):
    """Every (analyte, route) response from 1 min to 4 months, for parameters drawn around the
    typical values (log-SD 1), against a cancellation-free exp(Kτ)."""
    rng = np.random.default_rng(seed)
    taus = np.geomspace(1 / 60, 3000.0, 24)
    for _ in range(4):
        theta = TYPICAL * np.exp(rng.normal(0.0, 1.0, 9))
        theta[7] = min(theta[7], 0.95)
        wt = rng.uniform(40.0, 140.0)
        K = sunitinib_rate_matrix(*theta, wt)
        R = np.array([_exact_response(K, t) for t in taus])
        p = _scaled_by_hand(theta, wt)
        for cmt in (1, 2):
            for obs in (2, 3):
                ours = _call(theta, wt, taus, np.full(len(taus), obs), [(0.0, 1.0, 0.0, cmt)])
                ref = 1000.0 * R[:, obs - 1, cmt - 1] / p["V2" if obs == 2 else "V3"]
                np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=0)


@pytest.mark.parametrize("pair", ["ka=slow sunitinib", "ka=fast sunitinib", "ka=slow SU12662", "fast SU12662=fast sunitinib"])
def test_coincident_eigenvalues(pair):
    """Eigenvalues of different blocks made equal: finite, and within 1e-5 of the exact response."""
    theta = TYPICAL.copy()
    K = np.asarray(sunitinib_rate_matrix(*theta, 70.0))
    p_roots = np.sort(np.linalg.eigvals(K[np.ix_([1, 4], [1, 4])]).real)  # (fast, slow), both < 0
    m_roots = np.sort(np.linalg.eigvals(K[2:4, 2:4]).real)
    if pair == "fast SU12662=fast sunitinib":  # CLM by bisection, to make the two fast roots equal
        lo, hi = 1.0, 40.0
        for _ in range(200):
            theta[3] = (lo + hi) / 2
            m = np.sort(np.linalg.eigvals(np.asarray(sunitinib_rate_matrix(*theta, 70.0))[2:4, 2:4]).real)[0]
            lo, hi = (theta[3], hi) if m > p_roots[0] else (lo, theta[3])
    else:
        theta[0] = -{"ka=slow sunitinib": p_roots[1], "ka=fast sunitinib": p_roots[0], "ka=slow SU12662": m_roots[1]}[pair]
    K = sunitinib_rate_matrix(*theta, 70.0)
    taus = np.geomspace(0.01, 3000.0, 20)
    R = np.array([_exact_response(K, t) for t in taus])
    for cmt in (1, 2):
        for obs in (2, 3):
            ours = _call(theta, 70.0, taus, np.full(len(taus), obs), [(0.0, 1.0, 0.0, cmt)])
            ref = 1000.0 * R[:, obs - 1, cmt - 1] / theta[1 if obs == 2 else 4]
            assert np.all(np.isfinite(ours))
            np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=0)


def test_no_metabolite_without_fm():
    times = np.array(SAMPLE_TIMES * 2)
    obs_cmt = np.repeat([2, 3], len(SAMPLE_TIMES))
    theta0 = TYPICAL.copy()
    theta0[7] = 0.0
    ours, with_fm = _call(theta0, 95.0, times, obs_cmt, REGIMEN), _call(TYPICAL, 95.0, times, obs_cmt, REGIMEN)
    assert np.all(ours[obs_cmt == 3] == 0.0)
    np.testing.assert_array_equal(ours[obs_cmt == 2], with_fm[obs_cmt == 2])  # sunitinib does not depend on FM


def _auc(theta, wt, obs_cmt, cmt):
    """AUC_0-∞ (ng·h/mL) of a 50 mg dose, by Simpson's rule in log time (1e-9 h to 1e6 h)."""
    u = np.linspace(np.log(1e-9), np.log(1e6), 4001)
    c = _call(theta, wt, np.exp(u), np.full(len(u), obs_cmt), [(0.0, 50.0, 0.0, cmt)])
    return simpson(c * np.exp(u), x=u)


def test_allometry_and_mass_balance():
    """Single-dose AUCs (= steady-state AUCs over a dosing interval) are the well-stirred-liver
    values: sunitinib oral D/CLP, IV D·(QH + CLP)/(QH·CLP), SU12662 FM·D/CLM for either route,
    with clearances scaled by (WT/70)^0.75; the initial IV concentration is D/V2, V2 scaled by WT/70."""
    aucs = {}
    for wt in (70.0, 140.0):
        p = _scaled_by_hand(TYPICAL, wt)
        clh = p["QH"] * p["CLP"] / (p["QH"] + p["CLP"])
        metabolite = p["FM"] * 50e3 / p["CLM"]
        expected = {(2, 1): 50e3 / p["CLP"], (2, 2): 50e3 / clh, (3, 1): metabolite, (3, 2): metabolite}
        for (obs, cmt), value in expected.items():
            aucs[wt, obs, cmt] = _auc(TYPICAL, wt, obs, cmt)
            np.testing.assert_allclose(aucs[wt, obs, cmt], value, rtol=1e-6)
        c0 = _call(TYPICAL, wt, np.array([1e-9]), np.array([2]), [(0.0, 50.0, 0.0, 2)])
        np.testing.assert_allclose(c0, 50e3 / p["V2"], rtol=1e-6)
    for obs, cmt in ((2, 1), (2, 2), (3, 1), (3, 2)):
        np.testing.assert_allclose(aucs[140.0, obs, cmt] / aucs[70.0, obs, cmt], 2**-0.75, rtol=1e-6)


def test_gradient_wrt_log_clp():
    """jax.grad of single concentrations (both analytes; within the series' range and beyond)
    against central differences (step 1e-5 in log CLP)."""
    times = np.array([0.5, 3.0, 30.0, 110.5, 300.0] * 2)
    obs_cmt = np.repeat([2, 3], 5)

    def conc(log_clp):
        return _conc(jnp.asarray(TYPICAL).at[2].set(jnp.exp(log_clp)), 95.0, *args)

    dt, da, dr, dc = (np.array(x, float) for x in zip(*REGIMEN))
    args = (jnp.asarray(times), jnp.asarray(obs_cmt, jnp.int32), jnp.asarray(dt), jnp.asarray(da), jnp.asarray(dr),
            jnp.asarray(dc, jnp.int32), jnp.ones(len(REGIMEN), bool))
    grad = jax.jit(jax.grad(lambda x, i: conc(x)[i]))
    x0, h = np.log(TYPICAL[2]), 1e-5
    fd = (conc(x0 + h) - conc(x0 - h)) / (2 * h)
    for i in range(len(times)):
        np.testing.assert_allclose(grad(x0, i), fd[i], rtol=1e-5)


def test_masked_doses_ignored_and_infusions_nan():
    times = np.array(SAMPLE_TIMES * 2)
    obs_cmt = np.repeat([2, 3], len(SAMPLE_TIMES))
    base = _call(TYPICAL, 95.0, times, obs_cmt, REGIMEN)
    junk = [(5.0, 1e4, 0.0, 1), (1.0, 500.0, 100.0, 2), (-3.0, 7.0, 0.0, 3)]  # bolus, infusion, bad cmt
    masked = _call(TYPICAL, 95.0, times, obs_cmt, REGIMEN + junk, mask=[True] * len(REGIMEN) + [False] * 3)
    np.testing.assert_array_equal(masked, base)
    infusion = _call(TYPICAL, 95.0, times, obs_cmt, REGIMEN + [(1.0, 500.0, 100.0, 2)])
    assert np.all(np.isnan(infusion))


def test_fixed_values():
    """The simulator uses QH = 80 L/h and V5 = 588 L (70 kg), and the training prior of FM is
    centred on its typical value 0.21: read from the rate matrix and the prior, not the constants."""
    ka, V2, CLP, CLM, V3, Q34, V4, FM, Q25 = TYPICAL
    K = np.asarray(sunitinib_rate_matrix(*TYPICAL, 70.0))
    np.testing.assert_allclose(K[1, 0], 80.0 * ka / (80.0 + CLP), rtol=1e-14)  # QH·ka·CLIV: first-pass escape
    np.testing.assert_allclose(K[4, 4], -Q25 / 588.0, rtol=1e-14)  # sunitinib peripheral: -Q25/V5
    np.testing.assert_allclose(np.asarray(sunitinib_rate_matrix(*TYPICAL, 140.0))[4, 4], -Q25 * 2**0.75 / (2 * 588.0), rtol=1e-14)
    np.testing.assert_allclose(np.exp(SUNITINIB_PRIOR["FM"][0]), 0.21, rtol=1e-14)
    assert (QH_L_PER_H, V5_L, FM_TYPICAL) == (80.0, 588.0, 0.21)


# ---------------------------------------------------------------- the IndividualModel


def test_model_log_likelihood_matches_scipy():
    """log p(y | φ) of `sunitinib()`: Normal on log(C + 0.001) with one SD per analyte (scipy)."""
    from scipy import stats

    import nlme_ppl as nlp

    m = nlp.models.sunitinib()
    assert m.analytes == (2, 3) and [c[0] for c in m.covariates] == ["WT"] and m.num_params == 11
    design = m.design
    phi = jnp.array([*np.log(TYPICAL) + 0.1, np.log(0.3), np.log(0.2)])
    _, y = m.simulate_one(jax.random.key(0), design)
    conc = np.asarray(sunitinib_concentrations(design["times"], design["obs_cmt"], design["dose_times"], design["dose_amounts"],
                                               design["dose_rates"], design["dose_cmt"], design["dose_mask"],
                                               *np.exp(np.asarray(phi[:9])), design["WT"]))
    sd = np.where(np.asarray(design["obs_cmt"]) == 3, 0.2, 0.3)
    mask = np.asarray(design["mask"])
    want = stats.norm(np.log(conc + 1e-3), sd).logpdf(np.asarray(y))[mask].sum()
    assert float(m.log_likelihood(phi, design, y)) == pytest.approx(want, rel=1e-10)


def test_design_prior_ranges():
    from nlme_ppl.models.sunitinib import sunitinib_design_prior

    d = {k: np.asarray(v) for k, v in sunitinib_design_prior(jax.random.key(1), 4000).items()}
    days = d["dose_mask"].sum(1)
    assert days.min() == 1 and days.max() == 28
    assert set(np.unique(d["dose_amounts"][d["dose_mask"]])) == {25.0, 37.5, 50.0}
    np.testing.assert_array_equal(np.diff(d["dose_times"][0][d["dose_mask"][0]]), 24.0)
    pairs = d["mask"].sum(1) // 2
    assert pairs.min() == 3 and pairs.max() == 10 and np.all(d["mask"].sum(1) % 2 == 0)
    np.testing.assert_array_equal(d["times"][:, ::2], d["times"][:, 1::2])  # paired parent / metabolite samples
    assert set(np.unique(d["obs_cmt"])) == {2, 3}
    assert np.median(d["WT"]) == pytest.approx(75.0, rel=0.02) and np.std(np.log(d["WT"])) == pytest.approx(0.2, rel=0.05)


def test_nonmem_round_trip_and_data_checks(tmp_path):
    import nlme_ppl as nlp

    m = nlp.models.sunitinib()
    sims = nlp.simulate(m, jax.random.key(2), num_simulations=5, progress=False)
    nlp.write_nonmem(sims.data, tmp_path / "suni.csv")
    back = nlp.read_nonmem(tmp_path / "suni.csv")
    a, b = m.designs_from_data(sims.data), m.designs_from_data(back)
    for k in ("times", "obs_cmt", "WT"):
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    for k in ("dose_times", "dose_amounts"):  # padded to the longest regimen in each data set
        np.testing.assert_allclose(np.asarray(a[k])[np.asarray(a["dose_mask"])], np.asarray(b[k])[np.asarray(b["dose_mask"])], err_msg=k)
    infusion = nlp.Doses.from_individuals([[0.0]] * 5, [[50.0]] * 5, rates=[[10.0]] * 5)
    with pytest.raises(ValueError, match=r"dose 0 of individual '0' is an infusion"):
        m.designs_from_data(sims.data.with_doses(infusion))
    with pytest.raises(ValueError, match=r"has one observable"):
        nlp.models.pk_oral_1cmt().designs_from_data(sims.data)


@pytest.mark.heavy
def test_shipped_estimator_recovers_the_published_population():
    """examples/sunitinib.py's study (60 patients, WT in the simulator, two analytes): MAP with the
    shipped estimator and 4,000 draws recovers the means of the parameters with random effects
    within 0.1 and their SDs within 35 % of the sample values, and the typical values of ka, CLP,
    CLM and V3 within 0.1."""
    import sys
    from pathlib import Path

    import nlme_ppl as nlp

    sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
    from sunitinib import RANDOM, population, study

    data, phi = study(jax.random.key(0), 60)
    model = nlp.models.sunitinib()
    fit = nlp.fit_map(population(model), nlp.pretrained("sunitinib"), data, jax.random.key(1), num_draws=4000, max_draws=4000, num_starts=4,
                      diagnose=False)
    for name in (*RANDOM, "ka", "CLM"):
        i = model.param_names.index(name)
        assert abs(fit.params[f"mean[{name}]"] - phi[:, i].mean()) < 0.1, name
    for name in RANDOM:
        i = model.param_names.index(name)
        assert abs(fit.params[f"sd[{name}]"] / phi[:, i].std() - 1) < 0.35, name
