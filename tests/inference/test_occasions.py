"""Inter-occasion variability (`populations.gaussian(..., occasions=)`, `fit_occasions`): the
likelihood against the closed form of a linear-Gaussian model with IOV, the fit against its
exact MAP, and the refusals."""

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import nlme_ppl as nlp
from tests.linear_gaussian import S0, SIGMA, TIMES, ExactPosterior, design_matrix, model

S, K = 40, 3
TRUTH = {"mean": np.array([1.0, -0.5]), "sd": np.array([0.8, 0.4]), "sd_occ": np.array([0.5])}


def _iov_data(seed=0):
    """S individuals × K occasions of y = a_i + b_iu t + noise, with b_iu = b_i + κ_iu."""
    rng = np.random.default_rng(seed)
    psi = TRUTH["mean"] + TRUTH["sd"] * rng.standard_normal((S, 2))
    b = psi[:, 1:] + TRUTH["sd_occ"][0] * rng.standard_normal((S, K))
    y = psi[:, :1, None] + b[:, :, None] * TIMES + SIGMA * rng.standard_normal((S, K, TIMES.size))
    ids = [f"{i}/{k}" for i in range(S) for k in range(K)]
    data = nlp.Dataset.from_arrays(TIMES, y.reshape(S * K, -1), ids=ids)
    return data.with_subjects([str(i) for i in range(S) for _ in range(K)])


def _exact_loglik(data, mean, sd, sd_occ):
    """Σ_i log N(y_i; X_i μ, X_i Ω X_iᵀ + Z Γ Zᵀ + σ² I) − Σ_u log p_train(y_u): the IOV model's
    log-likelihood relative to the training prior's marginal of each occasion, as the fit reports it."""
    X = design_matrix(TIMES)
    y = np.asarray(data.values).reshape(S, K * TIMES.size)
    Xi = np.tile(X, (K, 1))
    Z = np.kron(np.eye(K), TIMES[:, None])
    cov = Xi @ np.diag(sd**2) @ Xi.T + sd_occ**2 * Z @ Z.T + SIGMA**2 * np.eye(K * TIMES.size)
    total = stats.multivariate_normal(Xi @ mean, cov).logpdf(y).sum()
    train = stats.multivariate_normal(np.zeros(TIMES.size), S0**2 * X @ X.T + SIGMA**2 * np.eye(TIMES.size))
    return total - train.logpdf(np.asarray(data.values)).sum()


def _exact_map(data):
    """The MAP under the population's priors (Normal(0, 3) means, HalfNormal(1) SDs), by scipy."""
    def neg(z):
        mean, sd, g = z[:2], np.exp(z[2:4]), np.exp(z[4])
        prior = stats.norm(0, S0).logpdf(mean).sum() + stats.halfnorm(scale=1.0).logpdf(np.append(sd, g)).sum()
        return -(_exact_loglik(data, mean, sd, g) + prior)
    z = optimize.minimize(neg, np.array([0.5, 0.0, -0.5, -0.5, -0.5]), method="Nelder-Mead",
                          options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 20000, "maxfev": 20000}).x
    return np.concatenate([z[:2], np.exp(z[2:])])


@pytest.fixture(scope="module")
def iov_fit():
    data = _iov_data()
    pop = nlp.populations.gaussian(model(), occasions=("b",))
    return data, nlp.fit_map(pop, ExactPosterior(model()), data, jax.random.key(0), num_draws=200)


def test_iov_fit_matches_the_exact_map_and_likelihood(iov_fit):
    data, fit = iov_fit
    exact = _exact_map(data)
    est = np.array([fit.params[k] for k in ("mean[a]", "mean[b]", "sd[a]", "sd[b]", "sd_occ[b]")])
    se = np.array([fit.stderr[k] for k in ("mean[a]", "mean[b]", "sd[a]", "sd[b]", "sd_occ[b]")])
    # measured: every estimate within 0.27 SE of the exact MAP (0.26 for sd[b], 0.13 for mean[b],
    # < 0.03 for the rest; the posterior is Gaussian, so the error is the Monte Carlo error of the
    # draws and the importance points); tolerance 0.5 SE
    assert np.all(np.abs(est - exact) < 0.5 * se), (est, exact, se)
    # the log-likelihood at the estimate: measured 0.6 above the closed form (120 occasions; the
    # maximum of a Monte Carlo objective is biased up); tolerance 2.0
    exact_ll = _exact_loglik(data, est[:2], est[2:4], est[4])
    assert abs(fit.log_likelihood - exact_ll) < 2.0, (fit.log_likelihood, exact_ll)
    assert fit.ids == tuple(str(i) for i in range(S)) and fit.pointwise.shape == (S,)
    assert np.all(fit.importance.pareto_k < 0.7)


