"""Out-of-distribution check with the shipped `frohlich_simple` estimator.

Data simulated from the training prior are not flagged (each individual is, by chance, with
probability 1 / (num_reference + 1)); the same data with one individual moved to absurd values
(+50 on the log scale, or ×10) flag exactly that individual, by id.

+20 is not always absurd for this estimator: its training prior is broad (in 5,000 prior
simulations per-individual mean log-fluorescence reaches 17, single values 136), and an
individual whose mean is ~2 moved up by 20 landed just inside the reference distances.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.diagnostics import OutlierDiagnostics, SurrogateWarning, summary_outliers
from nlme_ppl.diagnostics._coverage import _reference_data

NUM_REF = 1000
N = 20


@pytest.fixture(scope="module")
def posterior():
    return nlp.pretrained("frohlich_simple")


@pytest.fixture(scope="module")
def clean(posterior):
    model = posterior.model
    params = model.prior_sample(jax.random.key(0), (N,))
    designs = model.sample_designs(jax.random.key(1), N)
    ids = [f"cell-{i}" for i in range(N)]
    data = nlp.simulate_data(model, params, jax.random.key(2), designs=designs, ids=ids)
    return data, summary_outliers(posterior, data, jax.random.key(3), num_reference=NUM_REF)


def _modified(data, row, fn):
    values = np.asarray(data.values).copy()
    values[row] = fn(values[row])
    return nlp.Dataset.from_arrays(np.asarray(data.times), values, mask=np.asarray(data.mask), ids=data.ids)


def test_prior_predictive_data_not_flagged(clean):
    data, out = clean
    assert isinstance(out, OutlierDiagnostics)
    assert out.ids == data.ids and out.num_reference == NUM_REF
    assert len(out.bad()) <= 1, out.table()
    assert np.all(out.tail_prob > 0) and np.all(out.tail_prob <= 1)
    table = out.table()
    assert list(table.columns) == ["distance", "tail_prob", "flag"] and table.index.name == "id"
    if not out.bad():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out.warn()


@pytest.mark.parametrize(("row", "fn"), [(3, lambda v: v + 50.0), (11, lambda v: 10.0 * v)], ids=["plus50", "times10"])
def test_absurd_individual_flagged_by_id(posterior, clean, row, fn):
    data, ref = clean
    out = summary_outliers(posterior, _modified(data, row, fn), jax.random.key(3), num_reference=NUM_REF)
    assert data.ids[row] in out.bad()
    assert set(out.bad()) - {data.ids[row]} <= set(ref.bad())  # nobody else newly flagged
    assert out.tail_prob[row] == pytest.approx(1 / (NUM_REF + 1))
    assert out.distance[row] > 2 * out.reference_distance[-1]
    # Same key, same reference: the untouched individuals' distances do not change.
    others = np.arange(N) != row
    np.testing.assert_allclose(out.distance[others], ref.distance[others], rtol=1e-6)
    with pytest.warns(SurrogateWarning) as record:
        out.warn()
    assert len(record) == 1
    msg = str(record[0].message)
    assert repr(data.ids[row]) in msg and "units" in msg and "broader training prior" in msg


def test_tail_probabilities_roughly_uniform(posterior):
    """For 300 prior-predictive individuals the tail probabilities are about uniform."""
    sims = nlp.simulate(posterior.model, jax.random.key(7), num_simulations=300, progress=False)
    out = summary_outliers(posterior, sims.data, jax.random.key(8), num_reference=NUM_REF)
    # Individuals share one reference, so the spread is binomial plus the reference's ECDF
    # error: about 0.02 for both statistics; the bounds are 3 such sds.
    assert abs(np.mean(out.tail_prob) - 0.5) < 0.06
    assert abs(np.mean(out.tail_prob <= 0.2) - 0.2) < 0.07
    assert len(out.bad()) <= 3


def test_reference_uses_the_data_designs(posterior, clean):
    data, _ = clean
    # Individual 0 observed only for the first 40 time points: the reference cycles its mask.
    mask = np.asarray(data.mask).copy()
    mask[0, 40:] = False
    short = nlp.Dataset.from_arrays(np.asarray(data.times), np.asarray(data.values), mask=mask, ids=data.ids)
    ref, dropped = _reference_data(posterior.model, short, jax.random.key(0), 3 * N + 5)
    assert dropped == 0
    rows = np.arange(3 * N + 5) % N
    np.testing.assert_array_equal(np.asarray(ref.mask), mask[rows])
    np.testing.assert_array_equal(np.asarray(ref.times), np.where(mask, np.asarray(data.times), 0.0)[rows])
    assert not np.any(np.asarray(ref.values)[~np.asarray(ref.mask)])  # padding zeroed


def test_invalid_arguments(posterior, clean):
    data, _ = clean
    with pytest.raises(ValueError, match="`num_reference` must be at least 100"):
        summary_outliers(posterior, data, jax.random.key(0), num_reference=50)
    with pytest.raises(TypeError, match="JAX random key"):
        summary_outliers(posterior, data, 0)
    with pytest.raises(TypeError, match="expected a nlme_ppl.Dataset"):
        summary_outliers(posterior, np.zeros((3, 4)), jax.random.key(0))
    with pytest.raises(TypeError, match="must be an AmortizedPosterior"):
        summary_outliers(object(), data, jax.random.key(0))
    with pytest.raises(ValueError, match="inconsistent OutlierDiagnostics"):
        OutlierDiagnostics(ids=("a",), distance=jnp.zeros(2), tail_prob=jnp.zeros(2), reference_distance=jnp.zeros(5))
