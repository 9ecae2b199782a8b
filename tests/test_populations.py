"""populations.gaussian: densities against scipy, priors, labels, bad options."""

import jax.numpy as jnp
import numpy as np
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
