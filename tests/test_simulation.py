"""Prior-predictive simulation: shapes, seeds, chunking, and dropping of non-finite draws."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

import nlme_ppl as nlp


def test_frohlich_simulation_shapes_and_prior():
    m = nlp.models.frohlich_simple()
    sims = nlp.simulate(m, jax.random.key(0), num_simulations=4000, chunk_size=1500, progress=False)
    assert sims.params.shape == (4000, 6) and sims.data.values.shape == (4000, 180)
    assert sims.num_dropped == 0
    # the parameters follow the training prior (KS test per parameter)
    for i, n in enumerate(m.param_names):
        p = stats.kstest(np.asarray(sims.params[:, i]), stats.norm(float(m.prior[n].loc), float(m.prior[n].scale)).cdf).pvalue
        assert p > 1e-3, n


def test_seeded_and_different_keys_differ():
    m = nlp.models.frohlich_simple()
    a = nlp.simulate(m, jax.random.key(1), num_simulations=300, chunk_size=300, progress=False)
    b = nlp.simulate(m, jax.random.key(1), num_simulations=300, chunk_size=300, progress=False)
    c = nlp.simulate(m, jax.random.key(2), num_simulations=300, chunk_size=300, progress=False)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.allclose(a.params, c.params)
    # no two simulations share a noise path
    assert len(np.unique(np.asarray(a.data.values[:, -1]))) == 300


@pytest.mark.parametrize("name", ["frohlich_simple", "pk_oral_1cmt"])
def test_simulations_do_not_depend_on_the_chunk_size(name):
    """The same key gives identical simulations (φ, designs, doses, noise) for every chunk size,
    one that divides `num_simulations`, one that does not, one smaller than a compiled block,
    and a shorter run gives the first simulations of a longer one."""
    m = nlp.models.get(name)
    key = jax.random.key(7)
    ref = nlp.simulate(m, key, num_simulations=200, chunk_size=200, progress=False)
    for n, chunk_size in ((200, 100), (200, 70), (200, 30), (130, 64)):
        sims = nlp.simulate(m, key, num_simulations=n, chunk_size=chunk_size, progress=False)
        first = ref[:n]
        np.testing.assert_array_equal(sims.params, first.params)
        for field in ("times", "values", "mask"):
            np.testing.assert_array_equal(getattr(sims.data, field), getattr(first.data, field))
        assert sims.data.ids == first.data.ids
        if m.uses_doses:
            np.testing.assert_array_equal(sims.data.doses.times, first.data.doses.times)
            np.testing.assert_array_equal(sims.data.doses.amounts, first.data.doses.amounts)


def _sometimes_nan(design, obs=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    mu = jnp.where(a > 2.0, jnp.nan, a) * jnp.ones_like(design["times"])
    numpyro.sample("obs", dist.Normal(mu, 0.1).to_event(1), obs=obs)


def test_non_finite_simulations_are_dropped_and_counted():
    m = nlp.models.IndividualModel(_sometimes_nan, {"times": np.arange(3.0)}, name="nan")
    sims = nlp.simulate(m, jax.random.key(0), num_simulations=20000, max_dropped_fraction=0.05, progress=False)
    expected = 20000 * stats.norm.sf(2.0)
    assert abs(sims.num_dropped - expected) < 4 * np.sqrt(expected)
    assert len(sims) == 20000 - sims.num_dropped and np.all(np.isfinite(sims.data.values))
    with pytest.raises(RuntimeError, match=r"were not finite, more than the allowed 1.0%"):
        nlp.simulate(m, jax.random.key(0), num_simulations=20000, progress=False)


def test_bad_arguments():
    m = nlp.models.frohlich_simple()
    with pytest.raises(ValueError, match="`num_simulations` must be a positive integer"):
        nlp.simulate(m, jax.random.key(0), num_simulations=0)
    with pytest.raises(TypeError, match="expected a JAX random key"):
        nlp.simulate(m, 0, num_simulations=10)


def _noise_like_design(design, obs=None):
    """One observation of pure noise, y ~ Normal(0, 1), whatever the parameter."""
    numpyro.sample("a", dist.Normal(0.0, 1.0))
    numpyro.sample("obs", dist.Normal(jnp.zeros(1), 1.0).to_event(1), obs=obs)


def _design_draw(key, num):
    """A design prior whose entry `z` is the standard normal draw that individual i's noise
    would be if the noise keys were the design keys (split(key, num)[i], as
    `numpyro.handlers.seed` passes it on to the one unconditioned site)."""
    z = jax.vmap(lambda k: jax.random.normal(jax.random.split(k)[1], (1,)))(jax.random.split(key, num))
    return {"times": jnp.zeros((num, 1)), "mask": jnp.ones((num, 1), bool), "z": z[:, 0]}


@pytest.mark.parametrize("n", [8, 2000])
def test_simulate_data_draws_designs_and_noise_from_different_keys(n):
    """With one key for both (the code before issue 14), the noise of individual i was an exact
    function of its design key: here it equalled the design draw `z` exactly (checked against
    that code), as with 8 individuals pk_design_prior's 8 keys were the 8 noise keys."""
    m = nlp.models.IndividualModel(_noise_like_design, {"times": jnp.zeros(1), "z": jnp.asarray(0.0)}, design_prior=_design_draw, name="noise")
    key = jax.random.key(3)
    data = nlp.simulate_data(m, np.zeros((n, 1)), key)
    y = np.asarray(data.values[:, 0])
    z = np.asarray(m.sample_designs(jax.random.split(key)[0], n)["z"])
    assert not np.any(np.isclose(y, z))
    if n > 100:  # independent: the correlation is within 4 standard errors of zero
        assert abs(np.corrcoef(y, z)[0, 1]) < 4 / np.sqrt(n)
    # the designs come from their own key: the same designs as sampled directly from it
    d = nlp.simulate_data(m, np.zeros((n, 1)), key, designs=m.sample_designs(jax.random.split(key)[0], n))
    np.testing.assert_array_equal(d.values, data.values)



