"""nlp.designs.like: resampled designs reproduce the data's, jitter within bounds, sample scaling,
covariates and censoring limits carried, determinism; the design envelope check."""

import jax
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.designs import CLIP_BOUND, DesignWarning, check_designs, design_problems, envelope_of

from ._study import iv_study


def _individual(data, i):
    m = np.asarray(data.mask[i])
    d = data.doses
    dm = np.asarray(d.mask[i])
    return np.asarray(data.times[i])[m], np.asarray(d.times[i])[dm], np.asarray(d.amounts[i])[dm]


def test_like_reproduces_designs_exactly():
    data = iv_study()
    prior = nlp.designs.like(data, model=nlp.models.pk_iv_1cmt())
    des, idx = prior.sample_with_index(jax.random.key(0), 64)
    assert des["times"].shape[1] == data.times.shape[1] and des["dose_times"].shape[1] == data.doses.times.shape[1]
    for r, i in enumerate(np.asarray(idx)):
        t, dt, amt = _individual(data, int(i))
        m, dm = np.asarray(des["mask"][r]), np.asarray(des["dose_mask"][r])
        np.testing.assert_array_equal(np.asarray(des["times"][r])[m], t)
        np.testing.assert_array_equal(np.asarray(des["dose_times"][r])[dm], dt)
        np.testing.assert_array_equal(np.asarray(des["dose_amounts"][r])[dm], amt)
    assert len(set(np.asarray(idx).tolist())) > 6
    again = prior(jax.random.key(0), 64)
    for k in des:
        np.testing.assert_array_equal(np.asarray(des[k]), np.asarray(again[k]))  # same key, same designs


def test_jitter_within_bounds_and_sample_scaling():
    data = iv_study()
    sd = 0.1
    prior = nlp.designs.like(data, model=nlp.models.pk_iv_1cmt(), time_jitter=sd, amount_jitter=sd, samples=(0.5, 2.0))
    des, idx = prior.sample_with_index(jax.random.key(1), 200)
    lo, hi = np.exp(-CLIP_BOUND * sd), np.exp(CLIP_BOUND * sd)
    counts = np.asarray(des["mask"]).sum(1)
    assert des["times"].shape[1] == int(np.ceil(data.times.shape[1] * 2.0))
    moved = False
    for r, i in enumerate(np.asarray(idx)):
        t, dt, amt = _individual(data, int(i))
        dm = np.asarray(des["dose_mask"][r])
        ratio = np.asarray(des["dose_amounts"][r])[dm] / amt
        assert np.all((ratio >= lo - 1e-12) & (ratio <= hi + 1e-12)) and np.ptp(ratio) < 1e-9  # one factor per individual
        jt = np.asarray(des["dose_times"][r])[dm]
        assert np.all((jt >= dt * lo - 1e-9) & (jt <= dt * hi + 1e-9))
        assert np.floor(len(t) * 0.5) <= counts[r] <= np.ceil(len(t) * 2.0)
        st = np.asarray(des["times"][r])[: counts[r]]
        assert np.all(np.diff(st) >= 0) and st.min() >= t.min() * lo - 1e-9 and st.max() <= t.max() * hi + 1e-9
        moved |= not np.allclose(ratio, 1.0)
    assert moved and counts.min() < data.num_observations.min() and counts.max() > data.num_observations.max()


def test_covariates_and_censoring_limits_carried():
    model = nlp.models.sunitinib()
    key = jax.random.key(2)
    sims = nlp.simulate(model, key, num_simulations=64, progress=False)
    prior = nlp.designs.like(sims.data, model=model)
    des, idx = prior.sample_with_index(key, 32)
    np.testing.assert_array_equal(np.asarray(des["WT"]), np.asarray(sims.data.covariates["WT"])[np.asarray(idx)])
    cens = nlp.models.pk_iv_1cmt(censoring=True)
    csims = nlp.simulate(cens, key, num_simulations=256, progress=False)
    assert csims.data.censored is not None
    des, idx = nlp.designs.like(csims.data, model=cens).sample_with_index(key, 64)
    has = np.asarray(csims.data.censored).any(1)[np.asarray(idx)]
    lim = np.asarray(des["lloq"])[:, 0]
    assert np.all(np.isfinite(lim[has])) and np.all(np.asarray(des["lloq"])[has] == lim[has, None])


def test_like_refuses_bad_options():
    data = iv_study()
    with pytest.raises(ValueError, match="time_jitter"):
        nlp.designs.like(data, time_jitter=-1)
    with pytest.raises(ValueError, match="samples"):
        nlp.designs.like(data, samples=(2.0, 1.0))
    with pytest.raises(TypeError, match="Dataset"):
        nlp.designs.like(np.zeros(3))


def test_design_check_fires_outside_and_not_inside():
    data = iv_study()
    env = envelope_of(data)
    assert design_problems(env, data) == []
    more = design_problems(env, iv_study(doses=7))
    assert any("doses, more than" in p for p in more)
    route = design_problems(env, iv_study(rate=50.0))
    assert any("route never trained" in p and "infusion" in p for p in route)
    longer = design_problems(env, iv_study(follow=200.0))
    assert any("follow-up" in p for p in longer)
    post = nlp.pretrained("pk_oral_1cmt")  # an old file: the envelope of the model's design prior
    with pytest.warns(DesignWarning, match="designs-from"):
        check_designs(post, iv_study(doses=7).with_doses(_as_cmt(iv_study(doses=7).doses, 1)))


def _as_cmt(doses, cmt):
    return nlp.Doses.from_arrays(doses.times, doses.amounts, rates=doses.rates, cmt=np.full(doses.times.shape, cmt), mask=doses.mask)
