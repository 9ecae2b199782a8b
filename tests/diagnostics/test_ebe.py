"""EBEs against the closed-form conditional posterior of the linear-Gaussian mixed model."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import nlme_ppl as nlp
from nlme_ppl.diagnostics import ebe
from tests import linear_gaussian as lg

MEAN, SD = np.array([1.1, -0.45]), np.array([0.7, 0.35])


def _setup(n=40):
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(0), n, np.array([1.0, -0.5]), np.array([0.8, 0.3]))
    fit = SimpleNamespace(population=nlp.populations.gaussian(model), site_values={"mean": jnp.array(MEAN), "sd": jnp.array(SD)},
                          refined=None, ids=data.ids)  # fmt: skip
    return model, data, fit


def conditional_posterior(data, mean, sd):
    """Closed form of p(phi | y_i) under the population N(mean, diag(sd²)): mean and SD `(N, 2)`."""
    x = lg.design_matrix(np.asarray(data.times))
    cov = np.linalg.inv(np.diag(sd**-2.0) + x.transpose(0, 2, 1) @ x / lg.SIGMA**2)
    m = np.einsum("nkl,nl->nk", cov, mean / sd**2 + np.einsum("ntk,nt->nk", x, np.asarray(data.values)) / lg.SIGMA**2)
    return m, np.sqrt(np.diagonal(cov, axis1=1, axis2=2))


def test_ebe_matches_the_closed_form_posterior_and_shrinkage():
    """M = 1,000 reweighted draws: means within 0.25 posterior SD (measured 0.10), SDs within 12%
    (measured 5%); the Newton mode equals the exact mean (Gaussian) to 1e-8 (measured 4e-16), and
    so does the eta-shrinkage to 1e-6 percent."""
    model, data, fit = _setup()
    r = ebe(fit, lg.ExactPosterior(model), data, jax.random.key(1), num_draws=1000)
    m, s = conditional_posterior(data, MEAN, SD)
    assert r.mean.shape == r.sd.shape == r.mode.shape == (40, 2) and r.mode_method == "newton"
    assert np.max(np.abs(r.mean - m) / s) < 0.25
    np.testing.assert_allclose(r.sd, s, rtol=0.12)
    np.testing.assert_allclose(r.mode, m, atol=1e-8)
    shrink = 100 * (1 - np.std(m - MEAN, axis=0, ddof=1) / SD)
    np.testing.assert_allclose([r.eta_shrinkage["a"], r.eta_shrinkage["b"]], shrink, atol=1e-6)
    assert shrink[1] > shrink[0] + 5  # the slope is the less informed: more shrinkage (8% vs 22%)
    assert np.all(r.pareto_k < 0.7)
    table = r.table()
    assert list(table.index) == list(data.ids) and {"mean[a]", "sd[b]", "mode[a]", "eta[b]", "pareto_k"} <= set(table.columns)


def test_ebe_of_a_generic_population_has_nan_shrinkage_with_a_reason():
    """A population program of its own (Student-t random effects): EBEs still come out (the mode
    against a direct optimisation of the closed-form target), the shrinkage is NaN with a reason."""
    model, data, _ = _setup(n=8)

    def population(data):
        loc = numpyro.sample("loc", dist.Normal(0, 3).expand([2]).to_event(1))
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("a", dist.StudentT(4.0, loc[0], 0.7))
            numpyro.sample("b", dist.StudentT(4.0, loc[1], 0.35))

    fit = SimpleNamespace(population=population, site_values={"loc": jnp.array(MEAN)}, refined=None, ids=data.ids)
    r = ebe(fit, lg.ExactPosterior(model), data, jax.random.key(2), num_draws=500)
    assert all(np.isnan(v) for v in r.eta_shrinkage.values()) and "Gaussian" in r.shrinkage_note
    assert r.population_mean is None and r.eta is None

    def target(phi, t, y):
        lp = dist.StudentT(4.0, MEAN, np.array([0.7, 0.35])).log_prob(phi).sum()
        return lp + dist.Normal(phi[0] + phi[1] * t, lg.SIGMA).log_prob(y).sum()

    grad = jax.vmap(jax.grad(target))(jnp.asarray(r.mode), data.times, data.values)
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)  # a stationary point of the exact target
    assert np.max(np.abs(r.mode - r.mean) / r.sd) < 0.5


def test_ebe_refuses_a_fit_of_other_data():
    model, data, fit = _setup(n=6)
    other = SimpleNamespace(**{**vars(fit), "ids": ("x",) * 6})
    with pytest.raises(ValueError, match="pass the data set that was fitted"):
        ebe(other, lg.ExactPosterior(model), data, jax.random.key(0))
