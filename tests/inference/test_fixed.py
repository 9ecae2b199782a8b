"""The likelihood treatment of parameters without random effect (nlp.inference.expand_fixed),
against the closed form of the linear-Gaussian model with a shared slope b."""

import jax
import numpy as np
import pytest
from numpyro.infer.util import log_likelihood

import nlme_ppl as nlp
from nlme_ppl.inference.fixed import wants_likelihood_treatment
from nlme_ppl.likelihood import amortize, prepare_draws
from tests import linear_gaussian as lg

WIDE = {"a": (0.0, 1e3), "b": (0.0, 1e3)}


@pytest.fixture(scope="module")
def shared_slope():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(5), 300, np.array([0.5, -1.0]), np.array([0.4, 0.0]))
    pop = nlp.populations.gaussian(model, fixed=("b",), mean_prior=WIDE, sd_prior_scale=1e3)
    return model, data, pop, lg.ExactPosterior(model)


def test_expanded_surrogate_matches_closed_form_marginal(shared_slope):
    """Per individual, the expanded surrogate estimates log p(y_i | θ) - log p_train(y_i), which
    is closed form here, with no kernel; the likelihood is quadratic in b, so the expansion is
    exact, and away from its point too."""
    model, data, pop, post = shared_slope
    sub = data.subset(np.arange(40))
    draws = prepare_draws(post, sub, jax.random.key(1), num_draws=4000)
    expanded = nlp.inference.expand_fixed(draws, model, sub, {"b": -1.0})
    assert expanded.fixed_names == ("b",) and expanded.stats.shape[-1] == draws.stats.shape[-1] + 2
    train = np.asarray([lg.log_marginal(sub.subset(i), np.zeros(2), lg.S0**2 * np.eye(2)) for i in range(40)])
    for mean_a, sd_a, b in [(0.5, 0.4, -1.0), (0.3, 0.6, -0.9), (0.6, 0.3, -1.2)]:
        params = {"mean": np.array([mean_a, b]), "sd": np.array([sd_a])}
        got = np.asarray(log_likelihood(amortize(pop, expanded), params, sub, batch_ndims=0)["obs"])
        exact = np.asarray([lg.log_marginal(sub.subset(i), np.array([mean_a, b]), np.diag([sd_a**2, 0.0])) for i in range(40)])
        # within 4 Monte Carlo SEs per individual (from the weights; measured at most 2.8 of 40)
        w = np.asarray(nlp.log_weights(pop, expanded, params, sub))
        w = np.exp(w - w.max(1, keepdims=True))
        se = np.sqrt(w.var(1) / (w.shape[1] * w.mean(1) ** 2))
        assert np.all(np.abs(got - (exact - train)) < 4 * se + 1e-9)
        assert se.max() < 0.05


def test_map_is_the_closed_form_mle(shared_slope):
    """The kernel treatment is off by Monte Carlo noise and inflates the SE; the likelihood
    treatment gives the closed-form MLE of the shared slope and its SE (measured: 1e-6 SE and
    1.0000 of the SE at 100 draws), and no individual has Pareto k > 0.7."""
    model, data, pop, post = shared_slope
    fit = nlp.fit_map(pop, post, data, jax.random.key(6), num_draws=100, num_starts=2)
    assert fit.fixed_treatment == "likelihood" and fit.fixed_rounds == 1
    assert fit.diagnostics_summary()["fixed_treatment"] == "likelihood"
    b = lg.ols(data)
    se_b = np.sqrt(lg.SIGMA**2 / np.sum(lg.TIMES**2) / data.num_individuals)
    assert fit.params["mean[b]"] == pytest.approx(b[:, 1].mean(), abs=0.01 * se_b)
    assert fit.stderr["mean[b]"] == pytest.approx(se_b, rel=0.01)
    assert fit.params["mean[a]"] == pytest.approx(b[:, 0].mean(), abs=0.01)
    assert int(np.sum(np.asarray(fit.importance.pareto_k) > 0.7)) == 0
    kernel = nlp.fit_map(pop, post, data, jax.random.key(6), num_draws=100, num_starts=2, fixed="kernel", diagnose=False)
    assert kernel.fixed_treatment == "kernel" and kernel.fixed_rounds == 0
    assert abs(kernel.params["mean[b]"] - b[:, 1].mean()) > 10 * abs(fit.params["mean[b]"] - b[:, 1].mean())


def test_expansion_moves_to_the_estimate(shared_slope):
    """A start far from the estimate (init) is re-expanded until the estimate stays put."""
    model, data, pop, post = shared_slope
    draws = prepare_draws(post, data, jax.random.key(3), num_draws=100)
    init = {"mean": np.array([0.5, -0.7]), "sd": np.array([0.4])}
    fit, expanded = nlp.inference.map.fit_likelihood_treatment(pop, model, draws, data, jax.random.key(4), init=init, num_starts=1)
    assert fit.fixed_rounds == 2
    assert float(expanded.fixed_point[0, 0]) == pytest.approx(fit.params["mean[b]"], abs=1e-3)
    assert fit.params["mean[b]"] == pytest.approx(lg.ols(data)[:, 1].mean(), abs=1e-4)
    with pytest.warns(nlp.diagnostics.SurrogateWarning, match="still moved by"):
        nlp.inference.map.fit_likelihood_treatment(pop, model, draws, data, jax.random.key(4), init=init, num_starts=1, max_rounds=1)


