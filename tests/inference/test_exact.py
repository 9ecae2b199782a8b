"""The exact hierarchical baseline: closed-form references (linear-Gaussian), agreement with the
surrogate, the DataTree layout, exchangeable models, and bad input."""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_likelihood
from scipy import stats

import nlme_ppl as nlp
from nlme_ppl.inference.exact import exact_init, exact_model, fit_exact_individual, fit_exact_nuts
from nlme_ppl.likelihood import draws_from_values
from tests import linear_gaussian as lg

WIDE = {"a": (0.0, 100.0), "b": (0.0, 100.0)}  # flat enough that the posterior is the likelihood's
CHAINS, SAMPLES = 2, 400


@pytest.fixture(scope="module")
def lin():
    model = lg.model()
    # Population SDs larger than the individual posterior SDs (0.18, 0.27): the regime where the
    # centred exact model samples well (see docs/guide/inference.md).
    data, _ = lg.simulate_population(jax.random.key(3), 60, np.array([0.5, -1.0]), np.array([0.5, 0.6]))
    return model, data, nlp.populations.gaussian(model, mean_prior=WIDE)


@pytest.fixture(scope="module")
def exact(lin):
    model, data, pop = lin
    return fit_exact_nuts(pop, model, data, jax.random.key(0), num_chains=CHAINS, num_warmup=300, num_samples=SAMPLES, progress=False)


@pytest.fixture(scope="module")
def surrogate(lin):
    model, data, pop = lin
    return nlp.fit_nuts(pop, lg.ExactPosterior(model), data, jax.random.key(1), num_draws=500, num_chains=CHAINS, num_warmup=300, num_samples=SAMPLES, progress=False)


def test_posterior_of_means_matches_closed_form(lin, exact):
    _, data, _ = lin
    b = lg.ols(data)
    post = exact.posterior["mean"]
    # Every individual has the same design, so given the SDs the posterior of the means (flat
    # prior) is centred exactly at the mean of the OLS estimates, with SD ≈ sd(OLS)/sqrt(N).
    # Tolerances: 0.2 SE on the location (MCMC error ≈ 0.05 SE), 15% on the SD.
    se = b.std(0) / np.sqrt(data.num_individuals)
    np.testing.assert_allclose(post.mean(("chain", "draw")), b.mean(0), atol=0.2 * se.min())
    np.testing.assert_allclose(post.std(("chain", "draw")), se, rtol=0.15)


def sd_posterior_on_grid(data):
    """Posterior mean and SD of each population SD, by quadrature.

    The OLS estimates are sufficient: OLS_i ~ N(mean, sd² + se²) per component, independently
    (centred times), so with the flat prior on `mean` integrated out, p(sd | D) ∝
    HalfNormal(sd; 1) · v^(-(N-1)/2) · exp(-S / 2v), v = sd² + se², S = Σ_i (OLS_i - mean OLS)².
    """
    b, n = lg.ols(data), data.num_individuals
    X = lg.design_matrix(lg.TIMES)
    se2 = lg.SIGMA**2 / np.diag(X.T @ X)
    grid = np.linspace(1e-4, 3.0, 60_001)
    out = []
    for j in range(2):
        v = grid**2 + se2[j]
        logp = stats.halfnorm.logpdf(grid) - (n - 1) / 2 * np.log(v) - np.sum((b[:, j] - b[:, j].mean()) ** 2) / (2 * v)
        w = np.exp(logp - logp.max())
        w /= w.sum()
        m = np.sum(w * grid)
        out.append((m, np.sqrt(np.sum(w * (grid - m) ** 2))))
    return np.array(out).T  # (2,) means, (2,) SDs


def test_posterior_of_sds_matches_quadrature(lin, exact):
    _, data, _ = lin
    mean, sd = sd_posterior_on_grid(data)
    post = exact.posterior["sd"]
    # Tolerances: 0.2 posterior SD on the location (MCMC error ≈ 0.03), 15% on the SD.
    np.testing.assert_allclose(post.mean(("chain", "draw")), mean, atol=0.2 * sd.min())
    np.testing.assert_allclose(post.std(("chain", "draw")), sd, rtol=0.15)


