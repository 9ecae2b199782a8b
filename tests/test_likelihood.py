"""The amortized surrogate against closed-form marginal likelihoods (linear-Gaussian model)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_density, log_likelihood

import nlme_ppl as nlp
from nlme_ppl.likelihood import amortize, prepare_draws

from tests import linear_gaussian as lg


@pytest.fixture(scope="module")
def setup():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(1), 60, np.array([0.5, -1.0]), np.array([0.4, 0.3]))
    post = lg.ExactPosterior(model)
    draws = prepare_draws(post, data, jax.random.key(2), num_draws=16000)
    return model, data, post, draws


def _mc_standard_error(draws, mean, cov):
    """Delta-method SE of sum_i log mean_j w_ij, from the weights themselves."""
    from scipy import stats

    phi = np.asarray(draws.values)
    log_w = stats.multivariate_normal(mean, cov).logpdf(phi) - np.asarray(draws.log_prior)
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    rel_var = w.var(axis=1) / (w.shape[1] * w.mean(axis=1) ** 2)
    return float(np.sqrt(rel_var.sum()))


def _log_train_marginal(data):
    return lg.log_marginal(data, np.zeros(2), lg.S0**2 * np.eye(2))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_surrogate_matches_closed_form_marginal(setup, covariance):
    model, data, _, draws = setup
    pop = nlp.populations.gaussian(model, covariance=covariance)
    surrogate = amortize(pop, draws)
    const = _log_train_marginal(data)
    for mean, sd, rho in [([0.5, -1.0], [0.4, 0.3], 0.0), ([0.2, -0.6], [0.6, 0.5], 0.5)]:
        if covariance == "diag" and rho:
            continue
        params = {"mean": jnp.array(mean), "sd": jnp.array(sd)}
        if covariance == "full":
            params["corr_chol"] = jnp.linalg.cholesky(jnp.array([[1.0, rho], [rho, 1.0]]))
        terms = log_likelihood(surrogate, params, data, batch_ndims=0)["obs"]
        assert terms.shape == (data.num_individuals,)
        cov = np.diag(sd) @ np.array([[1, rho], [rho, 1]]) @ np.diag(sd)
        exact = lg.log_marginal(data, np.array(mean), cov)
        # within 4 Monte Carlo standard errors (estimated from the importance weights themselves)
        se = _mc_standard_error(draws, np.array(mean), cov)
        assert se < 0.2
        assert float(terms.sum()) + const == pytest.approx(exact, abs=4 * se)


def test_log_density_adds_factor_and_prior(setup):
    model, data, _, draws = setup
    pop = nlp.populations.gaussian(model)
    surrogate = amortize(pop, draws)
    params = {"mean": jnp.array([0.5, -1.0]), "sd": jnp.array([0.4, 0.3])}
    ld, trace = log_density(surrogate, (data,), {}, params)
    terms = log_likelihood(surrogate, params, data, batch_ndims=0)["obs"]
    prior = dist.Normal(0.0, lg.S0).log_prob(params["mean"]).sum() + dist.HalfNormal(1.0).log_prob(params["sd"]).sum()
    assert float(ld) == pytest.approx(float(terms.sum() + prior), rel=1e-10)
    # individual-parameter sites are neither latent nor observed sample sites any more
    assert trace["a"]["type"] == "amortized"
    assert {k for k, s in trace.items() if s["type"] == "sample" and not s["is_observed"]} == {"mean", "sd"}


def test_vector_site_equals_per_name_sites(setup):
    model, data, _, draws = setup
    mean, sd = jnp.array([0.3, -0.8]), jnp.array([0.5, 0.2])

    def per_name(data):
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("a", dist.Normal(mean[0], sd[0]))
            numpyro.sample("b", dist.Normal(mean[1], sd[1]))

    def vector(data):
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("phi", dist.Normal(mean, sd).to_event(1), infer={"individual_params": ("a", "b")})

    a = log_likelihood(amortize(per_name, draws), {}, data, batch_ndims=0)["obs"]
    b = log_likelihood(amortize(vector, draws), {}, data, batch_ndims=0)["obs"]
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_missing_parameter_site_is_refused(setup):
    _, data, _, draws = setup

    def only_a(data):
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"no site for individual parameter\(s\) \['b'\]"):
        log_likelihood(amortize(only_a, draws), {}, data, batch_ndims=0)


def test_site_outside_plate_with_wrong_batch_is_refused(setup):
    _, data, _, draws = setup

    def wrong(data):
        numpyro.sample("a", dist.Normal(jnp.zeros(3), 1.0))
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("b", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="site 'a' has batch shape"):
        log_likelihood(amortize(wrong, draws), {}, data, batch_ndims=0)


def test_fit_map_returns_closed_form_mle():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(3), 300, np.array([0.5, -1.0]), np.array([0.4, 0.3]))
    post = lg.ExactPosterior(model)
    # near-flat priors, so that the MAP is the MLE
    pop = nlp.populations.gaussian(model, mean_prior={"a": (0.0, 1e3), "b": (0.0, 1e3)}, sd_prior_scale=1e3)
    fit = nlp.fit_map(pop, post, data, jax.random.key(4), num_draws=1000, num_starts=4)
    mean, sd, b = lg.closed_form_mle(data)
    assert fit.converged[fit.best]
    se_mean = np.sqrt(b.var(0) / data.num_individuals)
    # Monte Carlo error from 1000 draws is far below the statistical SE; allow 10% of one SE.
    np.testing.assert_allclose([fit.params["mean[a]"], fit.params["mean[b]"]], mean, atol=0.1 * se_mean.max())
    np.testing.assert_allclose([fit.params["sd[a]"], fit.params["sd[b]"]], sd, rtol=0.03)
    # standard errors from the Hessian agree with the closed form SE of the mean
    np.testing.assert_allclose([fit.stderr["mean[a]"], fit.stderr["mean[b]"]], se_mean, rtol=0.1)
    table = fit.table()
    assert table.loc["mean[a]", "value"] == pytest.approx(np.exp(fit.params["mean[a]"]))


def test_fixed_parameter_kernel_estimator():
    """b has no random effect: the kernel-smoothed surrogate recovers the closed-form MLE of its value."""
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(5), 300, np.array([0.5, -1.0]), np.array([0.4, 0.0]))
    post = lg.ExactPosterior(model)
    pop = nlp.populations.gaussian(model, fixed=("b",), mean_prior={"a": (0.0, 1e3), "b": (0.0, 1e3)}, sd_prior_scale=1e3)
    # diagnose=False: the few individuals whose own posterior of b sits ~3 SE from the shared
    # value get concentrated kernel weights (Pareto k > 0.7), which the check rightly reports.
    fit = nlp.fit_map(pop, post, data, jax.random.key(6), num_draws=1000, num_starts=2, diagnose=False, fixed="kernel")
    b = lg.ols(data)
    se_b = np.sqrt(lg.SIGMA**2 / np.sum(lg.TIMES**2) / data.num_individuals)
    assert "sd[b]" not in fit.params
    # The kernel adds Monte Carlo noise (about 0.1 SE at M=1000) and inflates the SE by
    # sqrt(1 + M^(-1/3)) at most; the estimate itself has no kernel bias for Gaussian posteriors.
    assert fit.params["mean[b]"] == pytest.approx(b[:, 1].mean(), abs=0.3 * se_b)
    assert fit.stderr["mean[b]"] == pytest.approx(se_b, rel=0.12)
    assert fit.params["mean[a]"] == pytest.approx(b[:, 0].mean(), abs=0.05)


def _scipy_log_weights(draws, logpdf):
    phi = np.asarray(draws.values)
    return logpdf(phi) - np.asarray(draws.log_prior)


@pytest.mark.parametrize("kind", ["normal", "covariate_loc", "delta", "mvn_fast", "mvn_direct", "student_t"])
def test_log_weights_fast_path_equals_scipy(setup, kind):
    """Every population distribution, whether through the sufficient-statistics fast path or
    direct evaluation, gives log p(φ_ij|θ) - log p_train(φ_ij) equal to scipy to 1e-9."""
    from scipy import stats

    model, data, _, draws = setup
    draws = prepare_draws(lg.ExactPosterior(model), data, jax.random.key(7), num_draws=50, cross=(kind == "mvn_fast"))
    n = data.num_individuals
    shift = np.linspace(-0.5, 0.5, n)  # a per-individual location, as a covariate effect gives
    cov = np.array([[0.3, 0.1], [0.1, 0.2]])

    def population(data):
        with numpyro.plate("individuals", n):
            if kind in ("normal", "covariate_loc", "delta"):
                loc = 0.4 + shift if kind == "covariate_loc" else 0.4
                numpyro.sample("a", dist.Normal(loc, 0.7))
                if kind == "delta":
                    numpyro.sample("b", dist.Delta(-1.0), obs=jnp.full(n, -1.0))
                else:
                    numpyro.sample("b", dist.Normal(-1.0, 0.2))
            elif kind.startswith("mvn"):
                numpyro.sample("phi", dist.MultivariateNormal(jnp.array([0.4, -1.0]), jnp.array(cov)), infer={"individual_params": ("a", "b")})
            else:
                numpyro.sample("a", dist.StudentT(4.0, 0.4, 0.7))
                numpyro.sample("b", dist.Normal(-1.0, 0.2))

    got = np.asarray(nlp.log_weights(population, draws, {}, data))
    if kind in ("normal", "covariate_loc", "student_t"):
        loc = 0.4 + shift[:, None] if kind == "covariate_loc" else 0.4
        first = stats.t(4.0, 0.4, 0.7).logpdf if kind == "student_t" else (lambda x: stats.norm(loc, 0.7).logpdf(x))
        ref = _scipy_log_weights(draws, lambda p: first(p[..., 0]) + stats.norm(-1.0, 0.2).logpdf(p[..., 1]))
    elif kind == "delta":
        h = np.asarray(draws.bandwidth)[:, None, 1]
        ref = _scipy_log_weights(draws, lambda p: stats.norm(0.4, 0.7).logpdf(p[..., 0]) + stats.norm(-1.0, h).logpdf(p[..., 1]))
    else:
        ref = _scipy_log_weights(draws, stats.multivariate_normal([0.4, -1.0], cov).logpdf)
    assert got.shape == (n, 50)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_draws_subset_by_slice_equals_by_index(setup):
    """`SurrogateDraws.subset` takes a slice without gathering; both forms give the same draws."""
    _, data, post, _ = setup
    draws = prepare_draws(post, data, jax.random.key(3), num_draws=6, cross=True)
    n = draws.num_individuals
    pairs = [(slice(1, 4), np.arange(1, 4)), (slice(None), np.arange(n)), (slice(0, n, 2), np.arange(0, n, 2))]
    for sl, idx in pairs:
        a, b = draws.subset(sl, draws=slice(0, 3)), draws.subset(idx, draws=np.arange(3))
        for x, y in zip((a.values, a.log_prior, a.bandwidth, a.centre, a.stats), (b.values, b.log_prior, b.bandwidth, b.centre, b.stats)):
            np.testing.assert_array_equal(x, y)
        assert a.num_individuals == len(idx) and a.num_draws == 3
    one = draws.subset(2)  # a single row keeps the individual axis
    assert one.values.shape == (1, 6, draws.num_params)


@pytest.mark.parametrize("n", [5, 16, 37])  # one block, exactly one, several with a shifted last one
def test_fused_log_sum_exp_matches_autodiff(n):
    """`_lse_linear` (one pass over the statistics, custom JVP) against jax.nn.logsumexp of the
    same linear form: value, gradient, Hessian, and derivatives in the draws themselves."""
    from nlme_ppl._lse import lse_linear as _lse_linear

    rng = np.random.default_rng(n)
    stats, log_prior = rng.normal(size=(n, 9, 4)), rng.normal(size=(n, 9))
    coef, const = rng.normal(size=(n, 4)), rng.normal(size=n)
    w = rng.normal(size=n)

    def plain(stats, coef, const, log_prior):
        return jax.nn.logsumexp(jnp.einsum("nmc,nc->nm", stats, coef) + const[:, None] - log_prior, axis=1)

    for fn in (plain, _lse_linear):
        assert fn(stats, coef, const, log_prior).shape == (n,)
    np.testing.assert_allclose(_lse_linear(stats, coef, const, log_prior), plain(stats, coef, const, log_prior), rtol=1e-12)
    f = lambda fn: lambda *a: jnp.sum(w * fn(*a))  # noqa: E731
    for argnums in ((1, 2), (0, 3)):
        g_fused = jax.grad(f(_lse_linear), argnums=argnums)(stats, coef, const, log_prior)
        g_plain = jax.grad(f(plain), argnums=argnums)(stats, coef, const, log_prior)
        for a, b in zip(g_fused, g_plain):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    h_fused = jax.hessian(lambda c: f(_lse_linear)(stats, c, const, log_prior))(coef)
    h_plain = jax.hessian(lambda c: f(plain)(stats, c, const, log_prior))(coef)
    np.testing.assert_allclose(h_fused, h_plain, rtol=1e-9, atol=1e-12)