def test_nuts_posterior_of_shared_slope(shared_slope):
    """NUTS on the expanded surrogate: the posterior of the shared slope (flat prior) is exactly
    N(mean OLS slope, σ² / (N Σt²)); tolerances 0.15 SD on the location, 12% on the SD (MCMC error of
    600 draws)."""
    model, data, pop, post = shared_slope
    idata = nlp.fit_nuts(pop, post, data, jax.random.key(2), num_chains=2, num_warmup=300, num_samples=300, progress=False)
    assert idata.posterior.attrs["fixed_treatment"] == "likelihood"
    se = lg.SIGMA / np.sqrt(data.num_individuals * np.sum(lg.TIMES**2))
    b = idata.posterior["mean"].sel(param="b")
    assert abs(float(b.mean()) - lg.ols(data)[:, 1].mean()) < 0.15 * se
    assert float(b.std()) == pytest.approx(se, rel=0.12)


def test_refusals(shared_slope):
    model, data, pop, post = shared_slope
    draws = prepare_draws(post, data, jax.random.key(1), num_draws=10)
    expanded = nlp.inference.expand_fixed(draws, model, data, {"b": -1.0})
    random_b = nlp.populations.gaussian(model)
    with pytest.raises(ValueError, match=r"likelihood treatment of \['b'\], but the population program gives it a random effect"):
        nlp.log_weights(random_b, expanded, {}, data)
    with pytest.raises(ValueError, match="expanded already"):
        nlp.inference.expand_fixed(expanded, model, data, {"b": -1.0})
    with pytest.raises(ValueError, match="must name some of the parameters"):
        nlp.inference.expand_fixed(draws, model, data, {"c": 0.0})
    with pytest.raises(ValueError, match="fixed must be one of"):
        wants_likelihood_treatment("exact", post)
    assert wants_likelihood_treatment("auto", post)  # exact draws of a tractable model
    assert not wants_likelihood_treatment("auto", lg.WideEstimator(model, widen=2.0, shift=0.0))  # a lossy estimator: kernel
    sde = nlp.pretrained("frohlich_sde")
    with pytest.raises(ValueError, match="fixed='likelihood' needs a tractable likelihood"):
        wants_likelihood_treatment("likelihood", sde)


def test_cross_products_go_before_the_expansion(shared_slope):
    """The expansion's columns stay last whichever of the two is added first, so the fast path of
    correlated populations finds its cross products at the same place."""
    model, data, _, post = shared_slope
    sub = data.subset(np.arange(5))
    draws = prepare_draws(post, sub, jax.random.key(1), num_draws=7)
    first = nlp.inference.expand_fixed(draws.with_cross_products(), model, sub, {"b": -1.0})
    second = nlp.inference.expand_fixed(draws, model, sub, {"b": -1.0}).with_cross_products()
    assert first.has_cross and second.has_cross and first.num_fixed_columns == 2
    np.testing.assert_array_equal(np.asarray(first.stats), np.asarray(second.stats))
    np.testing.assert_array_equal(np.asarray(first.subset(np.arange(2)).fixed_point), np.asarray(first.fixed_point)[:2])


def test_fixed_effect_with_covariate():
    """A covariate on a parameter without random effect moves its value per individual: the
    expansion point follows it. With centred times the MLE of the slope in each group is the
    group's mean OLS slope (closed form); tolerance 0.05 SE (measured: below 1e-3 SE)."""
    model = lg.model()
    rng = np.random.default_rng(3)
    n = 200
    group = np.repeat([0.0, 1.0], n // 2)
    a = 0.5 + 0.4 * rng.standard_normal(n)
    b = -1.0 + 0.5 * group
    y = a[:, None] + b[:, None] * lg.TIMES + lg.SIGMA * rng.standard_normal((n, lg.TIMES.size))
    data = nlp.Dataset.from_arrays(lg.TIMES, y).with_covariates(group=group)
    pop = nlp.populations.gaussian(model, fixed=("b",), covariates={"b": "group"}, mean_prior=WIDE, sd_prior_scale=1e3)
    fit = nlp.fit_map(pop, lg.ExactPosterior(model), data, jax.random.key(0), num_draws=100, num_starts=2)
    assert fit.fixed_treatment == "likelihood"
    slopes = lg.ols(data)[:, 1]
    se = np.sqrt(lg.SIGMA**2 / np.sum(lg.TIMES**2) / (n // 2))
    beta = [v for k, v in fit.params.items() if k.startswith("beta")]
    assert len(beta) == 1, fit.params
    assert fit.params["mean[b]"] == pytest.approx(slopes[group == 0].mean(), abs=0.05 * se)
    assert fit.params["mean[b]"] + beta[0] == pytest.approx(slopes[group == 1].mean(), abs=0.05 * se)


@pytest.mark.parametrize("num_fixed", [1, 2, 3, 5])
def test_value_grad_hessian_matches_autodiff(num_fixed):
    # the expansion's one-pass derivatives (forward over forward up to _FORWARD_MAX parameters,
    # forward over reverse above) against jax.grad and jax.hessian, to float64 rounding
    import jax.numpy as jnp

    from nlme_ppl.inference.fixed import _value_grad_hessian

    a = jax.random.normal(jax.random.key(0), (num_fixed, num_fixed))

    def fn(f):
        return jnp.sum(jnp.sin(a @ f) * jnp.exp(0.3 * f)) - 0.5 * jnp.sum(f**4)

    point = jax.random.normal(jax.random.key(1), (num_fixed,))
    v, g, h = _value_grad_hessian(fn, point)
    np.testing.assert_allclose(v, fn(point), rtol=1e-14)
    np.testing.assert_allclose(g, jax.grad(fn)(point), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h, jax.hessian(fn)(point), rtol=1e-12, atol=1e-13)
