"""Long tables (ID, TIME, DV): `read_table`, round trips, refusals (each message asserted), and
`read_nonmem` on a plain table without dose rows."""

import numpy as np
import pandas as pd
import pytest

import nlme_ppl as nlp


def test_round_trip_through_csv(tmp_path):
    d = nlp.Dataset.from_individuals([[0.0, 1.0, 2.0], [0.5]], [[1.0, 2.0, 3.0], [7.0]], ids=["x", "y"], covariates={"WT": [60, 70]})
    path = tmp_path / "d.csv"
    d.to_csv(path)
    e = nlp.read_table(path, covariates=("WT",))
    assert e.ids == d.ids
    for f in ("times", "values", "mask"):
        np.testing.assert_array_equal(getattr(e, f), getattr(d, f))
    np.testing.assert_array_equal(e.covariates["WT"], d.covariates["WT"])


def test_other_column_names_and_a_dataframe():
    df = pd.DataFrame({"subject": ["b", "b", "a"], "t": [0.0, 1.0, 2.0], "conc": [1.0, 2.0, 3.0]})
    d = nlp.read_table(df, id_col="subject", time_col="t", value_col="conc")
    assert d.ids == ("b", "a")  # order of first appearance
    np.testing.assert_array_equal(d.num_observations, [2, 1])


def test_refuses_missing_column_and_text():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['DV'\]"):
        nlp.read_table(pd.DataFrame({"ID": [1], "TIME": [0.0]}))
    df = pd.DataFrame({"ID": [1, 1, 2], "TIME": [0.0, 1.0, 0.0], "DV": ["1.0", "oops", "2"]})
    with pytest.raises(ValueError, match=r"column 'DV' row 1 \(file line 3, ID 1\) is not a number: 'oops'"):
        nlp.read_table(df)


def test_refuses_time_varying_covariate():
    df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 1.0], "DV": [1.0, 2.0], "WT": [70, 71]})
    with pytest.raises(ValueError, match=r"covariate 'WT' changes within ID 1"):
        nlp.read_table(df, covariates=("WT",))


def test_read_nonmem_reads_a_plain_table_like_read_table(tmp_path):
    """A file without dose rows (no AMT, EVID or MDV column) is read by `read_nonmem` as it is
    by `read_table`: the CLI reads every file with `read_nonmem`."""
    df = pd.DataFrame({"ID": [3, 3, 3, 1, 1], "TIME": [0.0, 1.0, 4.0, 0.5, 2.0], "DV": [1.0, 2.0, 0.5, 3.0, 2.5], "WT": [70.0] * 3 + [82.0] * 2})
    path = tmp_path / "plain.csv"
    df.to_csv(path, index=False)
    a, b = nlp.read_nonmem(path), nlp.read_table(path, covariates=("WT",))
    assert a.doses is None and a.censored is None and a.obs_cmt is None
    assert a.ids == b.ids == ("3", "1")
    for f in ("times", "values", "mask"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(a.covariates["WT"], b.covariates["WT"])
