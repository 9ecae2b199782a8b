"""read_nonmem / write_nonmem: the shipped theophylline file, dose expansion, round trip, and
malformed files refused with the row and column named."""

from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import nlme_ppl as nlp

THEOPH = Path(__file__).parents[2] / "examples" / "data" / "theophylline.csv"


def _table(changes=None):
    df = pd.DataFrame({
        "ID": [1, 1, 1, 1, 2, 2, 2],
        "TIME": [0.0, 0.0, 1.0, 4.0, 0.0, 2.0, 6.0],
        "DV": [0.0, ".", 3.2, 2.1, ".", 5.0, 1.5],
        "AMT": [0, 100, 0, 0, 200, 0, 0],
        "EVID": [0, 1, 0, 0, 1, 0, 0],
        "MDV": [0, 1, 0, 0, 1, 0, 0],
        "CMT": [2, 1, 2, 2, 1, 2, 2],
        "WT": [70, 70, 70, 70, 82, 82, 82],
    })
    for (row, col), value in (changes or {}).items():
        df[col] = df[col].astype(object)
        df.loc[row, col] = value
    return df


def test_theophylline_file():
    d = nlp.read_nonmem(THEOPH)
    assert d.num_individuals == 12 and int(d.num_observations.sum()) == 132
    assert d.doses is not None and np.asarray(d.doses.mask).sum() == 12
    np.testing.assert_allclose(np.asarray(d.doses.amounts[:, 0]), np.asarray(d.covariates["WT"]) * np.asarray(d.covariates["DOSE_MG_KG"]), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(d.doses.cmt[:, 0]), 1)
    assert float(d.values[0, 0]) == pytest.approx(0.74) and float(d.times[0, 0]) == 0.0


def test_doses_addl_infusion_and_covariates():
    df = _table()
    df.loc[1, "AMT"], df["II"], df["ADDL"], df["RATE"] = 100, 0.0, 0, 0.0
    df.loc[1, "II"], df.loc[1, "ADDL"] = 12.0, 2
    df.loc[4, "RATE"], df.loc[4, "CMT"] = 50.0, 2
    d = nlp.read_nonmem(df)
    np.testing.assert_allclose(np.asarray(d.doses.times[0]), [0, 12, 24])
    np.testing.assert_allclose(np.asarray(d.doses.amounts[0]), [100, 100, 100])
    assert np.asarray(d.doses.mask[1]).tolist() == [True, False, False]
    assert float(d.doses.rates[1, 0]) == 50.0 and int(d.doses.cmt[1, 0]) == 2
    np.testing.assert_allclose(np.asarray(d.covariates["WT"]), [70, 82])
    assert d.num_observations.tolist() == [3, 2]


