"""populations.gaussian: densities against scipy, priors, labels, bad options."""

import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.infer.util import log_density
from scipy import stats

import nlme_ppl as nlp
from tests import linear_gaussian as lg


@pytest.fixture
def data():
    return nlp.Dataset.from_arrays(lg.TIMES, np.zeros((4, lg.TIMES.size)))


def test_diag_density_matches_scipy(data):
    pop = nlp.populations.gaussian(lg.model())
    mean, sd = jnp.array([0.3, -0.2]), jnp.array([0.5, 0.8])
    phi = np.array([[0.1, 0.2, 0.3, 0.4], [-1.0, 0.0, 1.0, 2.0]])
    ld, _ = log_density(pop, (data,), {}, {"mean": mean, "sd": sd, "a": phi[0], "b": phi[1]})
    expected = (
        stats.norm(0, lg.S0).logpdf(mean).sum()
        + stats.halfnorm(scale=1.0).logpdf(sd).sum()
        + stats.norm(mean[0], sd[0]).logpdf(phi[0]).sum()
        + stats.norm(mean[1], sd[1]).logpdf(phi[1]).sum()
    )
    assert float(ld) == pytest.approx(expected, rel=1e-12)


def test_full_density_matches_scipy(data):
    pop = nlp.populations.gaussian(lg.model(), covariance="full", lkj_concentration=1.0)
    mean, sd, rho = jnp.array([0.3, -0.2]), jnp.array([0.5, 0.8]), 0.6
    chol = jnp.linalg.cholesky(jnp.array([[1.0, rho], [rho, 1.0]]))
    phi = np.array([[0.1, -1.0], [0.2, 0.0], [0.3, 1.0], [0.4, 2.0]])
    ld, tr = log_density(pop, (data,), {}, {"mean": mean, "sd": sd, "corr_chol": chol, "phi": phi})
    cov = np.diag(sd) @ np.array([[1, rho], [rho, 1]]) @ np.diag(sd)
    # LKJ(eta=1) over 2x2 correlations is uniform on rho in (-1, 1): Cholesky density is 1/2 * |d rho / d L21|
    lkj = float(tr["corr_chol"]["fn"].log_prob(chol))
    expected = (
        stats.norm(0, lg.S0).logpdf(mean).sum() + stats.halfnorm().logpdf(sd).sum() + lkj
        + stats.multivariate_normal(mean, cov).logpdf(phi).sum()
    )
    assert float(ld) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(tr["corr"]["value"], [[1, rho], [rho, 1]], atol=1e-12)


def test_fixed_parameter_is_a_point_mass(data):
    pop = nlp.populations.gaussian(lg.model(), fixed=("b",))
    assert pop.random == ("a",) and pop.coords == {"mean": ("a", "b"), "sd": ("a",)}
    ld, tr = log_density(pop, (data,), {}, {"mean": jnp.array([0.0, 1.5]), "sd": jnp.array([1.0]), "a": jnp.zeros(4)})
    np.testing.assert_allclose(tr["b"]["value"], 1.5 * np.ones(4))
    assert tr["b"]["is_observed"]  # no latent variable, no density contribution
    expected = stats.norm(0, lg.S0).logpdf([0.0, 1.5]).sum() + stats.halfnorm().logpdf(1.0) + stats.norm(0, 1).logpdf(np.zeros(4)).sum()
    assert float(ld) == pytest.approx(expected, rel=1e-12)


