"""pk_iv_1cmt / pk_iv_2cmt: parameters, the compartment map (CMT 1 = central, as NONMEM's
ADVAN1/3), the design prior, simulation with steady state and resets, the likelihood against
scipy, the encoding the estimators read, and a tiny training run. The closed forms themselves
are checked against an ODE solve in test_pk_closed_forms.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import nlme_ppl as nlp
from nlme_ppl.models.pk_iv import PK_IV_DESIGN, iv_two_compartment_concentration, pk_iv_design_prior


def _iv_table(cmt=None):
    df = pd.DataFrame({
        "ID": [1, 1, 1, 1, 2, 2, 2],
        "TIME": [0.0, 0.5, 12.0, 20.0, 0.0, 2.0, 30.0],
        "DV": [".", 9.0, ".", 3.0, ".", 5.0, 1.0],
        "AMT": [500, 0, 500, 0, 300, 0, 0],
        "RATE": [0, 0, 250, 0, 0, 0, 0],
        "EVID": [1, 0, 1, 0, 1, 0, 0],
        "MDV": [1, 0, 1, 0, 1, 0, 0],
    })
    if cmt is not None:
        df["CMT"] = cmt
    return df


def test_parameters_names_and_compartments():
    m = nlp.models.pk_iv_1cmt()
    assert m.param_names == ("CL", "V", "sigma_add") and m.name == "pk_iv_1cmt" and m.dose_compartments == ((1, "central"),)
    m2 = nlp.models.pk_iv_2cmt(error="combined", censoring=True)
    assert m2.param_names == ("CL", "V1", "Q", "V2", "sigma_add", "sigma_prop") and m2.name == "pk_iv_2cmt_combined_censored"
    assert m2.uses_censoring and {"dose_ii", "dose_end"} <= set(m2.design)
    assert nlp.models.get("pk_iv_1cmt_censored").name == "pk_iv_1cmt_censored"
    assert {"pk_iv_1cmt", "pk_iv_2cmt"} <= set(nlp.models.BUILTIN)
    assert nlp.models.pk_oral_1cmt().dose_compartments == ((1, "depot"), (2, "central"))
    with pytest.raises(ValueError, match=r"`error` must be one of"):
        nlp.models.pk_iv_1cmt(error="log")


def test_cmt_1_or_none_is_central_and_cmt_2_is_refused():
    """The same file means IV doses to pk_iv_1cmt (CMT 1 or no CMT column) and oral doses to
    pk_oral_1cmt (CMT 1 = depot); the estimators' dose-route channel follows the model."""
    from nlme_ppl.estimators import encode

    iv, oral = nlp.models.pk_iv_1cmt(), nlp.models.pk_oral_1cmt()
    for df in (_iv_table(), _iv_table(cmt=1)):
        data = nlp.read_nonmem(df)
        _, rows, mask = encode(iv, data)
        dose_rows = rows[..., 1] == 1
        assert dose_rows.sum() == 3 and np.all(rows[dose_rows][:, 4] == 1)  # central
        first = jax.tree.map(lambda x: x[:1], iv.designs_from_data(data))
        np.testing.assert_array_equal(np.asarray(first["dose_cmt"][0, :2]), [1, 1])
    bolus = nlp.read_nonmem(_iv_table(cmt=1).assign(RATE=0))
    _, rows, _ = encode(oral, bolus)
    assert np.all(rows[rows[..., 1] == 1][:, 4] == 0)  # the oral model reads CMT 1 as the depot
    data = nlp.read_nonmem(_iv_table(cmt=[2, 2, 2, 2, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"dose 0 of individual '1' \(TIME=0\) goes into CMT=2, which model 'pk_iv_1cmt' does not dose "
                                         r"\(its dose compartments: CMT 1 = central"):
        iv.designs_from_data(data)
    with pytest.raises(ValueError, match=r"goes into CMT=2, which model 'pk_iv_2cmt' does not dose"):
        nlp.models.pk_iv_2cmt().designs_from_data(data)


def test_design_prior_ranges():
    d = {k: np.asarray(v) for k, v in pk_iv_design_prior(jax.random.key(3), 4000).items()}
    dm, om = d["dose_mask"], d["mask"]
    assert set(np.unique(dm.sum(1))) == set(range(1, 11)) and om.sum(1).min() == 2 and om.sum(1).max() == 24
    amounts = d["dose_amounts"][dm]
    assert amounts.min() >= 10.0 and amounts.max() <= 2000.0 * 3.0
    infused = dm & (d["dose_rates"] > 0)
    assert 0.4 < infused.any(1).mean() < 0.6
    duration = d["dose_amounts"][infused] / d["dose_rates"][infused]
    assert duration.min() >= 0.25 - 1e-9 and duration.max() <= 4.0 + 1e-9  # shorter than any interval (>= 6 h)
    ss = (d["dose_ii"] > 0).any(1)
    assert 0.2 < ss.mean() < 0.3 and np.all(d["dose_ii"][:, 1:] == 0)
    reset = np.isfinite(d["dose_end"]).any(1)
    assert 0.05 < reset.mean() < 0.12
    follow = np.where(om, d["times"], 0).max(1) - d["dose_times"].max(1)
    assert follow.max() <= PK_IV_DESIGN["follow_up_h"][1] + 1e-9
    assert np.all(d["dose_cmt"][dm] == 1)
    # every design is one that Doses accepts (SS infusions shorter than II, ends after the doses)
    nlp.Doses.from_arrays(d["dose_times"], np.where(dm, d["dose_amounts"], 1.0), rates=d["dose_rates"], cmt=d["dose_cmt"], mask=dm,
                          ii=d["dose_ii"], end=d["dose_end"])


def test_simulations_carry_steady_state_and_resets_back_to_the_design():
    m = nlp.models.pk_iv_2cmt(error="proportional")
    sims = nlp.simulate(m, jax.random.key(0), num_simulations=400, progress=False)
    assert sims.num_dropped == 0
    doses = sims.data.doses
    assert doses.steady_state.any() and doses.reset.any() and np.all(np.asarray(doses.cmt)[np.asarray(doses.mask)] == 1)
    design = m.designs_from_data(sims.data)
    expected = m.sample_designs(jax.random.key(0), 1)  # the same entries, in the same tree
    assert set(design) == set(expected)
    # the simulated data, read back through the design, give the same noise-free concentrations
    i = int(np.flatnonzero(doses.steady_state.any(1) & doses.reset.any(1))[0]) if (doses.steady_state.any(1) & doses.reset.any(1)).any() else 0
    one = jax.tree.map(lambda x: x[i], design)
    c = iv_two_compartment_concentration(one["times"], one["dose_times"], one["dose_amounts"], one["dose_rates"], one["dose_cmt"],
                                         one["dose_mask"], *np.exp(np.asarray(sims.params[i, :4])), dose_ii=one["dose_ii"],
                                         dose_end=one["dose_end"])
    y = np.asarray(sims.data.values[i])[np.asarray(one["mask"])]
    c = np.asarray(c)[np.asarray(one["mask"])]
    # proportional error: y / C - 1 ~ N(0, b); b = exp(sigma_prop) <= e^{-2 + 4·0.7}; a loose sanity bound on the z-scores
    b = float(np.exp(sims.params[i, 4]))
    assert np.all(np.abs(y / np.maximum(c, 1e-12) - 1) / b < 6)


@pytest.mark.parametrize("error", ["additive", "proportional", "combined"])
def test_log_likelihood_matches_scipy(error):
    m = nlp.models.pk_iv_1cmt(error=error)
    design = m.design
    phi = jnp.array([1.0, 3.4, *([-0.5] if error != "proportional" else []), *([-2.0] if error != "additive" else [])])
    _, y = m.simulate_one(jax.random.key(1), design)
    from nlme_ppl.models.pk_iv import iv_one_compartment_concentration

    conc = np.asarray(iv_one_compartment_concentration(design["times"], design["dose_times"], design["dose_amounts"], design["dose_rates"],
                                                       design["dose_cmt"], design["dose_mask"], *np.exp(phi[:2]), dose_ii=design["dose_ii"],
                                                       dose_end=design["dose_end"]))
    sd2 = (np.exp(-1.0) if error != "proportional" else 1e-8) + (np.exp(-2.0) * conc) ** 2 * (error != "additive")
    mask = np.asarray(design["mask"])
    expected = stats.norm(conc, np.sqrt(sd2)).logpdf(np.asarray(y))[mask].sum()
    assert float(m.log_likelihood(phi, design, y)) == pytest.approx(expected, rel=1e-10)


def test_tiny_training_run_samples_iv_data():
    """`nlp.train` on 2,000 simulations (one epoch) gives an estimator that reads a NONMEM file
    with steady state and resets. A smoke test: nothing about its accuracy."""
    m = nlp.models.pk_iv_1cmt()
    post = nlp.train(m, jax.random.key(0), num_simulations=2000, config=nlp.TrainConfig(max_epochs=1), progress=False)
    df = _iv_table()
    df["SS"], df["II"] = [1, 0, 0, 0, 0, 0, 0], [12.0, 0, 0, 0, 0, 0, 0]
    draws = post.sample(nlp.read_nonmem(df), jax.random.key(1), num_draws=5)
    assert draws.shape == (2, 5, 3) and np.isfinite(np.asarray(draws)).all()