def test_round_trip(tmp_path):
    d = nlp.read_nonmem(THEOPH)
    nlp.write_nonmem(d, tmp_path / "out.csv")
    e = nlp.read_nonmem(tmp_path / "out.csv")
    assert e.ids == d.ids
    for a, b in ((e.times, d.times), (e.values, d.values), (e.mask, d.mask), (e.doses.times, d.doses.times), (e.doses.amounts, d.doses.amounts)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for k in d.covariates:
        np.testing.assert_allclose(np.asarray(e.covariates[k]), np.asarray(d.covariates[k]))


@pytest.mark.parametrize(
    "df, match",
    [
        (_table().drop(columns="DV"), r"missing column\(s\) \['DV'\]"),
        (_table({(2, "DV"): "abc"}), r"column 'DV' at row 2 \(file line 4, ID 1\) is 'abc', not a number, on an observation row"),
        (_table({(4, "AMT"): -5}), r"column 'AMT' at row 4 \(file line 6, ID 2\) is -5 on a dose row; dose amounts must be positive"),
        (_table({(3, "TIME"): 0.5}), r"TIME decreases within ID 1 at row 3 \(file line 5, ID 1\)"),
        (_table({(5, "MDV"): 1, (6, "MDV"): 1}), r"ID 2 has no observations"),
        (_table({(6, "WT"): 90}), r"covariate 'WT' changes within ID 2"),
        (_table({(1, "EVID"): 5}), r"column .EVID. at row 1 \(file line 3, ID 1\) is 5; expected 0"),
    ],
)
def test_malformed_files_are_refused(df, match):
    with pytest.raises(ValueError, match=match):
        nlp.read_nonmem(df, covariates=["WT"])


def test_censoring_is_kept_by_default_and_refused_on_request():
    df = _table()
    df["CENS"] = 0
    df.loc[3, "CENS"] = 1
    with pytest.raises(ValueError, match=r"column 'CENS' marks 1 observation\(s\) as below the limit of quantification, the first at row 3"):
        nlp.read_nonmem(df, blq="refuse")
    d = nlp.read_nonmem(df)
    assert np.asarray(d.censored).sum() == 1 and bool(d.censored[0, 2])


def test_several_observed_compartments_are_kept_and_round_trip(tmp_path):
    df = _table({(3, "CMT"): 3, (6, "CMT"): 3})  # a metabolite sample per individual
    d = nlp.read_nonmem(df)
    np.testing.assert_array_equal(np.asarray(d.obs_cmt), [[2, 2, 3], [2, 3, 0]])
    nlp.write_nonmem(d, tmp_path / "two.csv")
    back = nlp.read_nonmem(tmp_path / "two.csv")
    np.testing.assert_array_equal(np.asarray(back.obs_cmt), np.asarray(d.obs_cmt))
    assert nlp.read_nonmem(_table()).obs_cmt is None  # one observed compartment: nothing to keep
    with pytest.raises(ValueError, match="several analytes"):
        d.to_dataframe()


def _iv_study():
    """Two IV patients: ID 1 at steady state on entry (SS=1, II=12) with two more infusions, an
    other-event row, then a reset-and-dose (EVID=4); ID 2 with boluses by ADDL, a reset
    (EVID=3) and a steady-state dose added on top (SS=2)."""
    return pd.DataFrame({
        "ID":   [1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2],
        "TIME": [0.0, 1.0, 12.0, 13.0, 20.0, 24.0, 48.0, 50.0, 0.0, 30.0, 36.0, 40.0, 40.0, 44.0],
        "DV":   [".", 8.1, ".", 7.5, ".", ".", ".", 2.2, ".", 4.0, ".", ".", ".", 3.1],
        "AMT":  [600, 0, 600, 0, 0, 600, 300, 0, 250, 0, 0, 100, 0, 0],
        "RATE": [200, 0, 200, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0],
        "EVID": [1, 0, 1, 0, 2, 1, 4, 0, 1, 0, 3, 1, 2, 0],
        "MDV":  [1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 0],
        "SS":   [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0],
        "II":   [12, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 8, 0, 0],
        "ADDL": [0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0],
    })


def test_steady_state_resets_and_other_events_are_read_and_counted():
    d, report = nlp.read_nonmem(_iv_study(), with_report=True)
    doses = d.doses
    np.testing.assert_allclose(np.asarray(doses.times), [[0, 12, 24, 48], [0, 12, 24, 40]])
    np.testing.assert_allclose(np.asarray(doses.ii), [[12, 0, 0, 0], [0, 0, 0, 8]])
    # ID 1: EVID=4 at 48 ends the three infusions; ID 2: EVID=3 at 36 ends the ADDL boluses, not the SS=2 dose at 40
    np.testing.assert_array_equal(np.asarray(doses.end), [[48, 48, 48, np.inf], [36, 36, 36, np.inf]])
    assert report.other_events == 2 and report.resets == 1 and report.reset_doses == 1 and report.steady_state_doses == 2
    assert (report.rows, report.individuals, report.observations, report.dose_records, report.doses, report.additional_doses) == (14, 2, 5, 6, 8, 2)
    assert "skipped 2 other-event rows (EVID 2)" in str(report)
    assert nlp.read_nonmem(_iv_study()).doses.times.shape == (2, 4)  # without the report: the data alone


def test_steady_state_and_resets_reach_the_simulator():
    """The IV model on the read data against the concentration by hand: ID 1 at t = 1 h is the
    steady-state 3-h infusion of 600 mg every 12 h (CL 3 L/h, V 30 L), and at t = 50 h only the
    300-mg bolus given at the reset at 48 h acts."""
    data = nlp.read_nonmem(_iv_study())
    model = nlp.models.pk_iv_1cmt()
    design = jax.tree.map(lambda x: x[0], model.designs_from_data(data))
    cl, v = 3.0, 30.0
    ke, rate, dur, ii = cl / v, 200.0, 3.0, 12.0
    from nlme_ppl.models.pk_iv import iv_one_compartment_concentration

    c = np.asarray(iv_one_compartment_concentration(design["times"], design["dose_times"], design["dose_amounts"], design["dose_rates"],
                                                    design["dose_cmt"], design["dose_mask"], cl, v, dose_ii=design["dose_ii"],
                                                    dose_end=design["dose_end"]))
    # steady state during the infusion: the current infusion plus the washout of all earlier ones
    at1 = rate / cl * (1 - np.exp(-ke * 1.0)) + rate / cl * (1 - np.exp(-ke * dur)) * np.exp(-ke * (1.0 - dur + ii)) / (1 - np.exp(-ke * ii))
    np.testing.assert_allclose(c[0], at1, rtol=1e-10)
    np.testing.assert_allclose(c[2], 300.0 / v * np.exp(-ke * 2.0), rtol=1e-10)


def test_reset_records_round_trip(tmp_path):
    d = nlp.read_nonmem(_iv_study())
    written = nlp.write_nonmem(d, tmp_path / "out.csv")
    # ID 2's SS=2 dose at 40 h acts on nothing earlier (the reset at 36 h ended it all), so it is written as the equivalent SS=1
    assert sorted(written["EVID"].unique().tolist()) == [0, 1, 3, 4] and sorted(written["SS"].unique().tolist()) == [0, 1]
    e = nlp.read_nonmem(tmp_path / "out.csv")
    for name in ("times", "amounts", "rates", "cmt", "mask", "ii", "end"):
        np.testing.assert_array_equal(np.asarray(getattr(e.doses, name)), np.asarray(getattr(d.doses, name)), err_msg=name)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({(0, "SS"): 3}, r"column 'SS' at row 0 \(file line 2, ID 1\) is 3; expected 0, 1"),
        ({(1, "SS"): 1}, r"column 'SS' at row 1 \(file line 3, ID 1\) is 1 on a row that is not a dose"),
        ({(0, "II"): 0}, r"row 0 \(file line 2, ID 1\) has SS=1 but II=0; a steady-state dose needs its interval II > 0"),
        ({(0, "RATE"): 40}, r"row 0 \(file line 2, ID 1\) is a steady-state infusion lasting AMT/RATE=15, not shorter than II=12"),
        ({(8, "ADDL"): 5}, r"the reset at row 10 \(file line 12, ID 2\) .* falls while ADDL doses of row 8 \(file line 10, ID 2\) are pending"),
        ({(10, "TIME"): 20.0}, r"TIME decreases within ID 2 at row 10"),
    ],
)
def test_dosing_records_it_cannot_model_are_refused(changes, match):
    df = _iv_study()
    for (row, col), value in changes.items():
        df.loc[row, col] = value
    with pytest.raises(ValueError, match=match):
        nlp.read_nonmem(df)


