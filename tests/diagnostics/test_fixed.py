"""The weak-fixed-parameter check of fit_map and fit_nuts, on the closed-form linear-Gaussian model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlme_ppl as nlp
from tests import linear_gaussian as lg


class PriorForB(lg.ExactPosterior):
    """The exact posterior of a, and the training prior N(0, S0²) for b: an estimator that learnt nothing about b."""

    def sample(self, data, key, *, num_draws):
        k1, k2 = jax.random.split(key)
        exact = super().sample(data, k1, num_draws=num_draws)
        return exact.at[..., 1].set(lg.S0 * jax.random.normal(k2, exact.shape[:2]))


@pytest.fixture(scope="module")
def problem():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(3), 80, np.array([0.5, -1.0]), np.array([0.4, 0.0]))
    return model, data, nlp.populations.gaussian(model, fixed=("b",))


def test_informative_fixed_parameter_is_not_flagged(problem, recwarn):
    model, data, pop = problem
    fit = nlp.fit_map(pop, lg.ExactPosterior(model), data, jax.random.key(0), num_draws=400, num_starts=2)
    # the exact posterior SD of b is SIGMA / sqrt(Σt² + SIGMA²/S0²) for every individual
    expected = lg.SIGMA / np.sqrt(np.sum(lg.TIMES**2) + lg.SIGMA**2 / lg.S0**2) / lg.S0
    assert list(fit.fixed_widths) == ["b"]
    assert fit.fixed_widths["b"] == pytest.approx(expected, rel=0.05)  # 400 draws: SD to about 4 %
    assert fit.diagnostics_summary()["fixed_posterior_over_prior_sd"] == fit.fixed_widths
    assert not [w for w in recwarn if "barely narrow" in str(w.message)]


def test_uninformed_fixed_parameter_warns(problem):
    model, data, pop = problem
    with pytest.warns(nlp.diagnostics.SurrogateWarning, match=r"'b' \(posterior SD 1\.0\d of the prior's"):
        fit = nlp.fit_map(pop, PriorForB(model), data, jax.random.key(0), num_draws=400, num_starts=2)
    assert fit.fixed_widths["b"] == pytest.approx(1.0, abs=0.05)


def test_no_fixed_parameter_no_entry(problem):
    model, data, _ = problem
    fit = nlp.fit_map(nlp.populations.gaussian(model), lg.ExactPosterior(model), data, jax.random.key(0), num_draws=200, num_starts=2)
    assert fit.fixed_widths == {} and "fixed_posterior_over_prior_sd" not in fit.diagnostics_summary()


def test_nuts_records_the_ratio(problem, tmp_path):
    model, data, pop = problem
    with pytest.warns(nlp.diagnostics.SurrogateWarning, match="barely narrow the training prior"):
        tree = nlp.fit_nuts(pop, PriorForB(model), data, jax.random.key(1), num_draws=200, num_warmup=50, num_samples=50,
                            num_chains=1, progress=False)
    assert tree["surrogate_diagnostics"].attrs["fixed_posterior_over_prior_sd_b"] == pytest.approx(1.0, abs=0.05)
    assert jnp.isfinite(tree.posterior["mean"].values).all()
    tree.to_netcdf(tmp_path / "posterior.nc")  # the attribute's name and value are netCDF-safe