def test_dataset_from_designs_keeps_rows_ids_and_covariates():
    m = nlp.models.sunitinib()  # doses, a simulator covariate (WT) and two analytes
    designs = m.sample_designs(jax.random.key(0), 5)
    values = np.arange(5.0 * designs["times"].shape[1]).reshape(5, -1)
    keep = np.array([True, False, True, True, False])
    d = nlp.simulation.dataset_from_designs(m, designs, values, keep=keep, covariates={"AGE": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert d.ids == ("0", "2", "3") and d.num_individuals == 3
    mask = np.asarray(designs["mask"])[keep]
    np.testing.assert_array_equal(d.mask, mask)
    np.testing.assert_array_equal(d.values, np.where(mask, values[keep], 0.0))
    np.testing.assert_array_equal(d.covariates["WT"], np.asarray(designs["WT"])[keep])
    np.testing.assert_array_equal(d.covariates["AGE"], [1.0, 3.0, 4.0])
    np.testing.assert_array_equal(d.doses.amounts, np.where(np.asarray(designs["dose_mask"]), designs["dose_amounts"], 0.0)[keep])
    np.testing.assert_array_equal(d.obs_cmt, np.where(mask, np.asarray(designs["obs_cmt"])[keep], 0))
    named = nlp.simulation.dataset_from_designs(m, designs, values, ids=list("abcde"), keep=keep)
    assert named.ids == ("a", "c", "d")
    with pytest.raises(ValueError, match=r"covariate 'AGE' is not finite for individual '1' \(row 1\)"):
        nlp.simulation.dataset_from_designs(m, designs, values, covariates={"AGE": [1.0, np.nan, 3.0, 4.0, 5.0]})


def test_simulate_population_draws_from_the_population_program():
    m = nlp.models.pk_oral_1cmt()
    pop = nlp.populations.gaussian(m, fixed=("sigma_add",))
    truth = {"mean": {p: float(m.prior[p].loc) for p in m.param_names}, "sd": {"ka": 0.2, "CL": 0.3, "V": 0.4}}
    n = 4000
    phi = np.asarray(nlp.simulate_population(pop, truth, jax.random.key(0), num_individuals=n))
    assert phi.shape == (n, m.num_params)
    mean = np.array([truth["mean"][p] for p in m.param_names])
    sd = np.array([truth["sd"].get(p, 0.0) for p in m.param_names])
    np.testing.assert_allclose(phi.mean(0), mean, atol=4 * sd.max() / np.sqrt(n) + 1e-12)
    np.testing.assert_allclose(phi.std(0), sd, rtol=4 / np.sqrt(2 * n))
    # arrays in site order give the same draws as the labelled mapping; the key decides them
    arrays = {"mean": mean, "sd": np.array([0.2, 0.3, 0.4])}
    np.testing.assert_array_equal(nlp.simulate_population(pop, arrays, jax.random.key(0), num_individuals=n), phi)
    assert not np.allclose(nlp.simulate_population(pop, arrays, jax.random.key(1), num_individuals=n), phi)


def test_simulate_population_full_covariance_and_covariate_effects():
    m = nlp.models.pk_oral_1cmt()
    full = nlp.populations.gaussian(m, covariance="full", fixed=("sigma_add",))
    corr = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 1.0]])
    params = {"mean": np.zeros(4), "sd": np.array([0.5, 0.5, 0.5]), "corr_chol": np.linalg.cholesky(corr)}
    phi = np.asarray(nlp.simulate_population(full, params, jax.random.key(2), num_individuals=4000))
    assert abs(np.corrcoef(phi[:, 0], phi[:, 1])[0, 1] - 0.6) < 0.05  # SE of r here ~0.01
    np.testing.assert_array_equal(phi[:, 3], 0.0)  # no random effect
    cov = nlp.populations.gaussian(m, fixed=("sigma_add",), covariates={"CL": "x"})
    x = np.linspace(-1.0, 1.0, 50)
    params = {"mean": np.zeros(4), "sd": np.full(3, 1e-6), "beta": np.array([2.0])}
    phi = np.asarray(nlp.simulate_population(cov, params, jax.random.key(3), num_individuals=50, covariates={"x": x}))
    np.testing.assert_allclose(phi[:, m.param_names.index("CL")], 2.0 * x, atol=1e-4)


def test_simulate_population_refuses():
    m = nlp.models.pk_oral_1cmt()
    pop = nlp.populations.gaussian(m)
    with pytest.raises(ValueError, match=r"`params\['sd'\]` lacks \['V', 'sigma_add'\]"):
        nlp.simulate_population(pop, {"mean": np.zeros(4), "sd": {"ka": 1.0, "CL": 1.0}}, jax.random.key(0), num_individuals=3)
    with pytest.raises(ValueError, match="`num_individuals` must be a positive integer"):
        nlp.simulate_population(pop, {"mean": np.zeros(4), "sd": np.ones(4)}, jax.random.key(0), num_individuals=0)

    def only_ka(data):
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("ka", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"declares no site for individual parameter\(s\) \['CL'\]"):
        nlp.simulate_population(only_ka, {}, jax.random.key(0), num_individuals=3, param_names=("ka", "CL"))
    with pytest.raises(TypeError, match="pass `param_names=`"):
        nlp.simulate_population(only_ka, {}, jax.random.key(0), num_individuals=3)
