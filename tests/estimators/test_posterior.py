"""AmortizedPosterior: shapes, dtypes, chunking, densities, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.estimators import AmortizedPosterior

from ._helpers import linear_model, some_data, untrained_posterior


@pytest.fixture(scope="module")
def post():
    return untrained_posterior()


def test_sample_shape_dtype(post):
    data = some_data(7)
    draws = post.sample(data, jax.random.key(0), num_draws=11)
    assert draws.shape == (7, 11, 2)
    assert draws.dtype == jnp.float64
    assert np.isfinite(np.asarray(draws)).all()
    assert post.param_names == ("a", "b")


def test_sample_is_reproducible_and_key_dependent(post):
    data = some_data(5)
    a = post.sample(data, jax.random.key(1), num_draws=4)
    b = post.sample(data, jax.random.key(1), num_draws=4)
    c = post.sample(data, jax.random.key(2), num_draws=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_chunking_does_not_change_draws(post, chunk_size):
    data = some_data(7)
    ref = post.sample(data, jax.random.key(3), num_draws=6)
    out = post.sample(data, jax.random.key(3), num_draws=6, chunk_size=chunk_size)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    lp_ref = post.log_prob(data, ref)
    np.testing.assert_allclose(post.log_prob(data, ref, chunk_size=chunk_size), lp_ref, rtol=1e-5, atol=1e-5)


def test_individual_draws_do_not_depend_on_the_others(post):
    data = some_data(6)
    full = post.sample(data, jax.random.key(4), num_draws=5)
    # individual i's draws depend on (key, i) only: changing individual 0's data leaves the rest
    values = np.array(data.values)
    values[0, 0] += 3.0
    other = nlp.Dataset.from_arrays(np.asarray(data.times), values, mask=np.asarray(data.mask))
    out = post.sample(other, jax.random.key(4), num_draws=5)
    np.testing.assert_allclose(out[1:], full[1:], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], full[0])


def test_log_prob_is_a_normalised_density_on_the_original_scale(post):
    """∫ q(φ | y) dφ = 1 on a grid; this checks the flow and the standardisation's Jacobian."""
    data = some_data(2)
    g = np.linspace(-12, 12, 301)
    a, b = np.meshgrid(g * 1.7 + 0.3, g * 0.6 - 0.2, indexing="ij")
    grid = np.stack([a.ravel(), b.ravel()], -1)
    lp = post.log_prob(data, np.broadcast_to(grid, (2, *grid.shape)))
    assert lp.shape == (2, grid.shape[0]) and lp.dtype == jnp.float64
    cell = (g[1] - g[0]) ** 2 * 1.7 * 0.6
    mass = np.exp(np.asarray(lp)).sum(1) * cell
    np.testing.assert_allclose(mass, 1.0, atol=0.02)


def test_log_prob_matches_draw_histogram_mean(post):
    """The mean of the draws equals the mean of the density (on a grid)."""
    data = some_data(1)
    draws = np.asarray(post.sample(data, jax.random.key(5), num_draws=20_000))[0]
    g = np.linspace(-12, 12, 301)
    a, b = np.meshgrid(g * 1.7 + 0.3, g * 0.6 - 0.2, indexing="ij")
    grid = np.stack([a.ravel(), b.ravel()], -1)
    w = np.exp(np.asarray(post.log_prob(data, grid[None]))[0])
    mean_grid = (grid * w[:, None]).sum(0) / w.sum()
    se = draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - mean_grid) < 5 * se + 1e-3)


def test_summaries(post):
    s = post.summaries(some_data(4))
    assert s.shape == (4, post.config.summary_dim)
    np.testing.assert_allclose(post.summaries(some_data(4), chunk_size=3), s, rtol=1e-5, atol=1e-6)


def test_errors(post):
    data = some_data(3)
    with pytest.raises(TypeError, match="Dataset"):
        post.sample(np.zeros((3, 9)), jax.random.key(0), num_draws=2)
    with pytest.raises(TypeError, match="random key"):
        post.sample(data, 0, num_draws=2)
    with pytest.raises(ValueError, match="num_draws"):
        post.sample(data, jax.random.key(0), num_draws=0)
    with pytest.raises(ValueError, match="chunk_size"):
        post.sample(data, jax.random.key(0), num_draws=2, chunk_size=0)
    with pytest.raises(ValueError, match=r"individuals=3, draws, k=2"):
        post.log_prob(data, np.zeros((3, 5, 3)))
    with pytest.raises(ValueError, match=r"must have shape \(6,\)"):
        untrained_posterior(nlp.models.frohlich_simple())
    with pytest.raises(ValueError, match="6 parameters"):
        AmortizedPosterior(
            model=nlp.models.frohlich_simple(), summary=post.summary, flow=post.flow, param_loc=jnp.zeros(6),
            param_scale=jnp.ones(6), config=post.config, history=post.history,
        )


def test_repr_and_model(post):
    assert "linear_test" in repr(post)
    assert post.model.prior_log_prob(np.zeros(2)).shape == ()
    assert post.model == post.model and isinstance(post.model, nlp.models.IndividualModel)
    assert linear_model().fingerprint() == post.model.fingerprint()
