"""Dataset construction, round trips and refusal of bad input (each message asserted)."""

import numpy as np
import pytest

import nlme_ppl as nlp


def test_from_arrays_pads_and_masks():
    t = np.array([[0.0, 1.0, 2.0], [0.5, 1.5, 0.0]])
    y = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, np.nan]])
    m = np.array([[True, True, True], [True, True, False]])
    d = nlp.Dataset.from_arrays(t, y, mask=m, ids=["a", "b"], covariates={"WT": [70.0, 80.0]})
    assert d.num_individuals == 2 and d.ids == ("a", "b")
    np.testing.assert_array_equal(d.num_observations, [3, 2])
    assert float(d.values[1, 2]) == 0.0  # padding is zeroed, never read
    np.testing.assert_allclose(d.covariates["WT"], [70.0, 80.0])


def test_shared_times_broadcast():
    d = nlp.Dataset.from_arrays([0.0, 1.0], [[1.0, 2.0], [3.0, 4.0]])
    assert d.times.shape == (2, 2) and d.ids == ("1", "2")


def test_subset():
    d = nlp.Dataset.from_arrays([0.0, 1.0], np.arange(6.0).reshape(3, 2), ids=["a", "b", "c"])
    s = d.subset(np.array([2, 0]))
    assert s.ids == ("c", "a")
    np.testing.assert_array_equal(s.values, [[4.0, 5.0], [0.0, 1.0]])


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(times=[0, 1], values=[[1.0, np.nan]], ids=["p7"]), ValueError, r"non-finite value \(nan\) for individual 'p7'"),
        (dict(times=[0, 1], values=[[1.0, np.inf]]), ValueError, r"non-finite value \(inf\) for individual '1'"),
        (dict(times=[[0, 2, 1]], values=[[1.0, 2.0, 3.0]], ids=["s3"]), ValueError, r"times are not sorted for individual 's3'.*t=2.0 is followed by t=1.0"),
        (dict(times=[0, 1, 2], values=[[1.0, 2.0, 3.0], [1.0, 2.0]]), ValueError, r"ragged.*pass padded arrays with a `mask`"),
        (dict(times=[0, 1], values=[[1.0, 2.0, 3.0]]), ValueError, r"`times` has shape \(2,\) but `values` has shape \(1, 3\)"),
        (dict(times=[0, 1], values=[[1.0, 2.0]], mask=[[1, 0]]), TypeError, r"`mask` must be boolean"),
        (dict(times=[0, 1], values=[[1.0, 2.0], [3.0, 4.0]], ids=["a", "a"]), ValueError, r"ids must be unique; 'a' appears more than once"),
        (dict(times=[0, 1], values=[[1.0, 2.0]], mask=np.array([[False, False]]), ids=["z"]), ValueError, r"individual 'z' \(row 0\) has no observations"),
        (dict(times=[0, 1], values=[["a", "b"]]), TypeError, r"`values` must be numeric"),
        (dict(times=[0, 1], values=[[1.0, 2.0]], covariates={"WT": [np.nan]}), ValueError, r"covariate 'WT' is not finite for individual '1'"),
        (dict(times=[0, 1], values=[[1.0, 2.0]], covariates={"WT": [1.0, 2.0]}), ValueError, r"covariate 'WT' must have 1 values"),
        (dict(times=[0, 1], values=[[1.0, 2.0]], ids=["a", "b"]), ValueError, r"expected 1 ids, one per individual; got 2"),
    ],
)
def test_from_arrays_refuses(kwargs, error, match):
    times, values = kwargs.pop("times"), kwargs.pop("values")
    with pytest.raises(error, match=match):
        nlp.Dataset.from_arrays(times, values, **kwargs)


def test_from_individuals_refuses_length_mismatch():
    with pytest.raises(ValueError, match=r"individual 'b' \(row 1\): times \(2,\) and values \(3,\)"):
        nlp.Dataset.from_individuals([[0.0], [0.0, 1.0]], [[1.0], [1.0, 2.0, 3.0]], ids=["a", "b"])


def test_doses_are_never_dropped_silently(tmp_path):
    doses = nlp.Doses.from_individuals([[0.0], [0.0, 12.0]], [[100.0], [50.0, 50.0]])
    d = nlp.Dataset.from_arrays([1.0, 2.0], [[1.0, 2.0], [3.0, 4.0]], doses=doses)
    assert "3 doses" in repr(d)
    with pytest.raises(ValueError, match="write it with nlp.write_nonmem"):
        d.to_csv(tmp_path / "x.csv")
    sub = d.subset([1])
    np.testing.assert_allclose(np.asarray(sub.doses.times), [[0.0, 12.0]])
    with pytest.raises(ValueError, match=r"`doses` covers 2 individuals but the data has 1"):
        nlp.Dataset.from_arrays([1.0, 2.0], [[1.0, 2.0]], doses=doses)


def test_with_covariates_checks_as_from_arrays():
    d = nlp.Dataset.from_arrays([0.0, 1.0], [[1.0, 2.0], [3.0, 4.0]], ids=["a", "b"], covariates={"WT": [60.0, 70.0]})
    e = d.with_covariates(AGE=[30, 40])
    assert sorted(e.covariates) == ["AGE", "WT"] and e.covariates["AGE"].dtype == d.covariates["WT"].dtype
    with pytest.raises(ValueError, match=r"covariate 'AGE' is not finite for individual 'b' \(row 1\); fill it in"):
        d.with_covariates(AGE=[30, np.nan])
    with pytest.raises(ValueError, match=r"covariate 'AGE' must have 2 values, one per individual; got shape \(3,\)"):
        d.with_covariates(AGE=[1.0, 2.0, 3.0])
