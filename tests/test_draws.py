"""SurrogateDraws with extra draws for some individuals: the surrogate, the importance check and
the likelihood treatment see each such individual's M + M_e draws as one set."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_likelihood

import nlme_ppl as nlp
from nlme_ppl.likelihood import amortize, draws_from_values, prepare_draws
from tests import linear_gaussian as lg

ROWS = np.array([4, 1])  # raised individuals, not in order


@pytest.fixture(scope="module")
def setup():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(3), 7, np.array([0.5, -1.0]), np.array([0.4, 0.3]))
    post = lg.ExactPosterior(model)
    return model, data, post


def student_population(data):
    """A population the fast path cannot take (a Student-t site): evaluated directly."""
    numpyro.sample("a", dist.StudentT(4.0, 0.4, 0.5).expand([data.num_individuals]).to_event(0))
    with numpyro.plate("individuals", data.num_individuals):
        numpyro.sample("b", dist.Normal(-1.0, 0.3))


def _pooled(values, extra, model, cross):
    """The reference: each individual's own draws, with the extra ones appended where raised."""
    rows = []
    for i in range(values.shape[0]):
        v = values[i]
        if i in ROWS:
            v = np.concatenate([v, extra[list(ROWS).index(i)]])
        rows.append(draws_from_values(v[None], model, cross=cross))
    return rows


@pytest.mark.parametrize("kind", ["diag", "full", "student"])
def test_extra_draws_pool_with_the_others(setup, kind):
    """Per individual, the surrogate's term on M + M_e draws equals that of one set of all of
    them (the statistics are centred at the first M's mean: the identity is exact)."""
    model, data, post = setup
    cross = kind == "full"
    draws = prepare_draws(post, data, jax.random.key(1), num_draws=40, cross=cross)
    extra = np.asarray(post.sample(data.subset(ROWS), jax.random.key(2), num_draws=120))
    raised = draws.with_extra(extra, ROWS, model)
    np.testing.assert_array_equal(np.asarray(raised.draws_per_individual()), [40, 160, 40, 40, 160, 40, 40])
    if kind == "student":
        pop, params = student_population, {}
    else:
        pop = nlp.populations.gaussian(model, covariance=kind)
        params = {"mean": jnp.array([0.3, -0.8]), "sd": jnp.array([0.5, 0.4])}
        if cross:
            params["corr_chol"] = jnp.linalg.cholesky(jnp.array([[1.0, 0.4], [0.4, 1.0]]))
    got = np.asarray(log_likelihood(amortize(pop, raised), params, data, batch_ndims=0)["obs"])
    ref = [float(log_likelihood(amortize(pop, d), params, data.subset([i]), batch_ndims=0)["obs"][0])
           for i, d in enumerate(_pooled(np.asarray(draws.values), extra, model, cross))]  # fmt: skip
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    plain = np.asarray(log_likelihood(amortize(pop, draws), params, data, batch_ndims=0)["obs"])
    others = np.setdiff1d(np.arange(7), ROWS)
    np.testing.assert_array_equal(got[others], plain[others])
    assert np.all(got[ROWS] != plain[ROWS])


def test_importance_check_judges_all_draws(setup):
    model, data, post = setup
    draws = prepare_draws(post, data, jax.random.key(1), num_draws=40)
    extra = np.asarray(post.sample(data.subset(ROWS), jax.random.key(2), num_draws=120))
    raised = draws.with_extra(extra, ROWS, model)
    pop = nlp.populations.gaussian(model)
    params = {"mean": np.array([0.3, -0.8]), "sd": np.array([0.2, 0.15])}
    diag = nlp.diagnostics.importance_from_fit(pop, raised, params, data)
    log_w = np.asarray(nlp.log_weights(pop, draws, params, data))
    for r, i in enumerate(ROWS):
        pooled = draws_from_values(np.concatenate([np.asarray(draws.values[i]), extra[r]])[None], model)
        ref = nlp.diagnostics.importance_diagnostics(np.asarray(nlp.log_weights(pop, pooled, params, data.subset([i]))))
        assert diag.pareto_k[i] == pytest.approx(float(ref.pareto_k[0]), abs=1e-9)
        assert diag.ess[i] == pytest.approx(float(ref.ess[0]), rel=1e-9)
    plain = nlp.diagnostics.importance_diagnostics(log_w)
    others = np.setdiff1d(np.arange(7), ROWS)
    np.testing.assert_array_equal(diag.pareto_k[others], plain.pareto_k[others])
    table = diag.table()
    assert list(table["draws"]) == [40, 160, 40, 40, 160, 40, 40]
    np.testing.assert_allclose(table["ess_fraction"], diag.ess / table["draws"])


