"""Event rows for dosing models: order, channels, and padding that changes nothing."""

import jax
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.estimators import encode, num_channels
from nlme_ppl.estimators._summary import GRUSummary, DeepSetSummary


def _data(extra_dose_slots=0, extra_obs_slots=0):
    times = [[0.0, 1.0, 4.0, 12.0, 13.0] + [0.0] * extra_obs_slots, [0.5, 2.0] + [0.0] * extra_obs_slots]
    values = [[0.1, 3.0, 2.0, 1.0, 4.0] + [0.0] * extra_obs_slots, [1.0, 2.0] + [0.0] * extra_obs_slots]
    mask = [[True] * 5 + [False] * extra_obs_slots, [True] * 2 + [False] * extra_obs_slots]
    d_t = [[0.0, 12.0] + [0.0] * extra_dose_slots, [0.0] + [0.0] * extra_dose_slots]
    d_a = [[100.0, 1000.0] + [1.0] * extra_dose_slots, [10.0] + [1.0] * extra_dose_slots]
    d_m = [[True, True] + [False] * extra_dose_slots, [True] + [False] * extra_dose_slots]
    width = max(len(r) for r in d_t)
    pad = lambda rows, v: np.array([r + [v] * (width - len(r)) for r in rows])  # noqa: E731
    doses = nlp.Doses.from_arrays(pad(d_t, 0.0), pad(d_a, 1.0), mask=pad(d_m, False))
    w = max(len(r) for r in times)
    pad_obs = lambda rows, v: np.array([r + [v] * (w - len(r)) for r in rows])  # noqa: E731
    return nlp.Dataset.from_arrays(pad_obs(times, 0.0), pad_obs(values, 0.0), mask=pad_obs(mask, False), doses=doses)


def test_rows_are_time_ordered_with_observations_before_doses():
    model = nlp.models.pk_oral_1cmt()
    assert num_channels(model) == 5 and num_channels(nlp.models.frohlich_simple()) == 1
    t, v, m = encode(model, _data())
    row = np.flatnonzero(m[0])
    np.testing.assert_allclose(t[0, row], [0, 0, 1, 4, 12, 12, 13])
    np.testing.assert_allclose(v[0, row, 1], [0, 1, 0, 0, 0, 1, 0])  # pre-dose sample first at t = 0 and 12
    np.testing.assert_allclose(v[0, row, 0], [0.1, 0, 3, 2, 1, 0, 4])
    np.testing.assert_allclose(v[0, row, 2], [0, 0, 0, 0, 0, 1, 0])  # log10(amount) - 2: 100 mg -> 0, 1000 mg -> 1
    assert not v[0, ~m[0]].any() and not t[0, ~m[0]].any()


def test_padding_of_doses_or_observations_changes_no_summary():
    model = nlp.models.pk_oral_1cmt()
    base = encode(model, _data())
    for kw in ({"extra_dose_slots": 3}, {"extra_obs_slots": 4}, {"extra_dose_slots": 2, "extra_obs_slots": 1}):
        padded = encode(model, _data(**kw))
        for net in (GRUSummary(jax.random.key(0), patch_size=1, num_channels=5), DeepSetSummary(jax.random.key(1), patch_size=2, num_channels=5)):
            a = jax.vmap(net)(*base)
            b = jax.vmap(net)(*padded)
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)  # as the batched test in test_summary.py


def test_models_without_doses_read_plain_arrays():
    data = nlp.Dataset.from_arrays([1.0, 2.0, 3.0], [[1.0, 2.0, 3.0]])
    t, v, m = encode(nlp.models.frohlich_simple(), data)
    assert v.shape == (1, 3) and t.dtype == np.float32


def test_censoring_models_read_the_flag_in_a_last_channel():
    base = _data()
    cens = np.zeros(base.times.shape, bool)
    cens[0, 4], cens[1, 1] = True, True  # the sample at t = 13 of individual 0, at t = 2 of individual 1
    data = nlp.Dataset.from_arrays(base.times, base.values, mask=base.mask, doses=base.doses, censored=cens)
    model = nlp.models.pk_oral_1cmt(censoring=True)
    assert num_channels(model) == 6
    t, v, m = encode(model, data)
    flagged = v[..., -1] == 1
    np.testing.assert_allclose(t[flagged], [13.0, 2.0])
    np.testing.assert_allclose(v[flagged, 0], [4.0, 2.0])  # the measurement channel holds the limit
    assert v[..., -1].sum() == 2 and not v[~m].any()
    np.testing.assert_array_equal(v[..., :5], encode(nlp.models.pk_oral_1cmt(), base)[1])  # the other channels are unchanged
    with pytest.raises(ValueError, match=r"2 censored observation\(s\)"):
        encode(nlp.models.pk_oral_1cmt(), data)


def test_steady_state_and_reset_channels_and_the_cmt_map():
    """pk_iv_1cmt reads CMT 1 as central (channel 4 = 1) and three more dose-row channels: the
    steady-state interval / 24 h, a flag for a dose a reset ends, and the time to that reset / 24 h.
    pk_oral_1cmt keeps its 5 channels (the shipped estimators' input is unchanged)."""
    iv, oral = nlp.models.pk_iv_1cmt(), nlp.models.pk_oral_1cmt()
    assert num_channels(iv) == 8 and num_channels(oral) == 5 and num_channels(nlp.models.pk_oral_1cmt(steady_state=True)) == 8
    doses = nlp.Doses.from_individuals([[0.0, 12.0, 30.0]], [[500.0, 500.0, 200.0]], rates=[[0.0, 250.0, 0.0]],
                                       ii=[[12.0, 0.0, 0.0]], end=[[30.0, 30.0, np.inf]])
    data = nlp.Dataset.from_arrays([[1.0, 13.0, 31.0]], [[9.0, 8.0, 5.0]], doses=doses)
    times, rows, mask = encode(iv, data)
    dose = rows[0][rows[0][:, 1] == 1]
    np.testing.assert_allclose(times[0][rows[0][:, 1] == 1], [0.0, 12.0, 30.0])
    np.testing.assert_allclose(dose[:, 4], [1, 1, 1])  # CMT 1 = central for the IV model
    np.testing.assert_allclose(dose[:, 3], [0.0, 2.0 / 24, 0.0], rtol=1e-6)  # the 2-h infusion
    np.testing.assert_allclose(dose[:, 5], [0.5, 0.0, 0.0], rtol=1e-6)  # II = 12 h
    np.testing.assert_allclose(dose[:, 6], [1, 1, 0])
    np.testing.assert_allclose(dose[:, 7], [30.0 / 24, 18.0 / 24, 0.0], rtol=1e-6)