def test_models_without_steady_state_refuse_such_data():
    """The shipped oral estimators' model (no dose_ii / dose_end in its design) refuses SS and
    reset records, naming the individual and dose, instead of simulating them as plain doses."""
    df = _table()
    df["SS"], df["II"] = 0, 0.0
    df.loc[1, "SS"], df.loc[1, "II"] = 1, 12.0
    data = nlp.read_nonmem(df, covariates=["WT"])
    with pytest.raises(ValueError, match=r"dose 0 of individual '1' \(TIME=0\) is a steady-state dose \(SS with II=12\), but model "
                                         r"'pk_oral_1cmt' .* does not simulate steady state"):
        nlp.pretrained("pk_oral_1cmt").sample(data, jax.random.key(0), num_draws=2)
    df = _table({(4, "EVID"): 4})
    df.loc[1, "TIME"], df.loc[2, "TIME"], df.loc[3, "TIME"] = 0.0, 1.0, 4.0
    reset = pd.concat([df.iloc[:4], pd.DataFrame({"ID": [1, 1], "TIME": [5.0, 6.0], "DV": [".", 1.0], "AMT": [0, 0], "EVID": [3, 0],
                                                  "MDV": [1, 0], "CMT": [1, 2], "WT": [70, 70]}), df.iloc[4:]], ignore_index=True)
    data = nlp.read_nonmem(reset, covariates=["WT"])
    with pytest.raises(ValueError, match=r"dose 0 of individual '1' \(TIME=0\) is ended by a reset at TIME=5 .* does not simulate resets"):
        nlp.models.pk_oral_1cmt().designs_from_data(data)
    # the steady-state variant reads them
    design = nlp.models.pk_oral_1cmt(steady_state=True).designs_from_data(data)
    np.testing.assert_array_equal(np.asarray(design["dose_end"])[0, :1], [5.0])


