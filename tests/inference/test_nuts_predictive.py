"""fit_nuts's posterior predictive: the DataTree groups ArviZ's predictive checks read, checked
against data simulated from a known truth."""

import arviz as az
import jax
import matplotlib
import numpy as np
import pytest

import nlme_ppl as nlp

matplotlib.use("Agg")

# A Theophylline-like population (log ka, log CL, log V; additive error SD exp(-0.7) = 0.5).
TRUE_MEAN = np.array([0.45, 1.0, 3.45])
TRUE_SD = np.array([0.3, 0.25, 0.15])
TRUE_LOG_SIGMA = -0.7


@pytest.fixture(scope="module")
def fitted():
    model = nlp.models.pk_oral_1cmt()
    theo = nlp.read_nonmem("examples/data/theophylline.csv")
    k_phi, k_data, k_fit = jax.random.split(jax.random.key(11), 3)
    n = theo.num_individuals
    eta = np.asarray(jax.random.normal(k_phi, (n, 3)))
    phi = np.column_stack([TRUE_MEAN + TRUE_SD * eta, np.full(n, TRUE_LOG_SIGMA)])
    data = nlp.simulate_data(model, phi, k_data, designs=model.designs_from_data(theo))
    pop = nlp.populations.gaussian(model, fixed=("sigma_add",))
    idata = nlp.fit_nuts(pop, nlp.pretrained("pk_oral_1cmt"), data, k_fit, num_draws=100, num_chains=1, num_warmup=50,
                         num_samples=60, progress=False, log_likelihood="observation", refine=False, max_draws=100)  # fmt: skip
    return model, data, phi, idata


def test_groups_match_observed_data(fitted):
    _, data, _, idata = fitted
    pp, obs = idata.posterior_predictive["obs"], idata.observed_data["obs"]
    assert pp.dims == ("chain", "draw", "individual", "obs_index")
    assert pp.shape == (1, 60, data.num_individuals, obs.shape[1])
    assert list(pp.coords["individual"].values) == list(obs.coords["individual"].values)
    assert np.array_equal(np.isnan(pp.values[0, 0]), np.isnan(obs.values))  # NaN exactly where unobserved
    # log_likelihood='observation': per-observation terms under 'obs', the surrogate's per individual kept aside
    assert idata.log_likelihood["obs"].dims == pp.dims
    assert idata.log_likelihood_individual["obs"].dims == ("chain", "draw", "individual")
    assert idata.posterior.attrs["posterior_predictive_seconds"] > 0


def test_arviz_predictive_checks_run(fitted):
    idata = fitted[3]
    az.plot_ppc_dist(idata)
    az.plot_loo_pit(idata)
    pit = az.loo_pit(idata)["obs"].values
    assert pit.shape == idata.observed_data["obs"].shape and np.all((pit >= 0) & (pit <= 1))
    # A well-specified model: the LOO-PIT values are roughly uniform (mean 0.5, SD 1/sqrt(12) = 0.29).
    assert abs(pit.mean() - 0.5) < 0.08 and 0.2 < pit.std() < 0.36
    matplotlib.pyplot.close("all")


def test_predictive_agrees_with_the_truth(fitted):
    # Reference: the data distribution given the true individual parameters, N(f(phi_i), sigma).
    # The posterior predictive given y_i has mean E[f(phi) | y] and SD sqrt(sigma^2 + Var[f(phi) | y]):
    # its mean must sit within a posterior-predictive SD of f(phi_true) (median 0.5 SD), and its SD be
    # at least about sigma and not far above it (the data pin f well: median ratio in [0.8, 1.6]).
    model, data, phi, idata = fitted
    designs = model.designs_from_data(data)
    f_true, sd_true = jax.vmap(model.observation_moments)(jax.numpy.asarray(phi), designs)
    mask = np.asarray(data.mask)
    pp = idata.posterior_predictive["obs"].values.reshape(-1, *mask.shape)
    mean, sd = pp.mean(0)[mask], pp.std(0)[mask]
    z = np.abs(mean - np.asarray(f_true)[mask]) / sd
    ratio = sd / np.asarray(sd_true)[mask]
    assert np.median(z) < 0.5 and np.quantile(z, 0.9) < 1.5
    assert 0.8 < np.median(ratio) < 1.6
    # And the replicates cover the observed data as the reference does: ~95% within 2 predictive SD.
    inside = np.abs(np.asarray(data.values)[mask] - mean) < 2 * sd
    assert inside.mean() > 0.85


def test_options(fitted):
    model, data, _, _ = fitted
    pop = nlp.populations.gaussian(model, fixed=("sigma_add",))
    with pytest.raises(ValueError, match="log_likelihood"):
        nlp.fit_nuts(pop, nlp.pretrained("pk_oral_1cmt"), data, jax.random.key(0), log_likelihood="pointwise")
    with pytest.raises(ValueError, match="posterior_predictive=True"):
        nlp.fit_nuts(pop, nlp.pretrained("pk_oral_1cmt"), data, jax.random.key(0), posterior_predictive=False,
                     log_likelihood="observation")  # fmt: skip
