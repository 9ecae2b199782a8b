"""pk_oral_1cmt: the closed form against a scipy ODE with doses, the design prior, the error
models and the data checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.integrate import solve_ivp

import nlme_ppl as nlp
from nlme_ppl.models.pk import one_compartment_concentration, two_compartment_concentration


def _ode_concentration(times, doses, ka, cl, v, q=0.0, v2=1.0):
    """Depot, central (and peripheral) amounts by scipy (LSODA, rtol 1e-10) between dose events."""
    ke, k12, k21 = cl / v, q / v, q / v2
    events = sorted({0.0, *[d[0] for d in doses], *[d[0] + d[1] / d[2] for d in doses if d[2] > 0], float(times.max())})

    def infusion_rate(t):
        return sum(r for (td, a, r, c) in doses if r > 0 and td <= t < td + a / r)

    x, out = np.zeros(3), np.zeros_like(times)
    for t_a, t_b in zip(events[:-1], events[1:]):
        for td, a, r, c in doses:
            if td == t_a and r == 0:
                x[0 if c == 1 else 1] += a
        rate = infusion_rate(t_a)
        rhs = lambda t, s: [-ka * s[0], ka * s[0] - (ke + k12) * s[1] + k21 * s[2] + rate, k12 * s[1] - k21 * s[2]]  # noqa: E731
        sol = solve_ivp(rhs, (t_a, t_b), x, method="LSODA",
                        rtol=1e-10, atol=1e-12, dense_output=True)
        inside = (times > t_a) & (times <= t_b)
        out[inside] = sol.sol(times[inside])[1] / v
        x = sol.y[:, -1]
    return out


@pytest.mark.parametrize(
    "doses",
    [
        [(0.0, 320.0, 0.0, 1)],  # one oral dose
        [(0.0, 100.0, 0.0, 1), (12.0, 100.0, 0.0, 1), (24.0, 150.0, 0.0, 1)],  # multiple oral doses
        [(0.0, 500.0, 0.0, 2), (8.0, 200.0, 0.0, 1)],  # IV bolus, then oral
        [(1.0, 300.0, 100.0, 2), (10.0, 300.0, 50.0, 2)],  # two zero-order infusions (3 h, 6 h)
    ],
)
@pytest.mark.parametrize("ka, cl, v", [(1.5, 2.8, 32.0), (0.09, 3.0, 33.0)])  # ka near ke = CL/V in the second
def test_closed_form_matches_ode(doses, ka, cl, v):
    times = np.linspace(0.0, 36.0, 145)
    dt, da, dr, dc = (np.array(x) for x in zip(*doses))
    ours = one_compartment_concentration(jnp.asarray(times), jnp.asarray(dt), jnp.asarray(da), jnp.asarray(dr),
                                         jnp.asarray(dc), jnp.ones(len(doses), bool), ka, cl, v)
    ref = _ode_concentration(times, doses, ka, cl, v)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    "doses",
    [
        [(0.0, 320.0, 0.0, 1), (12.0, 320.0, 0.0, 1)],
        [(0.0, 500.0, 0.0, 2), (6.0, 200.0, 0.0, 1)],
        [(1.0, 300.0, 100.0, 2)],
    ],
)
@pytest.mark.parametrize("ka, cl, v1, q, v2", [(1.5, 3.0, 20.0, 4.0, 60.0), (0.5, 10.0, 10.0, 0.5, 100.0)])
def test_two_compartment_closed_form_matches_ode(doses, ka, cl, v1, q, v2):
    times = np.linspace(0.0, 48.0, 193)
    dt, da, dr, dc = (np.array(x) for x in zip(*doses))
    ours = two_compartment_concentration(jnp.asarray(times), jnp.asarray(dt), jnp.asarray(da), jnp.asarray(dr),
                                         jnp.asarray(dc), jnp.ones(len(doses), bool), ka, cl, v1, q, v2)
    ref = _ode_concentration(times, doses, ka, cl, v1, q, v2)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-6, atol=1e-9)


def test_two_compartment_model_simulates():
    m = nlp.models.pk_oral_2cmt(error="combined")
    assert m.param_names == ("ka", "CL", "V1", "Q", "V2", "sigma_add", "sigma_prop") and m.uses_doses
    sims = nlp.simulate(m, jax.random.key(0), num_simulations=500, progress=False)
    assert sims.num_dropped == 0 and sims.data.doses is not None


def test_padded_doses_contribute_nothing():
    times = jnp.linspace(0, 24, 25)
    one = one_compartment_concentration(times, jnp.array([0.0]), jnp.array([320.0]), jnp.zeros(1), jnp.ones(1, int), jnp.ones(1, bool), 1.5, 2.8, 32.0)
    padded = one_compartment_concentration(times, jnp.array([0.0, 5.0]), jnp.array([320.0, 999.0]), jnp.zeros(2),
                                           jnp.ones(2, int), jnp.array([True, False]), 1.5, 2.8, 32.0)
    np.testing.assert_array_equal(np.asarray(one), np.asarray(padded))


@pytest.mark.parametrize("error, sigma_names", [("additive", ("sigma_add",)), ("proportional", ("sigma_prop",)), ("combined", ("sigma_add", "sigma_prop"))])
def test_error_models_log_likelihood_matches_scipy(error, sigma_names):
    m = nlp.models.pk_oral_1cmt(error=error)
    assert m.param_names == ("ka", "CL", "V", *sigma_names)
    design = m.design
    phi = jnp.array([0.4, 1.0, 3.5, *([-0.5] if "sigma_add" in sigma_names else []), *([-2.0] if "sigma_prop" in sigma_names else [])])
    _, y = m.simulate_one(jax.random.key(0), design)
    conc = np.asarray(one_compartment_concentration(design["times"], design["dose_times"], design["dose_amounts"], design["dose_rates"],
                                                    design["dose_cmt"], design["dose_mask"], *np.exp(phi[:3])))
    sd2 = (np.exp(-1.0) if "sigma_add" in sigma_names else 1e-8) + (np.exp(-2.0) * conc) ** 2 * ("sigma_prop" in sigma_names)
    mask = np.asarray(design["mask"])
    expected = stats.norm(conc, np.sqrt(sd2)).logpdf(np.asarray(y))[mask].sum()
    assert float(m.log_likelihood(phi, design, y)) == pytest.approx(expected, rel=1e-10)


def test_design_prior_ranges():
    d = nlp.models.pk.pk_design_prior(jax.random.key(1), 4000)
    dm, om = np.asarray(d["dose_mask"]), np.asarray(d["mask"])
    n_doses, n_obs = dm.sum(1), om.sum(1)
    assert set(np.unique(n_doses)) == {1, 2, 3} and n_obs.min() == 6 and n_obs.max() == 16
    amounts = np.asarray(d["dose_amounts"])[dm]
    assert 50 <= amounts.min() and amounts.max() <= 1000
    assert np.all(np.asarray(d["dose_times"])[:, 0] == 0)
    t = np.asarray(d["times"])
    assert all(np.all(np.diff(t[i][om[i]]) >= 0) for i in range(100))
    follow = t.max(1) - np.asarray(d["dose_times"]).max(1)
    assert follow.max() <= 36.0 + 1e-9


def test_data_checks_name_the_problem():
    m = nlp.models.pk_oral_1cmt()
    data = nlp.Dataset.from_arrays([1.0, 2.0], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="simulates dosing events but the data has none"):
        m.designs_from_data(data)
    depot_infusion = nlp.Doses.from_individuals([[0.0]], [[100.0]], rates=[[10.0]], cmt=[[1]])
    with pytest.raises(ValueError, match=r"dose 0 of individual '1' is a zero-order input into the depot"):
        m.designs_from_data(data.with_doses(depot_infusion))
    with pytest.raises(ValueError, match="has dosing events but model 'frohlich_simple' does not read doses"):
        nlp.models.frohlich_simple().designs_from_data(data.with_doses(nlp.Doses.from_individuals([[0.0]], [[100.0]])))
    with pytest.raises(ValueError, match=r"dose 0 of individual at row 0 has amount -1.0"):
        nlp.Doses.from_individuals([[0.0]], [[-1.0]])


def test_theophylline_agrees_with_r_nlme():
    """MAP with the shipped estimator, refined (the default), against R nlme's ML fit of the same
    model (examples/theophylline_nlme.R): population means within 0.03 on the log scale,
    random-effect SDs within 12 %, the residual SD (no random effect) within 0.1 on the log scale.

    Measured (2026-12, issue 15), 1,000 draws, keys 0-2, with the kernel treatment of sigma_add:
    means differ by at most 0.016 (CL), SDs by at most 6.9 % (CL), log sigma_add by at most
    0.061; the bounds are those plus margins of 0.014, 5 points and 0.04. With the likelihood
    treatment (now the default on refined draws): means by at most 0.017, SDs by 3.0 % at this
    key (11.8 % at key 2), log sigma_add by at most 0.024. (The raw estimator at 200 draws, the
    earlier default, was off by up to 0.024 and 16.6 %, and by 0.22 on log sigma_add.)

    At 1,000 draws the fit's Monte Carlo spread is about the bounds themselves (issue 19, keys
    0-4): the means' errors reached 0.028 (code of stop 33) and 0.035 (stop 34, another random
    stream), the SDs' 13.0 % and 10.1 %. At 4,000 draws (this test), keys 0-4: means within
    0.019 (ka), SDs within 8.4 % (V), log sigma_add within 0.021; so the bounds keep margins of
    0.011, 3.6 points and 0.08."""
    import pandas as pd
    from pathlib import Path

    here = Path(__file__).parents[2] / "examples" / "data"
    data = nlp.read_nonmem(here / "theophylline.csv")
    model = nlp.models.pk_oral_1cmt()
    fit = nlp.fit_map(nlp.populations.gaussian(model, fixed=("sigma_add",)), nlp.pretrained("pk_oral_1cmt"), data,
                      jax.random.key(0), num_draws=4000, max_draws=4000, diagnose=False)
    assert fit.refined is not None
    ref = pd.read_csv(here / "theophylline_nlme.csv").set_index("parameter")["estimate"]
    for p in ("ka", "CL", "V"):
        assert abs(fit.params[f"mean[{p}]"] - ref[f"mean[{p}]"]) <= 0.03, p
        assert abs(fit.params[f"sd[{p}]"] / ref[f"sd[{p}]"] - 1) <= 0.12, p
    assert abs(fit.params["mean[sigma_add]"] - np.log(ref["sigma_add_sd"])) <= 0.1
