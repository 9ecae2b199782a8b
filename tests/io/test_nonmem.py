"""read_nonmem / write_nonmem: the shipped theophylline file, dose expansion, round trip, and
malformed files refused with the row and column named."""

from pathlib import Path

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
        (_table({(1, "EVID"): 4}), r"EVID=4 \(reset\) at row 1"),
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