def test_individual_parameters_are_shrunk_estimates(lin, exact):
    _, data, _ = lin
    b = lg.ols(data)
    phi = exact.posterior["phi"].mean(("chain", "draw")).values  # (N, 2)
    mean = exact.posterior["mean"].mean(("chain", "draw")).values
    sd = exact.posterior["sd"].mean(("chain", "draw")).values
    # Given θ, E[φ_i | y_i, θ] = w·OLS_i + (1 - w)·mean with w = sd² / (sd² + se²) per component
    # (X'X is diagonal). Plugging in the posterior mean of θ ignores its uncertainty: tolerance
    # 0.05 (individual posterior SDs are 0.15-0.25; MCMC error ≈ 0.01).
    X = lg.design_matrix(lg.TIMES)
    se2 = lg.SIGMA**2 / np.diag(X.T @ X)
    w = sd**2 / (sd**2 + se2)
    np.testing.assert_allclose(phi, w * b + (1 - w) * mean, atol=0.05)


def test_agrees_with_surrogate_nuts(exact, surrogate):
    # The surrogate over exact individual posteriors (500 draws each) targets the same posterior.
    # Tolerances: 0.25 posterior SD on each posterior mean (MCMC error of the difference ≈ 0.05
    # SD; the surrogate's Monte Carlo bias is small here), 15% on the posterior SDs.
    for name in ("mean", "sd"):
        e, s = exact.posterior[name], surrogate.posterior[name]
        e_sd = e.std(("chain", "draw")).values
        diff = np.abs(s.mean(("chain", "draw")).values - e.mean(("chain", "draw")).values)
        assert np.all(diff <= 0.25 * e_sd), (name, diff / e_sd)
        np.testing.assert_allclose(s.std(("chain", "draw")), e_sd, rtol=0.15, err_msg=name)


def test_datatree_layout_matches_fit_nuts(lin, exact, surrogate):
    model, data, _ = lin
    core = {"posterior", "sample_stats", "log_likelihood", "observed_data", "constant_data"}
    assert set(exact.children) == core and core <= set(surrogate.children)  # fit_nuts may add surrogate checks
    assert set(exact.sample_stats.data_vars) == set(surrogate.sample_stats.data_vars)
    assert set(exact.posterior.data_vars) == set(surrogate.posterior.data_vars) | {"phi"}
    assert list(exact.posterior["mean"].coords["param"].values) == ["a", "b"]
    assert list(exact.posterior["sd"].coords["sd_param"].values) == ["a", "b"]
    assert exact.posterior["phi"].dims == ("chain", "draw", "individual", "param")
    assert exact.posterior["phi"].shape == (CHAINS, SAMPLES, data.num_individuals, 2)
    assert list(exact.posterior["phi"].coords["individual"].values) == list(data.ids)
    assert exact.log_likelihood["obs"].shape == (CHAINS, SAMPLES, data.num_individuals)
    assert list(exact.log_likelihood["obs"].coords["individual"].values) == list(data.ids)
    assert exact.posterior.attrs["inference"] == "exact hierarchical NUTS"
    summary = az.summary(exact, var_names=["mean", "sd"])
    assert (summary["r_hat"] < 1.05).all()
    assert int(exact.sample_stats["diverging"].sum()) <= 2
    # az.loo runs on the tree. Its terms are the conditional log p(y_i | φ_i); leaving an
    # individual out moves its φ_i a lot, so high Pareto k is expected and its warning ignored.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loo = az.loo(exact, pointwise=True)
    assert np.isfinite(loo.elpd) and loo.pareto_k.shape == (data.num_individuals,)


