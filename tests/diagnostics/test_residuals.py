"""Residuals: CWRES against the closed form of the linear-Gaussian model (where FOCE is exact),
NPDE ~ N(0, 1) under the true population and not under a wrong one, censoring, and the SDE."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

import nlme_ppl as nlp
from nlme_ppl.diagnostics import epsilon_shrinkage, residuals
from tests import linear_gaussian as lg

MEAN, SD = np.array([1.0, -0.5]), np.array([0.8, 0.3])


def _fit(population, data, sd):
    return SimpleNamespace(population=population, site_values={"mean": jnp.array(MEAN), "sd": jnp.array(sd)}, refined=None, ids=data.ids)


@pytest.fixture(scope="module")
def linear():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(0), 100, MEAN, SD)
    return model, data, nlp.populations.gaussian(model)


def test_residuals_of_the_true_population(linear):
    """800 observations: NPDE mean within 0.1 and SD within 0.1 of N(0, 1), KS p > 0.05 (measured
    -0.005, 1.007, p = 0.68); CWRES equal the closed form L⁻¹(y − Xμ), XΩXᵀ + σ²I = LLᵀ, to 1e-10
    (linearisation is exact here); PRED = Xμ, IPRED = X·E[φ | y]."""
    model, data, pop = linear
    df = residuals(_fit(pop, data, SD), lg.ExactPosterior(model), data, jax.random.key(1), num_simulations=500)
    assert list(df.columns) == ["ID", "TIME", "DV", "CENS", "PRED", "IPRED", "IWRES", "NPDE", "CWRES"] and len(df) == 800
    assert abs(df.NPDE.mean()) < 0.1 and abs(df.NPDE.std() - 1) < 0.1 and stats.kstest(df.NPDE, "norm").pvalue > 0.05
    x = lg.design_matrix(lg.TIMES)
    chol = np.linalg.cholesky(x @ np.diag(SD**2) @ x.T + lg.SIGMA**2 * np.eye(8))
    cwres = np.linalg.solve(chol, (np.asarray(data.values) - x @ MEAN).T).T.ravel()
    np.testing.assert_allclose(df.CWRES, cwres, atol=1e-10)
    np.testing.assert_allclose(df.PRED, np.tile(x @ MEAN, 100), atol=1e-12)
    np.testing.assert_allclose(df.IWRES, (df.DV - df.IPRED) / lg.SIGMA, atol=1e-12)
    assert df.attrs["epsilon_shrinkage"] == pytest.approx(100 * (1 - np.std(df.IWRES, ddof=1)))
    assert 0 < epsilon_shrinkage(df) < 25  # 8 observations for 2 parameters: some (measured 9.8%)


def test_npde_flags_a_wrong_population(linear):
    """The same data judged under random effects 3x too narrow: NPDE SD > 1.2 (measured 1.31) and KS p < 1e-3."""
    model, data, pop = linear
    df = residuals(_fit(pop, data, SD / 3), lg.ExactPosterior(model), data, jax.random.key(1), num_simulations=500)
    assert df.NPDE.std() > 1.2 and stats.kstest(df.NPDE, "norm").pvalue < 1e-3


def censored_program(design, obs=None):
    a = numpyro.sample("a", dist.Normal(0.0, lg.S0))
    b = numpyro.sample("b", dist.Normal(0.0, lg.S0))
    noise = nlp.models.LeftCensored(dist.Normal(a + b * design["times"], lg.SIGMA), design["lloq"])
    numpyro.sample("obs", noise.mask(design["mask"]).to_event(1), obs=obs)


def test_npde_with_censored_observations():
    """About a third of the observations below the limit 0.5: with pd drawn uniformly under
    P(y ≤ LLOQ) and imputation (Nguyen et al. 2012, done sequentially in the decorrelated
    coordinates), the NPDE stay N(0, 1): mean within 0.1, SD within 0.1 on 960 observations
    (the paper's marginal imputation gave SD 1.12 here); censored rows have no IWRES or CWRES."""
    model = nlp.models.IndividualModel(censored_program, {"times": lg.TIMES, "lloq": np.full(8, -np.inf)}, name="lin_cens")
    pop = nlp.populations.gaussian(model)
    phi = nlp.simulate_population(pop, {"mean": MEAN, "sd": SD}, jax.random.key(3), num_individuals=120)
    designs = {"times": np.tile(lg.TIMES, (120, 1)), "mask": np.ones((120, 8), bool), "lloq": np.full((120, 8), 0.5)}
    data = nlp.simulate_data(model, phi, jax.random.key(4), designs=designs)
    assert 0.2 < float(np.mean(data.censored)) < 0.5
    df = residuals(_fit(pop, data, SD), lg.ExactPosterior(model), data, jax.random.key(5), num_simulations=400)
    cens = df.CENS == 1
    assert df.IWRES[cens].isna().all() and df.CWRES[cens].isna().all() and df.CWRES[~cens].notna().all()
    assert abs(df.NPDE.mean()) < 0.1 and abs(df.NPDE.std() - 1) < 0.1


@pytest.mark.heavy  # 31 s here: the SDE is compiled for the simulations and for the path moments
def test_residuals_of_the_sde_model_by_simulation():
    """frohlich_sde (no tractable likelihood): NPDE by simulation only, finite; CWRES NaN with the reason."""
    model = nlp.models.frohlich_sde()
    names = model.param_names
    pop = nlp.populations.gaussian(model, fixed=("sigma",))
    mean = jnp.array([-1.0, -1.5, 0.5, 4.0, -1.0, 0.5, 1.0, -2.0])
    sd = jnp.full(7, 0.2)
    phi = nlp.simulate_population(pop, {"mean": mean, "sd": sd}, jax.random.key(0), num_individuals=4)
    times = np.tile(np.linspace(1.0, 20.0, 10), (4, 1))
    data = nlp.simulate_data(model, phi, jax.random.key(1), designs={"times": times, "mask": np.ones((4, 10), bool)})

    class Prior:  # an "estimator" that returns the training prior: enough to run the pipeline
        def __init__(self):
            self.model = model

        def sample(self, data, key, *, num_draws):
            return model.prior_sample(key, (data.num_individuals, num_draws))

        def log_prob(self, data, params):
            return model.prior_log_prob(params)

    fit = SimpleNamespace(population=pop, site_values={"mean": mean, "sd": sd}, refined=None, ids=data.ids)
    df = residuals(fit, Prior(), data, jax.random.key(2), num_simulations=100)
    assert len(df) == 40 and np.isfinite(df.NPDE).all() and np.isfinite(df.PRED).all()
    assert df.CWRES.isna().all() and "tractable" in df.attrs["cwres"]
    assert names[-1] == "sigma"


def test_residuals_refuse_too_few_simulations(linear):
    model, data, pop = linear
    with pytest.raises(ValueError, match="must exceed the most observations"):
        residuals(_fit(pop, data, SD), lg.ExactPosterior(model), data, jax.random.key(1), num_simulations=8)
