"""nlp.refine: exact individual posteriors from a lossy estimator, against the closed form of the
linear-Gaussian model, and the refine= option of the fits."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.demo import DEMO_TRUTH
from nlme_ppl.inference.refine import wants_refinement
from tests import linear_gaussian as lg

#: The estimator under test is the exact posterior made this much wider, its mean moved by SHIFT
#: exact SDs: plain importance sampling from it degrades, the refinement must not.
WIDEN, SHIFT = 4.0, 1.0


class SamplesOnly(lg.WideEstimator):
    """An estimator without a density (q only supplies the L-BFGS starts)."""

    def __getattribute__(self, name):
        if name == "log_prob":
            raise AttributeError(name)
        return super().__getattribute__(name)


@pytest.fixture(scope="module")
def problem():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(5), 40, np.array([0.5, -1.0]), np.array([0.4, 0.3]))
    est = lg.WideEstimator(model, widen=WIDEN, shift=SHIFT)
    return model, data, est, nlp.refine(est, data, jax.random.key(0))


def _moments(draws):
    d = np.asarray(draws)
    return d.mean(1), d.std(1)


def test_refined_draws_match_the_closed_form(problem):
    model, data, est, ref = problem
    mean, cov = est.moments(data)
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    # the refined weights are healthy where q is 4x too wide (measured: every k < -0.35, ESS > 670 of 1,000)
    assert np.all(ref.pareto_k < 0.5) and np.min(ref.ess) > 400
    draws = ref.sample(data, jax.random.key(1), num_draws=200)
    assert draws.shape == (data.num_individuals, 200, 2) and draws.dtype == jnp.float64
    m, s = _moments(draws)
    # 200 draws of a resampled set of ESS > 400: the mean to 0.25 SD, the SD to 20 % per individual;
    # pooled over 40 individuals the median SD ratio to 5 %, the mean z-score to 0.08
    z = (m - mean) / sd
    assert np.max(np.abs(z)) < 0.25 and np.abs(z.mean()) < 0.08
    np.testing.assert_allclose(s / sd, 1.0, atol=0.2)
    np.testing.assert_allclose(np.median(s / sd, axis=0), 1.0, atol=0.05)
    # the raw estimator fails this: its SDs are WIDEN times the exact ones
    np.testing.assert_allclose(np.median(_moments(est.sample(data, jax.random.key(1), num_draws=200))[1] / sd, axis=0), WIDEN, rtol=0.1)
    np.testing.assert_allclose(ref.modes, mean, atol=1e-5)  # Gaussian posterior: its mode is its mean


@pytest.mark.parametrize("chains_per_call", [None, 6])
def test_metropolis_hastings_where_the_weighted_set_is_too_small(problem, monkeypatch, chains_per_call):
    model, data, est, ref = problem
    num_draws = int(np.max(ref.ess))  # more than half of every ESS: every individual's draws come from MCMC
    assert ref.needs_mcmc(num_draws).all()
    monkeypatch.setattr(importlib.import_module("nlme_ppl.inference.refine"), "FRESH_COST_SHARE", 0.0)  # no fresh sets: the chains
    if chains_per_call:  # the chains run in calls of 6 individuals (memory bound), each padded to 8
        monkeypatch.setattr(importlib.import_module("nlme_ppl.inference.refine"), "_EVALS_PER_BLOCK", chains_per_call * num_draws)
    draws = np.asarray(ref.sample(data, jax.random.key(2), num_draws=num_draws))
    mean, cov = est.moments(data)
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    m, s = _moments(draws)
    # correlated chains of 40 rounds: pooled over individuals, the mean z-score to 0.05 and the median SD ratio to 5 %
    assert np.abs(((m - mean) / sd).mean()) < 0.05
    np.testing.assert_allclose(np.median(s / sd, axis=0), 1.0, atol=0.05)
    # few duplicates, unlike resampling from a set of that ESS
    assert np.mean([np.unique(d[:, 0]).size / num_draws for d in draws]) > 0.7


def test_a_fresh_weighted_set_where_the_first_is_too_small(problem, monkeypatch):
    model, data, est, ref = problem
    num_draws = int(np.max(ref.ess))  # as above, but the larger set from the t mixture is cheaper than the chains
    calls = []
    module = importlib.import_module("nlme_ppl.inference.refine")
    monkeypatch.setattr(module.RefinedPosterior, "_mcmc_rows", lambda self, rows, init, key: calls.append(rows) or init)
    draws = np.asarray(ref.sample(data, jax.random.key(2), num_draws=num_draws))
    assert not calls  # every individual reached an ESS of 2 * num_draws in its fresh set
    mean, cov = est.moments(data)
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    m, s = _moments(draws)
    z = (m - mean) / sd
    # resampled from an ESS >= 2M: pooled over 40 individuals the mean z-score to 0.05 and the median SD ratio to 5 %
    assert np.abs(z.mean()) < 0.05 and np.max(np.abs(z)) < 0.25
    np.testing.assert_allclose(np.median(s / sd, axis=0), 1.0, atol=0.05)
    assert np.mean([np.unique(d[:, 0]).size / num_draws for d in draws]) > 0.7  # few duplicates
    again = np.asarray(ref.sample(data, jax.random.key(2), num_draws=num_draws))
    np.testing.assert_array_equal(draws, again)


def test_same_key_same_draws_and_subsets(problem):
    model, data, est, ref = problem
    a = ref.sample(data, jax.random.key(3), num_draws=50)
    np.testing.assert_array_equal(a, ref.sample(data, jax.random.key(3), num_draws=50))
    again = nlp.refine(est, data, jax.random.key(0))
    np.testing.assert_array_equal(again.values, ref.values)
    np.testing.assert_array_equal(again.log_weights, ref.log_weights)
    sub = data.subset([3, 7])
    assert ref.sample(sub, jax.random.key(3), num_draws=50).shape == (2, 50, 2)
    other, _ = lg.simulate_population(jax.random.key(6), 40, np.array([0.5, -1.0]), np.array([0.4, 0.3]))
    with pytest.raises(ValueError, match="exact posteriors of another data set"):
        ref.sample(other, jax.random.key(3), num_draws=5)
    assert "with Pareto k > 0.7" in repr(ref)
    tab = ref.table()
    assert list(tab.columns) == ["pareto_k", "ess", "flag"] and list(tab.index) == list(data.ids)


def test_estimator_without_density(problem):
    model, data, _, _ = problem
    est = SamplesOnly(model, widen=WIDEN, shift=SHIFT)
    assert not hasattr(est, "log_prob")
    ref = nlp.refine(est, data.subset(np.arange(10)), jax.random.key(0))
    mean, cov = est.moments(data.subset(np.arange(10)))
    m, s = _moments(ref.sample(ref.data, jax.random.key(1), num_draws=200))
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    assert np.max(np.abs((m - mean) / sd)) < 0.3
    np.testing.assert_allclose(np.median(s / sd, axis=0), 1.0, atol=0.1)


def test_fit_map_refines_by_default(problem):
    model, data, est, _ = problem
    pop = nlp.populations.gaussian(model)
    fit = nlp.fit_map(pop, est, data, jax.random.key(0), num_draws=200, num_starts=2)
    raw = nlp.fit_map(pop, est, data, jax.random.key(0), num_draws=200, num_starts=2, refine=False)
    assert isinstance(fit.refined, nlp.RefinedPosterior) and raw.refined is None
    assert fit.diagnostics_summary()["refined"]["pareto_k_above_0.7"] == 0
    exact = nlp.fit_map(pop, lg.ExactPosterior(model), data, jax.random.key(0), num_draws=200, num_starts=2)
    assert exact.refined is None  # an exact posterior is not refined
    # the refined fit agrees with the fit on exact draws to within Monte Carlo error; the raw one
    # is pulled by the estimator's shift of SHIFT posterior SDs
    for name in ("mean[a]", "mean[b]"):
        assert abs(fit.params[name] - exact.params[name]) < 0.03
    assert abs(raw.params["mean[a]"] - exact.params["mean[a]"]) > 0.05


def test_refine_option_checks(problem):
    model, data, est, ref = problem
    pop = nlp.populations.gaussian(model)
    with pytest.raises(ValueError, match="`refine` must be 'auto', True or False"):
        nlp.fit_map(pop, est, data, jax.random.key(0), refine="yes")
    sde = nlp.models.frohlich_sde()

    class Untractable:
        model = sde

    with pytest.raises(ValueError, match="refine=True needs a tractable likelihood"):
        wants_refinement(True, Untractable())
    assert not wants_refinement("auto", Untractable())
    with pytest.raises(ValueError, match="declares tractable=False"):
        nlp.refine(Untractable(), data, jax.random.key(0))
    with pytest.raises(TypeError, match="expected an nlp.Dataset"):
        nlp.refine(est, np.zeros((3, 8)), jax.random.key(0))
    with pytest.raises(ValueError, match="q_share"):
        nlp.refine(est, data, jax.random.key(0), q_share=0.99)
    # a refined posterior passed to a fit is used as it is
    fit = nlp.fit_map(pop, ref, data, jax.random.key(0), num_draws=100, num_starts=2, refine=True)
    np.testing.assert_array_equal(fit.refined.log_weights, ref.log_weights)


@pytest.mark.slow
def test_both_modes_of_an_exchangeable_model_survive():
    """frohlich_simple's (δ, γ) are exchangeable: each exact posterior is symmetric under the
    swap, so half of each individual's refined draws have δ > γ, whichever labelling the
    estimator's draws favour; and the draws sit near the cell's truth (either labelling)."""
    post = nlp.pretrained("frohlich_simple")
    model = post.model
    key = jax.random.key(4)
    population = nlp.populations.gaussian(model, fixed=("offset", "sigma"))
    phi = nlp.simulate_population(population, DEMO_TRUTH, key, num_individuals=6)
    data = nlp.simulate_data(model, phi, jax.random.fold_in(key, 1))
    ref = nlp.refine(post, data, jax.random.key(0))
    assert np.sum(ref.pareto_k > 0.7) <= 1  # measured: all below 0.5
    draws = np.asarray(ref.sample(data, jax.random.key(1), num_draws=400))
    i, j = model.param_names.index("delta"), model.param_names.index("gamma")
    share = np.mean(draws[..., i] > draws[..., j], axis=1)
    # 400 draws from a set of ESS > 400: the share within 0.5 ± 0.15 (4 binomial SDs and more)
    np.testing.assert_allclose(share, 0.5, atol=0.15)
    pair = np.sort(np.stack([draws[..., i], draws[..., j]], -1), -1)
    true_pair = np.sort(np.asarray(phi)[:, [i, j]], -1)
    assert np.all(np.abs(np.median(pair, axis=1) - true_pair) < 4 * pair.std(1) + 0.05)


@pytest.mark.parametrize("df", [5.0, 2.5])
def test_the_t_mixtures_chi_square_variates_follow_the_distribution(df):
    """The t components' χ²(df): a sum of squared normals for integer df, the gamma sampler
    otherwise; both against scipy's χ² by Kolmogorov–Smirnov (200,000 variates: a wrong df or
    a missing square moves the statistic far beyond the 1e-3 level used here)."""
    from scipy import stats

    from nlme_ppl.inference._proposal import _chi_square

    x = np.asarray(_chi_square(jax.random.key(0), df, (200_000,)))
    assert stats.kstest(x, stats.chi2(df).cdf).pvalue > 1e-3
    assert stats.kstest(x, stats.chi2(df + 1).cdf).pvalue < 1e-6  # the test can tell df from df + 1
    np.testing.assert_array_equal(x, np.asarray(_chi_square(jax.random.key(0), df, (200_000,))))