def test_log_likelihood_terms_are_exact(lin, exact):
    # Each term is log p(y_i | φ_i) at that draw's φ_i: checked against scipy (to 1e-9).
    _, data, _ = lin
    phi = exact.posterior["phi"].values[:, ::100]  # (chains, 4, N, 2)
    mu = phi[..., :1] + phi[..., 1:] * np.asarray(data.times)
    expected = stats.norm(mu, lg.SIGMA).logpdf(np.asarray(data.values)).sum(-1)
    np.testing.assert_allclose(exact.log_likelihood["obs"].values[:, ::100], expected, rtol=1e-9)


def test_padded_observations_do_not_count(lin):
    model, data, pop = lin
    mask = np.ones(data.values.shape, bool)
    mask[0, 5:] = False
    padded = nlp.Dataset.from_arrays(data.times, data.values, mask=mask)
    trimmed = nlp.Dataset.from_arrays(np.asarray(data.times[0, :5]), np.asarray(data.values[:1, :5]))
    params = {"mean": jnp.array([0.5, -1.0]), "sd": jnp.array([0.4, 0.3]), "a": jnp.full(60, 0.3), "b": jnp.full(60, -0.8)}
    ll = log_likelihood(exact_model(pop, model), params, padded, batch_ndims=0)["obs"]
    one = {"mean": params["mean"], "sd": params["sd"], "a": jnp.array([0.3]), "b": jnp.array([-0.8])}
    ll0 = log_likelihood(exact_model(pop, model), one, trimmed, batch_ndims=0)["obs"]
    assert ll.shape == (60,)
    np.testing.assert_allclose(ll[0], ll0[0], rtol=1e-12)
    assert abs(float(ll[0] - ll[1])) > 1.0  # the full individual has 3 more terms


def test_fixed_effect_recovers_shared_value(lin):
    model, _, _ = lin
    # b has no random effect: every individual shares b = -1.0 (sd 0).
    data, _ = lg.simulate_population(jax.random.key(5), 40, np.array([0.5, -1.0]), np.array([0.4, 0.0]))
    pop = nlp.populations.gaussian(model, fixed=("b",), mean_prior=WIDE)
    idata = fit_exact_nuts(pop, model, data, jax.random.key(2), num_chains=2, num_warmup=300, num_samples=300, progress=False)
    # With centred times, the OLS slopes are independent of the intercepts, so the posterior of
    # the shared slope (flat prior) is exactly N(mean OLS slope, σ² / (N Σt²)).
    # Tolerances: 0.2 SD on the location, 15% on the SD.
    se = lg.SIGMA / np.sqrt(data.num_individuals * np.sum(lg.TIMES**2))
    post = idata.posterior["mean"].sel(param="b")
    assert abs(float(post.mean()) - lg.ols(data)[:, 1].mean()) < 0.2 * se
    assert float(post.std()) == pytest.approx(se, rel=0.15)
    # every individual's b is the shared value, draw by draw
    np.testing.assert_array_equal(idata.posterior["phi"].sel(param="b").values, np.broadcast_to(post.values[..., None], (2, 300, 40)))
    assert list(idata.posterior["sd"].coords["sd_param"].values) == ["a"]
    assert "b" not in idata.posterior.data_vars and "a" not in idata.posterior.data_vars


def test_full_covariance_vector_site(lin, exact):
    model, data, _ = lin
    # One vector site `phi` with infer={"individual_params": ...}: a short run checks the plumbing.
    pop = nlp.populations.gaussian(model, covariance="full", mean_prior=WIDE)
    idata = fit_exact_nuts(pop, model, data, jax.random.key(9), num_chains=1, num_warmup=100, num_samples=50, progress=False)
    assert idata.posterior["phi"].dims == ("chain", "draw", "individual", "param")
    assert idata.posterior["phi"].shape == (1, 50, data.num_individuals, 2)
    assert idata.posterior["corr"].dims == ("chain", "draw", "corr_param", "corr_param_bis")
    # The true correlation is 0, so the individual posterior means agree with the diagonal
    # model's. Tolerance 0.15: MC error of 50 draws ≈ 0.04 per individual, max over 120.
    np.testing.assert_allclose(idata.posterior["phi"].mean(("chain", "draw")), exact.posterior["phi"].mean(("chain", "draw")), atol=0.15)


