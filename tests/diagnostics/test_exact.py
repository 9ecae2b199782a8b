"""compare_with_exact against the closed-form posteriors of the linear-Gaussian model."""

import jax
import numpy as np
import pytest

import nlme_ppl as nlp
from tests import linear_gaussian as lg

#: The estimator under test is the exact posterior made this much wider, its mean moved by SHIFT exact SDs.
WIDEN, SHIFT = 2.0, 0.5


@pytest.fixture(scope="module")
def problem():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(5), 60, np.array([0.5, -1.0]), np.array([0.4, 0.3]))
    est = lg.WideEstimator(model, widen=WIDEN, shift=SHIFT)
    return model, data, est, nlp.diagnostics.compare_with_exact(est, data, jax.random.key(0), num_proposals=4000)


def test_exact_moments_match_closed_form(problem):
    model, data, est, cmp = problem
    mean, cov = est.moments(data)
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    # importance sampling with ESS of several hundred: the means to 0.1 SD, the SDs to 10 %
    assert np.min(cmp.ess) > 300
    np.testing.assert_allclose((cmp.exact_mean - mean) / sd, 0.0, atol=0.1)
    np.testing.assert_allclose(cmp.exact_sd / sd, 1.0, atol=0.1)
    assert cmp.num_nonfinite == 0 and np.all(cmp.reliable())


def test_reports_the_estimators_loss_and_shift(problem):
    model, data, est, cmp = problem
    tab = cmp.table()
    assert list(tab.index) == ["a", "b"] and (tab["num_individuals"] == data.num_individuals).all()
    # estimator SD / exact SD is WIDEN, its mean SHIFT exact SDs off (1,000 estimator draws: ±5 %, ±0.1)
    np.testing.assert_allclose(tab["median_sd_ratio"], WIDEN, rtol=0.05)
    np.testing.assert_allclose(tab["mean_zscore"], SHIFT, atol=0.1)
    assert "median SD ratio" in repr(cmp)


def test_exact_posterior_serves_fit_map(problem, tmp_path):
    """The population fit on the exact posteriors matches the closed-form MLE, though the
    proposal was the wide, shifted estimator."""
    model, data, est, cmp = problem
    fit = nlp.fit_map(nlp.populations.gaussian(model), cmp.exact, data, jax.random.key(1), num_draws=500, num_starts=4)
    mean, sd, _ = lg.closed_form_mle(data)
    np.testing.assert_allclose([fit.params["mean[a]"], fit.params["mean[b]"]], mean, atol=0.02)
    np.testing.assert_allclose([fit.params["sd[a]"], fit.params["sd[b]"]], sd, rtol=0.1)
    cmp.plot(tmp_path / "exact.png")
    assert (tmp_path / "exact.png").stat().st_size > 10_000


def test_refusals(problem):
    model, data, est, cmp = problem
    other, _ = lg.simulate_population(jax.random.key(6), 60, np.array([0.5, -1.0]), np.array([0.4, 0.3]))
    with pytest.raises(ValueError, match="exact posteriors of another data set"):
        cmp.exact.sample(other, jax.random.key(0), num_draws=10)
    # some of its own individuals (a fit's extra draws ask for those): each from its own weighted draws
    sub = cmp.exact.sample(data.subset([5, 2]), jax.random.key(0), num_draws=4000)
    full = np.asarray(cmp.exact.values)
    w = np.exp(np.asarray(cmp.exact.log_weights))
    for r, i in enumerate([5, 2]):
        mean = np.einsum("p,pk->k", w[i] / w[i].sum(), full[i])
        sd = np.sqrt(np.einsum("p,pk->k", w[i] / w[i].sum(), (full[i] - mean) ** 2))
        # resampling noise at 4,000 draws is under 0.05 SD; another individual's mean lies SDs away
        assert np.all(np.abs(np.asarray(sub[r]).mean(0) - mean) < 0.25 * sd)
    with pytest.raises(ValueError, match="exact posteriors of another data set"):
        cmp.exact.sample(other.subset([0]), jax.random.key(0), num_draws=10)
    with pytest.raises(ValueError, match="`num_proposals` must be at least 100"):
        nlp.diagnostics.compare_with_exact(est, data, jax.random.key(0), num_proposals=50)
    with pytest.raises(ValueError, match="`defensive` must lie strictly between 0 and 1"):
        nlp.diagnostics.compare_with_exact(est, data, jax.random.key(0), defensive=1.0)
    with pytest.raises(TypeError, match="has no log_prob"):
        nlp.diagnostics.compare_with_exact(lg.ExactPosterior(model), data, jax.random.key(0))
    sde = nlp.models.frohlich_sde()
    with pytest.raises(ValueError, match="declares tractable=False"):
        nlp.diagnostics.compare_with_exact(type("P", (), {"model": sde, "log_prob": None})(), data, jax.random.key(0))