def test_iov_standard_errors_match_the_exact_hessian(iov_fit):
    data, fit = iov_fit
    # measured: the SEs of the means within 5% of the exact observed-information SEs; tolerance 15%
    def neg(m):
        return -_exact_loglik(data, m, np.array([fit.params["sd[a]"], fit.params["sd[b]"]]), fit.params["sd_occ[b]"])
    m0 = np.array([fit.params["mean[a]"], fit.params["mean[b]"]])
    h = 1e-4
    hess = np.array([[(neg(m0 + h * (np.eye(2)[i] + np.eye(2)[j])) - neg(m0 + h * (np.eye(2)[i] - np.eye(2)[j]))
                       - neg(m0 - h * (np.eye(2)[i] - np.eye(2)[j])) + neg(m0 - h * (np.eye(2)[i] + np.eye(2)[j]))) / (4 * h * h)
                      for j in range(2)] for i in range(2)])
    exact_se = np.sqrt(np.diag(np.linalg.inv(hess)))
    se = np.array([fit.stderr["mean[a]"], fit.stderr["mean[b]"]])
    assert np.allclose(se, exact_se, rtol=0.15), (se, exact_se)


def test_same_key_same_fit(iov_fit):
    data, fit = iov_fit
    pop = nlp.populations.gaussian(model(), occasions=("b",))
    again = nlp.fit_map(pop, ExactPosterior(model()), data, jax.random.key(0), num_draws=200)
    assert again.params == fit.params


def test_occasions_are_refused_where_they_cannot_apply():
    data = _iov_data()
    pop = nlp.populations.gaussian(model(), occasions=("b",))
    plain = nlp.Dataset.from_arrays(TIMES, np.asarray(data.values))
    with pytest.raises(ValueError, match="occasion='OCC'"):
        nlp.fit_map(pop, ExactPosterior(model()), plain, jax.random.key(0))
    varying = data.with_covariates(WT=np.arange(S * K, dtype=float))
    with pytest.raises(ValueError, match="covariate 'WT' changes between the occasions of individual '0'"):
        nlp.fit_map(pop, ExactPosterior(model()), varying, jax.random.key(0))
    with pytest.raises(ValueError, match="not random-effect parameters"):
        nlp.populations.gaussian(model(), fixed=("b",), occasions=("b",))
    with pytest.raises(ValueError, match="not random-effect parameters"):
        nlp.populations.gaussian(model(), occasions=("c",))


def test_simulate_population_with_occasions_shares_the_parameters_without_iov():
    pop = nlp.populations.gaussian(model(), occasions=("b",))
    phi = np.asarray(nlp.simulate_population(pop, {k: v for k, v in TRUTH.items()}, jax.random.key(1), num_individuals=400, occasions=3))
    phi = phi.reshape(400, 3, 2)
    assert np.all(np.ptp(phi[:, :, 0], axis=1) == 0)  # a: shared by an individual's occasions
    within = phi[:, :, 1].std(axis=1, ddof=1)
    # the within-individual SD of b estimates sd_occ = 0.5: measured 0.50; tolerance 10%
    assert np.sqrt(np.mean(within**2)) == pytest.approx(0.5, rel=0.1)
    assert phi[:, 0, 0].std() == pytest.approx(0.8, rel=0.1)


PK_TRUTH = {"mean": {"ka": 0.4, "CL": 1.0, "V": 3.4, "sigma_add": -1.2}, "sd": {"ka": 0.3, "CL": 0.3, "V": 0.2}, "sd_occ": {"CL": 0.25}}