def test_individual_posterior_matches_conjugate(lin):
    model, data, _ = lin
    s = fit_exact_individual(model, data, jax.random.key(4), index=3, num_warmup=300, num_samples=1000)
    mean, cov = lg.ExactPosterior(model).moments(data)
    mean, cov = mean[3], cov[3]
    sd = np.sqrt(np.diag(cov))
    # 2000 draws: MC error of the mean ≈ 0.03 SD. Tolerances: 0.1 SD on the means, 10% on the
    # SDs, 0.1 on the correlation (exactly 0 here: centred times).
    assert s.shape == (2000, 2)
    np.testing.assert_allclose(s.mean(0), mean, atol=0.1 * sd.min())
    np.testing.assert_allclose(s.std(0), sd, rtol=0.1)
    assert abs(np.corrcoef(s.T)[0, 1]) < 0.1


# ----------------------------------------------------------------------------- exchangeable parameters
TAU = np.linspace(0.1, 3.0, 12)


def two_decays(design, obs=None):
    """A sum of two exponential decays: symmetric in (a, b), so each posterior has two modes."""
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    mu = jnp.exp(-jnp.exp(a) * design["times"]) + jnp.exp(-jnp.exp(b) * design["times"])
    numpyro.sample("obs", dist.Normal(mu, 0.02).mask(design["mask"]).to_event(1), obs=obs)


@pytest.fixture(scope="module")
def decays():
    model = nlp.models.IndividualModel(two_decays, {"times": TAU}, name="two_decays", exchangeable=(("a", "b"),))
    rng = np.random.default_rng(0)
    phi = np.stack([0.7 + 0.1 * rng.standard_normal(8), -0.7 + 0.1 * rng.standard_normal(8)], -1)
    return model, nlp.simulate_data(model, phi, jax.random.key(6)), phi


def test_individual_symmetrize(decays):
    model, data, phi = decays
    kw = dict(index="2", num_chains=1, num_warmup=300, num_samples=1000)
    plain = fit_exact_individual(model, data, jax.random.key(7), **kw)
    sym = fit_exact_individual(model, data, jax.random.key(7), symmetrize=True, **kw)
    # Same chains; symmetrize only permutes (a, b) within each draw, at random.
    np.testing.assert_array_equal(model.canonicalize(sym), model.canonicalize(plain))
    frac = float(np.mean(sym[:, 0] > sym[:, 1]))
    assert abs(frac - 0.5) < 0.05  # binomial SD 0.016 at 1000 draws
    # the canonical (sorted) draws sit at the truth of individual "2" (row 1): within 0.1
    np.testing.assert_allclose(np.mean(model.canonicalize(sym), 0), phi[1], atol=0.1)


def test_exact_init_follows_population_labelling(decays):
    model, data, phi = decays
    # Each individual's draws: the true pair and its swap, equally likely under the estimator.
    values = np.stack([phi, phi[:, ::-1]], axis=1)  # (N, 2, 2)
    draws = draws_from_values(values, model)
    pop = nlp.populations.gaussian(model)
    for mean, a_first in (([0.7, -0.7], True), ([-0.7, 0.7], False)):
        init = exact_init(pop, {"mean": jnp.array(mean), "sd": jnp.array([0.2, 0.2])}, draws, data)
        assert set(init) == {"mean", "sd", "a", "b"}
        assert init["a"].shape == (8,)
        assert bool(np.all((np.asarray(init["a"]) > np.asarray(init["b"])) == a_first))


