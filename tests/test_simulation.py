"""Prior-predictive simulation: shapes, seeds, chunking, and dropping of non-finite draws."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

import nlme_ppl as nlp


def test_frohlich_simulation_shapes_and_prior():
    m = nlp.models.frohlich_simple()
    sims = nlp.simulate(m, jax.random.key(0), num_simulations=4000, chunk_size=1500, progress=False)
    assert sims.params.shape == (4000, 6) and sims.data.values.shape == (4000, 180)
    assert sims.num_dropped == 0
    # the parameters follow the training prior (KS test per parameter)
    for i, n in enumerate(m.param_names):
        p = stats.kstest(np.asarray(sims.params[:, i]), stats.norm(float(m.prior[n].loc), float(m.prior[n].scale)).cdf).pvalue
        assert p > 1e-3, n


def test_seeded_and_chunking_independent_of_chunk_count():
    m = nlp.models.frohlich_simple()
    a = nlp.simulate(m, jax.random.key(1), num_simulations=300, chunk_size=300, progress=False)
    b = nlp.simulate(m, jax.random.key(1), num_simulations=300, chunk_size=300, progress=False)
    c = nlp.simulate(m, jax.random.key(2), num_simulations=300, chunk_size=300, progress=False)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.allclose(a.params, c.params)
    # no two simulations share a noise path
    assert len(np.unique(np.asarray(a.data.values[:, -1]))) == 300


def _sometimes_nan(design, obs=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    mu = jnp.where(a > 2.0, jnp.nan, a) * jnp.ones_like(design["times"])
    numpyro.sample("obs", dist.Normal(mu, 0.1).to_event(1), obs=obs)


def test_non_finite_simulations_are_dropped_and_counted():
    m = nlp.models.IndividualModel(_sometimes_nan, {"times": np.arange(3.0)}, name="nan")
    sims = nlp.simulate(m, jax.random.key(0), num_simulations=20000, max_dropped_fraction=0.05, progress=False)
    expected = 20000 * stats.norm.sf(2.0)
    assert abs(sims.num_dropped - expected) < 4 * np.sqrt(expected)
    assert len(sims) == 20000 - sims.num_dropped and np.all(np.isfinite(sims.data.values))
    with pytest.raises(RuntimeError, match=r"were not finite, more than the allowed 1.0%"):
        nlp.simulate(m, jax.random.key(0), num_simulations=20000, progress=False)


def test_bad_arguments():
    m = nlp.models.frohlich_simple()
    with pytest.raises(ValueError, match="`num_simulations` must be a positive integer"):
        nlp.simulate(m, jax.random.key(0), num_simulations=0)
    with pytest.raises(TypeError, match="expected a JAX random key"):
        nlp.simulate(m, 0, num_simulations=10)
