"""`fit_vae`, the NN-NLME engine, against closed forms: on the linear-Gaussian mixed model the
exact posterior of each individual is Gaussian (diagonal, the times are centred), so a Gaussian
q can be exact, the ELBO's optimum is the MLE and the importance-sampled log-likelihood its
maximum; the Fisher SEs are compared with the closed-form observed information. Also: the
encoder ignores padding, the identifiability report flags a product-only model, the same key
gives the same fit, full covariance and covariates run, and bad arguments are refused with a
message naming the remedy."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import nlme_ppl as nlp
from nlme_ppl.inference._vae_model import build_encoder, encoder_inputs
from tests import linear_gaussian as lg

MEAN, SD = np.array([1.0, -0.5]), np.array([0.8, 0.6])


@pytest.fixture(scope="module")
def lg_data():
    data, _ = lg.simulate_population(jax.random.key(0), 200, MEAN, SD)
    return data


@pytest.fixture(scope="module")
def lg_fit(lg_data):
    model = lg.model()
    return nlp.fit_vae(nlp.populations.gaussian(model), model, lg_data, jax.random.key(1), num_starts=2, num_steps=1000)


def closed_form_stderr(data, mean, sd):
    """SEs of (mean[a], mean[b], sd[a], sd[b]) from the Hessian of the exact log-likelihood:
    the OLS estimates are sufficient, b_ij ~ N(mean_j, sd_j² + σ²/(XᵀX)_jj) independently."""
    X = lg.design_matrix(lg.TIMES)
    noise = lg.SIGMA**2 / np.diag(X.T @ X)
    b = jnp.asarray(lg.ols(data))

    def loglik(p):
        var = p[2:] ** 2 + noise
        return jnp.sum(-0.5 * (b - p[:2]) ** 2 / var - 0.5 * jnp.log(2 * jnp.pi * var))

    hess = jax.hessian(loglik)(jnp.concatenate([jnp.asarray(mean), jnp.asarray(sd)]))
    return np.sqrt(np.diag(np.linalg.inv(-np.asarray(hess))))


def test_elbo_optimum_is_the_closed_form_mle(lg_fit, lg_data):
    mean, sd, _ = lg.closed_form_mle(lg_data)
    est = lg_fit.params
    # measured: |error| <= 0.0005 on every parameter (MLE SEs 0.03-0.06); tolerance 0.01, ~20x margin
    np.testing.assert_allclose([est["mean[a]"], est["mean[b]"]], mean, atol=0.01)
    np.testing.assert_allclose([est["sd[a]"], est["sd[b]"]], sd, atol=0.01)
    # the importance-sampled log-likelihood at the estimate is the exact maximum (measured +0.19, MC SE 0.17)
    exact = lg.log_marginal(lg_data, mean, np.diag(sd**2))
    assert abs(lg_fit.loglik - exact) < 0.6 and lg_fit.absolute.loglik_mc_se < 0.3
    assert lg_fit.ofv == -2 * lg_fit.loglik and lg_fit.aic == lg_fit.ofv + 8
    # the ELBO is a lower bound: its last steps lie below the log-likelihood
    assert np.mean(lg_fit.elbo_history[lg_fit.best, -100:]) < lg_fit.loglik


def test_fisher_stderr_match_closed_form(lg_fit, lg_data):
    mean, sd, _ = lg.closed_form_mle(lg_data)
    ref = closed_form_stderr(lg_data, mean, sd)
    got = np.array([lg_fit.stderr[k] for k in ("mean[a]", "mean[b]", "sd[a]", "sd[b]")])
    # the target: within 10% (measured within 1%)
    np.testing.assert_allclose(got, ref, rtol=0.10)
    assert set(lg_fit.robust_stderr) == set(lg_fit.params)


def test_result_outputs(lg_fit, lg_data, tmp_path):
    table = lg_fit.table()
    assert {"estimate", "se", "value", "cv_percent"} <= set(table.columns)
    ebe = lg_fit.ebe()
    assert list(ebe.index) == list(lg_data.ids) and {"a", "b", "sd[a]", "sd[b]"} <= set(ebe.columns)
    # the encoder means are the exact posterior means under the fitted population (within their SDs)
    mean, sd, _ = lg.closed_form_mle(lg_data)
    X = lg.design_matrix(lg.TIMES)
    prec = 1 / sd**2 + np.diag(X.T @ X) / lg.SIGMA**2
    exact = (mean / sd**2 + (np.asarray(lg_data.values) @ X) / lg.SIGMA**2) / prec
    assert np.max(np.abs(ebe[["a", "b"]].to_numpy() - exact) / np.sqrt(1 / prec)) < 0.5
    np.testing.assert_allclose(ebe[["sd[a]", "sd[b]"]].to_numpy().mean(0), np.sqrt(1 / prec), rtol=0.1)
    assert lg_fit.elbo_history.shape == (2, 1000) and len(lg_fit.starts_table()) == 2
    lg_fit.plot_elbo(tmp_path / "elbo.png")
    assert (tmp_path / "elbo.png").stat().st_size > 1000
    tree = lg_fit.to_arviz(lg_data)
    assert "obs" in tree["log_likelihood"] and tree["posterior"]["mean"].shape == (1, 1, 2)


@pytest.mark.parametrize("kind", ["gru", "deepset"])
def test_encoder_ignores_padding(kind, lg_data):
    model = lg.model()
    enc = build_encoder(model, lg_data, jax.random.key(3), latent_dim=2, kind=kind)
    enc = eqx.tree_at(lambda e: e.head.weight, enc, jax.random.normal(jax.random.key(4), enc.head.weight.shape, jnp.float32))
    t, y, m = encoder_inputs(model, lg_data.subset(np.arange(5)))
    ref = jax.vmap(enc)(t, y, m)
    # padding at the end and in the middle, with garbage values
    pad = lambda a, v: np.concatenate([a[:, :3], np.full((5, 2), v, a.dtype), a[:, 3:], np.full((5, 3), v, a.dtype)], 1)
    got = jax.vmap(enc)(pad(t, 7.0), pad(y, -1e3), pad(m, False))
    for r, g in zip(ref, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-6, atol=1e-6)


def _product_program(design, obs=None):
    la = numpyro.sample("log_a", dist.Normal(1.0, 1.0))
    lb = numpyro.sample("log_b", dist.Normal(1.0, 1.0))
    lk = numpyro.sample("log_k", dist.Normal(-1.0, 1.0))
    ls = numpyro.sample("sigma", dist.Normal(-2.0, 1.0))
    mu = jnp.exp(la + lb - jnp.exp(lk) * design["times"])
    numpyro.sample("obs", dist.Normal(mu, jnp.exp(ls)).mask(design["mask"]).to_event(1), obs=obs)


def test_identifiability_report_flags_a_product():
    """a and b enter only as a·b: the starts reach the same likelihood at different (a, b), and
    the information is singular along log a − log b; the identified parameters are not flagged."""
    model = nlp.IndividualModel(_product_program, {"times": np.linspace(0.5, 10.0, 8)}, name="product")
    pop = nlp.populations.gaussian(model, fixed=("log_a", "log_b", "sigma"))
    truth = {"mean": {"log_a": 1.0, "log_b": 1.0, "log_k": -1.0, "sigma": -1.5}, "sd": {"log_k": 0.3}}
    data = nlp.simulate_data(model, nlp.simulate_population(pop, truth, jax.random.key(0), num_individuals=40), jax.random.key(1))
    fit = nlp.fit_vae(pop, model, data, jax.random.key(2), num_starts=4, num_steps=1500, num_is_draws=300)
    report = fit.identifiability_table()
    # measured: the 4 starts within 0.06 of the best log-likelihood, (a, b) ranges 0.44, the others' ranges <= 0.17 SE
    assert set(report.index[report["flag"]]) == {"mean[log_a]", "mean[log_b]"}
    assert report.loc["mean[log_a]", "equivalent_starts"] == 4 and report.loc["mean[log_a]", "start_max"] - report.loc["mean[log_a]", "start_min"] > 0.1
    assert np.isfinite(fit.stderr["mean[log_k]"]) and not np.isfinite(fit.stderr["mean[log_a]"])
    a_plus_b = fit.start_params["mean[log_a]"] + fit.start_params["mean[log_b]"]
    assert np.ptp(a_plus_b) < 0.02  # the product is identified


def test_same_key_same_fit_and_full_covariance_with_covariates(lg_data):
    model = lg.model()
    x = np.linspace(-1.0, 1.0, lg_data.num_individuals)
    data = lg_data.with_covariates(x=x)
    pop = nlp.populations.gaussian(model, covariance="full", covariates={"a": "x"})
    kw = dict(num_starts=2, num_steps=60, local_steps=20, num_is_draws=50)
    f1 = nlp.fit_vae(pop, model, data, jax.random.key(5), **kw)
    f2 = nlp.fit_vae(pop, model, data, jax.random.key(5), **kw)
    assert f1.params == f2.params and np.array_equal(f1.elbo_history, f2.elbo_history) and f1.loglik == f2.loglik
    # the semi-amortized phase: per-individual offsets of q after the encoder's steps
    assert f1.elbo_history.shape == (2, 80) and f1.local[0].shape == (data.num_individuals, 2)
    assert {"corr[a,b]", "beta[a,x]", "sd[a]"} <= set(f1.params) and np.isfinite(f1.loglik)
    assert "corr" in f1.to_arviz(data)["posterior"]


def test_fixed_effects_only_and_bad_arguments_are_refused(lg_data):
    model = lg.model()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="no random effect"):
        nlp.fit_vae(nlp.populations.gaussian(model, fixed=("a", "b")), model, lg_data, key)
    with pytest.raises(ValueError, match="num_steps"):
        nlp.fit_vae(nlp.populations.gaussian(model), model, lg_data, key, num_steps=0)
    with pytest.raises(ValueError, match="encoder"):
        nlp.fit_vae(nlp.populations.gaussian(model), model, lg_data, key, encoder="conv", num_steps=1)
    with pytest.raises(TypeError, match="random key"):
        nlp.fit_vae(nlp.populations.gaussian(model), model, lg_data, 0)
    with pytest.raises(TypeError, match="IndividualModel"):
        nlp.fit_vae(nlp.populations.gaussian(model), "model", lg_data, key)