def test_exact_nuts_from_exact_init_keeps_labels(decays):
    model, data, phi = decays
    pop = nlp.populations.gaussian(model, mean_prior={"a": (0.7, 0.5), "b": (-0.7, 0.5)})
    draws = draws_from_values(np.stack([phi, phi[:, ::-1]], axis=1), model)
    init = exact_init(pop, {"mean": jnp.array([0.7, -0.7]), "sd": jnp.array([0.1, 0.1])}, draws, data)
    idata = fit_exact_nuts(pop, model, data, jax.random.key(8), num_chains=1, num_warmup=200, num_samples=200, init=init, progress=False)
    p = idata.posterior["phi"]
    assert bool((p.sel(param="a") > p.sel(param="b")).all())  # no individual switched labels
    # 8 individuals with sharp posteriors: mean[a] near the sample mean of the true a (within 0.15)
    assert abs(float(idata.posterior["mean"].sel(param="a").mean()) - phi[:, 0].mean()) < 0.15


# ----------------------------------------------------------------------------- bad input
def test_bad_input(lin):
    model, data, pop = lin
    key = jax.random.key(0)

    def no_b(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("a", dist.Normal(mu, 1.0))

    with pytest.raises(ValueError, match=r"declares no site for individual parameter\(s\) \['b'\]"):
        fit_exact_nuts(no_b, model, data, key, progress=False)

    def unknown(data):
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("v", dist.Normal(0.0, 1.0).expand([2]).to_event(1), infer={"individual_params": ("a", "c")})

    with pytest.raises(ValueError, match="site 'v' claims unknown individual parameter 'c'"):
        fit_exact_nuts(unknown, model, data, key, progress=False)

    def outside(data):
        numpyro.sample("a", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("b", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"site 'a' covers individual parameter\(s\) \('a',\)"):
        fit_exact_nuts(outside, model, data, key, progress=False)

    def with_obs_site(data):
        pop(data)
        numpyro.sample("obs", dist.Normal(0.0, 1.0))  # clashes with the likelihood factor's default name

    with pytest.raises(ValueError, match="has a site named 'obs', the name of the likelihood factor; pass site="):
        fit_exact_nuts(with_obs_site, model, data, key, progress=False)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(exact_model(with_obs_site, model, site="lik"), 0)).get_trace(data)
    assert tr["lik"]["fn"].log_factor.shape == (data.num_individuals,) and "obs" in tr

    with pytest.raises(TypeError, match="pass `posterior.model`"):
        fit_exact_nuts(pop, lg.ExactPosterior(model), data, key)
    with pytest.raises(ValueError, match="`init` names 'mu'"):
        fit_exact_nuts(pop, model, data, key, init={"mu": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"`init\['a'\]` has shape \(3,\); site 'a' has shape \(60,\)"):
        fit_exact_nuts(pop, model, data, key, init={"a": jnp.zeros(3)})
    with pytest.raises(TypeError, match="init=exact_init"):
        fit_exact_nuts(pop, model, data, key, init=[1.0])
    with pytest.raises(ValueError, match="`num_samples` must be a positive integer"):
        fit_exact_nuts(pop, model, data, key, num_samples=0)
    with pytest.raises(ValueError, match=r"`index` must be a row in \[0, 60\)"):
        fit_exact_individual(model, data, key, index=60)
    with pytest.raises(ValueError, match="no individual with id 'x'"):
        fit_exact_individual(model, data, key, index="x")


def test_unmasked_program_is_refused(lin):
    _, data, pop = lin

    def unmasked(design, obs=None):
        a = numpyro.sample("a", dist.Normal(0.0, 3.0))
        b = numpyro.sample("b", dist.Normal(0.0, 3.0))
        numpyro.sample("obs", dist.Normal(a + b * design["times"], 0.5).to_event(1), obs=obs)

    model = nlp.models.IndividualModel(unmasked, {"times": lg.TIMES}, name="unmasked")
    mask = np.ones(data.values.shape, bool)
    mask[4, 6:] = False
    padded = nlp.Dataset.from_arrays(data.times, data.values, mask=mask)
    with pytest.raises(ValueError, match=r"padded \(unobserved\) values of individual '5' \(row 4\); mask the observed site"):
        fit_exact_nuts(pop, model, padded, jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match="mask the observed site"):
        fit_exact_individual(model, padded, jax.random.key(0), index=4)