def test_subset_carries_extra_draws(setup):
    model, data, post = setup
    draws = prepare_draws(post, data, jax.random.key(1), num_draws=30)
    extra = np.asarray(post.sample(data.subset(ROWS), jax.random.key(2), num_draws=50))
    raised = draws.with_extra(extra, ROWS, model)
    sub = raised.subset(np.array([1, 0, 1, 6]))
    np.testing.assert_array_equal(np.asarray(sub.extra_index), [0, 2])
    np.testing.assert_array_equal(np.asarray(sub.extra.values), extra[[1, 1]].astype(np.float32))  # stored in float32
    np.testing.assert_array_equal(np.asarray(sub.extra.centre), np.asarray(draws.centre)[[1, 1]])
    assert raised.subset(slice(2, 4)).extra is None  # no raised individual there
    np.testing.assert_array_equal(np.asarray(raised.subset(slice(0, 2)).extra_index), [1])
    assert raised.subset(draws=slice(0, 5)).extra is None  # a selection of draws drops them
    crossed = raised.with_cross_products()
    assert crossed.extra.has_cross and crossed.extra.stats.shape[-1] == crossed.stats.shape[-1]


def test_refusals(setup):
    model, data, post = setup
    draws = prepare_draws(post, data, jax.random.key(1), num_draws=30)
    extra = np.zeros((2, 10, 2))
    with pytest.raises(ValueError, match=r"shape \(3, M_e, 2\)"):
        draws.with_extra(extra, [0, 1, 2], model)
    with pytest.raises(ValueError, match="distinct rows"):
        draws.with_extra(extra, [1, 1], model)
    with pytest.raises(ValueError, match="distinct rows"):
        draws.with_extra(extra, [1, 7], model)
    with pytest.raises(ValueError, match="not all finite"):
        draws.with_extra(np.full((2, 10, 2), np.nan), [0, 1], model)
    with pytest.raises(ValueError, match="extra draws already"):
        draws.with_extra(extra, [0, 1], model).with_extra(extra, [2, 3], model)
    expanded = nlp.inference.expand_fixed(draws, model, data, {"b": -1.0})
    with pytest.raises(ValueError, match="before expanding"):
        expanded.with_extra(extra, [0, 1], model)


def test_expansion_covers_extra_draws(setup):
    """The likelihood treatment expands the extra draws at their individuals' points: the
    terms equal those of the pooled draws, expanded."""
    model, data, post = setup
    pop = nlp.populations.gaussian(model, fixed=("b",))
    draws = prepare_draws(post, data, jax.random.key(1), num_draws=40)
    extra = np.asarray(post.sample(data.subset(ROWS), jax.random.key(2), num_draws=60))
    expanded = nlp.inference.expand_fixed(draws.with_extra(extra, ROWS, model), model, data, {"b": -1.0})
    assert expanded.extra.fixed_names == ("b",)
    params = {"mean": np.array([0.4, -0.9]), "sd": np.array([0.5])}
    got = np.asarray(log_likelihood(amortize(pop, expanded), params, data, batch_ndims=0)["obs"])
    for i, d in enumerate(_pooled(np.asarray(draws.values), extra, model, False)):
        one = nlp.inference.expand_fixed(d, model, data.subset([i]), {"b": -1.0})
        ref = float(log_likelihood(amortize(pop, one), params, data.subset([i]), batch_ndims=0)["obs"][0])
        assert got[i] == pytest.approx(ref, rel=1e-10, abs=1e-10)


def test_statistics_block_by_block_equal_the_whole(monkeypatch):
    """Beyond `STATS_BLOCK` individuals the statistics are computed block by block into arrays
    allocated once (bounded memory at N = 10⁶): bit for bit the unblocked result, also with a
    last block that overlaps the one before and with cross products."""
    import nlme_ppl._draws as draws_module

    model = nlp.models.get("frohlich_simple")
    values = model.prior_sample(jax.random.key(0), (2500, 30))
    whole = draws_module.draws_from_values(values, model, cross=True)
    monkeypatch.setattr(draws_module, "STATS_BLOCK", 1000)
    blocked = draws_module.draws_from_values(values, model, cross=True)
    for field in ("values", "log_prior", "bandwidth", "centre", "stats"):
        np.testing.assert_array_equal(np.asarray(getattr(blocked, field)), np.asarray(getattr(whole, field)), err_msg=field)