def test_occasions_become_rows_of_their_individual():
    rows = []
    for i in (1, 2):
        for occ in (1, 2):
            t0 = 100.0 * (occ - 1)
            rows.append(dict(ID=i, TIME=t0, DV=0, AMT=100 * occ, EVID=1, MDV=1, OCC=occ, WT=70 + i))
            rows += [dict(ID=i, TIME=t0 + t, DV=1.0 + t + occ, AMT=0, EVID=0, MDV=0, OCC=occ, WT=70 + i) for t in (1, 2, 4)]
    rows.insert(3, dict(ID=1, TIME=1.5, DV=".", AMT=0, EVID=2, MDV=1, OCC=".", WT=71))  # an other-event row: no OCC needed
    df = pd.DataFrame(rows)
    data = nlp.read_nonmem(df, occasion="OCC")
    assert data.ids == ("1/1", "1/2", "2/1", "2/2") and data.subjects == ("1", "1", "2", "2")
    # each occasion holds its own doses and observations
    np.testing.assert_allclose(np.asarray(data.doses.amounts)[:, 0], [100, 200, 100, 200])
    np.testing.assert_allclose(np.asarray(data.values)[1], [4.0, 5.0, 7.0])
    # each occasion's clock starts at its first record (occasion 2 starts at TIME 100 in the file)
    np.testing.assert_allclose(np.asarray(data.times)[1], [1.0, 2.0, 4.0])
    np.testing.assert_allclose(np.asarray(data.doses.times)[:, 0], 0.0)
    assert repr(data).startswith("Dataset(4 occasions of 2 individuals,")
    np.testing.assert_allclose(np.asarray(data.covariates["WT"]), [71, 71, 72, 72])
    assert data.subset([1, 2]).subjects == ("1", "2")
    plain = nlp.read_nonmem(df.drop(columns="OCC"))
    assert plain.subjects is None and plain.ids == ("1", "2")
    df.loc[1, "OCC"] = "."
    with pytest.raises(ValueError, match="column 'OCC' at row 1 .*needs a numeric occasion"):
        nlp.read_nonmem(df, occasion="OCC")
    with pytest.raises(ValueError, match="occasion column 'OCCASION' is not in the file"):
        nlp.read_nonmem(df, occasion="OCCASION")