def test_priors_default_to_training_prior_and_can_be_overridden():
    pop = nlp.populations.gaussian(nlp.models.frohlich_simple(), mean_prior={"delta": (-1.0, 0.5)})
    assert pop.mean_loc == (-1.0, -3.0, 5.0, 0.0, 0.0, -1.0)
    assert pop.mean_scale[0] == 0.5 and pop.mean_scale[2] == pytest.approx(np.sqrt(11.0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(covariance="block"), r"`covariance` must be 'diag' or 'full'; got 'block'"),
        (dict(fixed=("offst",)), r"`fixed` names unknown parameter\(s\) \['offst'\]"),
        (dict(mean_prior={"x": (0, 1)}), r"`mean_prior` names unknown parameter 'x'"),
        (dict(mean_prior={"delta": (0, -1)}), r"`mean_prior\['delta'\]` scale must be positive"),
        (dict(sd_prior_scale=0.0), r"`sd_prior_scale` must be positive"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nlp.populations.gaussian(nlp.models.frohlich_simple(), **kwargs)


def test_init_values_label_exchangeable_draws_by_prior_means():
    """Exchangeable (delta, gamma) draws are symmetric; starts take the labelling the mean priors favour."""
    model = nlp.models.frohlich_simple()
    rng = np.random.default_rng(0)
    pair = np.stack([rng.normal(-0.4, 0.05, (30, 40)), rng.normal(-3.2, 0.05, (30, 40))], -1)
    swap = rng.random((30, 40)) < 0.5
    pair = np.where(swap[..., None], pair[..., ::-1], pair)  # random relabelling, as the estimator samples
    draws = np.concatenate([pair, np.zeros((30, 40, 4))], -1)
    init = nlp.populations.gaussian(model, mean_prior={"delta": (-1.0, 1.0), "gamma": (-3.0, 1.0)}).init_values(draws)
    np.testing.assert_allclose(init["mean"][:2], [-0.4, -3.2], atol=0.05)
    flipped = nlp.populations.gaussian(model, mean_prior={"delta": (-3.0, 1.0), "gamma": (-1.0, 1.0)}).init_values(draws)
    np.testing.assert_allclose(flipped["mean"][:2], [-3.2, -0.4], atol=0.05)


def test_covariate_effects_shift_each_individuals_mean():
    """mean_i[p] = mean[p] + Σ_c beta[p,c] x_ic, for random (diag and full) and fixed parameters."""
    x = np.array([-1.0, 0.0, 0.5, 2.0])
    g = np.array([0.0, 1.0, 1.0, 0.0])
    data = nlp.Dataset.from_arrays(lg.TIMES, np.zeros((4, lg.TIMES.size))).with_covariates(x=x, group=g)
    mean, sd, beta = jnp.array([0.3, -0.2]), jnp.array([0.5, 0.8]), jnp.array([0.7, -0.4, 1.1])
    loc = np.stack([0.3 + 0.7 * x - 0.4 * g, -0.2 + 1.1 * g], -1)
    phi = np.array([[0.1, 0.2, 0.3, 0.4], [-1.0, 0.0, 1.0, 2.0]])
    base = stats.norm(0, lg.S0).logpdf(mean).sum() + stats.halfnorm().logpdf(sd).sum() + stats.norm(0, 1).logpdf(beta).sum()

    pop = nlp.populations.gaussian(lg.model(), covariates={"a": ("x", "group"), "b": "group"})
    assert pop.effects == (("a", "x"), ("a", "group"), ("b", "group")) and pop.coords["beta"] == ("a,x", "a,group", "b,group")
    ld, _ = log_density(pop, (data,), {}, {"mean": mean, "sd": sd, "beta": beta, "a": phi[0], "b": phi[1]})
    expected = base + stats.norm(loc[:, 0], sd[0]).logpdf(phi[0]).sum() + stats.norm(loc[:, 1], sd[1]).logpdf(phi[1]).sum()
    assert float(ld) == pytest.approx(expected, rel=1e-12)

    full = nlp.populations.gaussian(lg.model(), covariance="full", covariates={"a": ("x", "group"), "b": "group"})
    chol = jnp.linalg.cholesky(jnp.array([[1.0, 0.3], [0.3, 1.0]]))
    ld, tr = log_density(full, (data,), {}, {"mean": mean, "sd": sd, "beta": beta, "corr_chol": chol, "phi": phi.T})
    cov = np.diag(sd) @ np.array([[1, 0.3], [0.3, 1]]) @ np.diag(sd)
    mvn = sum(stats.multivariate_normal(loc[i], cov).logpdf(phi.T[i]) for i in range(4))
    assert float(ld) == pytest.approx(base + float(tr["corr_chol"]["fn"].log_prob(chol)) + mvn, rel=1e-12)

    fixed = nlp.populations.gaussian(lg.model(), fixed=("b",), covariates={"b": "group"})
    _, tr = log_density(fixed, (data,), {}, {"mean": mean, "sd": sd[:1], "beta": beta[2:], "a": phi[0]})
    np.testing.assert_allclose(tr["b"]["value"], -0.2 + 1.1 * g, atol=1e-12)
    assert np.all(fixed.init_values(np.zeros((4, 3, 2)))["beta"] == 0)


def test_covariate_surrogate_fast_path_matches_generic():
    """With covariates the Gaussian fast path (sufficient statistics) equals log_prob at the draws."""
    rng = np.random.default_rng(1)
    data = nlp.Dataset.from_arrays(lg.TIMES, np.zeros((5, lg.TIMES.size))).with_covariates(x=rng.normal(size=5))
    draws = nlp.likelihood.draws_from_values(rng.normal(size=(5, 7, 2)), lg.model(), cross=True)
    params = {"mean": jnp.array([0.2, -0.1]), "sd": jnp.array([0.6, 1.3]), "beta": jnp.array([0.5, -0.8]),
              "corr_chol": jnp.linalg.cholesky(jnp.array([[1.0, -0.4], [-0.4, 1.0]]))}
    for cov in ("diag", "full"):
        pop = nlp.populations.gaussian(lg.model(), covariance=cov, covariates={"a": "x", "b": "x"})
        p = params if cov == "full" else {k: v for k, v in params.items() if k != "corr_chol"}
        lw = nlp.log_weights(pop, draws, p, data)
        loc = np.asarray(pop.individual_means(p["mean"], p["beta"], data))
        S = np.diag(p["sd"]) @ (np.array([[1, -0.4], [-0.4, 1]]) if cov == "full" else np.eye(2)) @ np.diag(p["sd"])
        phi = np.asarray(draws.values, np.float64)  # stored in float32; every density is taken in float64
        ref = np.stack([stats.multivariate_normal(loc[i], S).logpdf(phi[i]) for i in range(5)])
        ref = ref - np.asarray(lg.model().prior_log_prob(phi))
        np.testing.assert_allclose(lw, ref, rtol=1e-10, atol=1e-10)
        handler = nlp.likelihood._Surrogate(draws)
        with numpyro.handlers.seed(rng_seed=0), handler, numpyro.handlers.substitute(data=p):
            pop(data)
        assert handler.generic is None, "a Gaussian population with covariates should take the fast path"


@pytest.mark.parametrize(
    "kwargs, match, err",
    [
        (dict(covariates={"zz": "WT"}), r"`covariates` names unknown parameter 'zz'", ValueError),
        (dict(covariates={"a": ("WT", "WT")}), r"`covariates\['a'\]` lists 'WT' twice", ValueError),
        (dict(covariates={"a": (3,)}), r"must be covariate names", TypeError),
        (dict(covariates={"a": "WT"}, beta_prior_scale=-1.0), r"`beta_prior_scale` must be positive", ValueError),
    ],
)
def test_bad_covariate_options(kwargs, match, err):
    with pytest.raises(err, match=match):
        nlp.populations.gaussian(lg.model(), **kwargs)


def test_missing_covariate_names_it(data):
    pop = nlp.populations.gaussian(lg.model(), covariates={"a": "WT"})
    with pytest.raises(ValueError, match=r"covariate effects on \['WT'\] but the data has covariates \[\]"):
        log_density(pop, (data,), {}, {"mean": jnp.zeros(2), "sd": jnp.ones(2), "beta": jnp.zeros(1), "a": jnp.zeros(4), "b": jnp.zeros(4)})


@pytest.mark.heavy  # 78 s; the covariate forms' recovery with the shipped pk estimator (tests/test_covariate_forms.py) runs by default
def test_covariate_effects_are_recovered_by_map():
    """Synthetic cells of two experiments (γ differs by 1.6 on log scale) whose expression level
    also depends on a continuous covariate (slope 0.5): MAP with the shipped estimator recovers
    both effects (tolerance 0.15, about 3 standard errors at N = 300)."""
    import jax

    model = nlp.models.frohlich_simple()
    truth = nlp.demo.DEMO_TRUTH
    n = 300
    rng = np.random.default_rng(5)
    group, x = (np.arange(n) >= n // 2).astype(float), rng.normal(size=n)
    base = nlp.populations.gaussian(model, fixed=("offset", "sigma"))
    phi = np.array(nlp.simulate_population(base, truth, jax.random.key(11), num_individuals=n))
    phi[:, 1] += 1.6 * group
    phi[:, 2] += 0.5 * x
    data = nlp.simulate_data(model, jnp.asarray(phi), jax.random.key(12), covariates={"d2egfp": group, "x": x})
    pop = nlp.populations.gaussian(
        model, fixed=("offset", "sigma"), mean_prior=nlp.demo.DEMO_MEAN_PRIOR,
        covariates={"gamma": "d2egfp", "k_m0_scale": "x"},
    )
    fit = nlp.fit_map(pop, nlp.pretrained("frohlich_simple"), data, jax.random.key(13), num_starts=4, diagnose=False)
    assert fit.params["beta[gamma,d2egfp]"] == pytest.approx(1.6, abs=0.15)
    assert fit.params["beta[k_m0_scale,x]"] == pytest.approx(0.5, abs=0.15)
    assert fit.params["mean[gamma]"] == pytest.approx(truth["mean"]["gamma"], abs=0.15)
    assert fit.params["sd[k_m0_scale]"] == pytest.approx(truth["sd"]["k_m0_scale"], rel=0.25)