def pk_iov_study(n, k):
    """`pk_oral_1cmt` with IOV on CL: the population and `n` individuals × `k` occasions
    simulated at `PK_TRUTH` (ids `"i/o"`, rows of an individual adjacent)."""
    m = nlp.models.pk_oral_1cmt()
    pop = nlp.populations.gaussian(m, fixed=("sigma_add",), occasions=("CL",))
    phi = nlp.simulate_population(pop, PK_TRUTH, jax.random.key(1), num_individuals=n, occasions=k)
    data = nlp.simulate_data(m, phi, jax.random.key(2), ids=[f"{i + 1}/{o + 1}" for i in range(n) for o in range(k)])
    return pop, data


@pytest.mark.heavy
def test_pk_between_subject_and_between_occasion_sds_are_recovered():
    """Issue 17's target: a synthetic pk_oral_1cmt population with IOV on CL, fitted with the
    shipped estimator (refined: the model is tractable), recovers every SD within 20%."""
    truth = PK_TRUTH
    n, k = 150, 3
    pop, data = pk_iov_study(n, k)
    data = data.with_subjects([str(i) for i in range(n) for _ in range(k)])
    fit = nlp.fit_map(pop, nlp.pretrained("pk_oral_1cmt"), data, jax.random.key(3))
    print(fit.table()[["estimate", "se"]], f"Pareto k max {fit.importance.pareto_k.max():.2f}")
    for label, value in [(f"sd[{p}]", v) for p, v in truth["sd"].items()] + [("sd_occ[CL]", 0.25)]:
        # measured: see docs/guide/occasions.md; tolerance 20% (the target)
        assert fit.params[label] == pytest.approx(value, rel=0.2), (label, fit.params[label])
    for p, v in truth["mean"].items():
        assert fit.params[f"mean[{p}]"] == pytest.approx(v, abs=0.1)


def _exact_nuts(data, key):
    """Reference posterior: NumPyro NUTS on the closed-form IOV likelihood, same priors."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    X = design_matrix(TIMES)
    Xi, Z = np.tile(X, (K, 1)), np.kron(np.eye(K), TIMES[:, None])
    y = jnp.asarray(np.asarray(data.values).reshape(S, K * TIMES.size))

    def program():
        mean = numpyro.sample("mean", dist.Normal(0.0, S0).expand([2]).to_event(1))
        sd = numpyro.sample("sd", dist.HalfNormal(1.0).expand([2]).to_event(1))
        g = numpyro.sample("sd_occ", dist.HalfNormal(1.0).expand([1]).to_event(1))
        cov = Xi @ jnp.diag(sd**2) @ Xi.T + g[0] ** 2 * Z @ Z.T + SIGMA**2 * jnp.eye(K * TIMES.size)
        numpyro.sample("y", dist.MultivariateNormal(Xi @ mean, cov).expand([S]).to_event(1), obs=y)

    mcmc = MCMC(NUTS(program), num_warmup=500, num_samples=2000, progress_bar=False)
    mcmc.run(key)
    return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


@pytest.mark.heavy
def test_iov_nuts_matches_nuts_on_the_closed_form():
    """NUTS over the occasions' likelihood (about 0.1 s per gradient here: heavy) against NUTS on
    the closed-form likelihood."""
    data = _iov_data()
    pop = nlp.populations.gaussian(model(), occasions=("b",))
    tree = nlp.fit_nuts(pop, ExactPosterior(model()), data, jax.random.key(0), num_draws=100, num_chains=2, num_warmup=200,
                        num_samples=400, progress=False)
    ref = _exact_nuts(data, jax.random.key(1))
    post = tree["posterior"]
    assert post["mean"].shape == (2, 400, 2) and tree["log_likelihood"]["obs"].shape == (2, 400, S)
    for name in ("mean", "sd", "sd_occ"):
        got = np.asarray(post[name]).reshape(800, -1)
        print(name, got.mean(0), ref[name].mean(0), got.std(0), ref[name].std(0))
        # measured: posterior means within 0.03 reference SDs, posterior SDs within 8%; tolerances
        # 0.3 SD and 20% (800 draws, Monte Carlo error of both runs)
        np.testing.assert_array_less(np.abs(got.mean(0) - ref[name].mean(0)) / ref[name].std(0), 0.3)
        np.testing.assert_allclose(got.std(0), ref[name].std(0), rtol=0.2)
