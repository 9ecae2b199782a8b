"""IndividualModel: tracing, refusal of malformed programs, prior density against scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

import nlme_ppl as nlp

DESIGN = {"times": np.linspace(0, 1, 5)}


def good(design, obs=None):
    a = numpyro.sample("a", dist.Normal(1.0, 2.0))
    b = numpyro.sample("b", dist.Normal(-1.0, 0.5))
    numpyro.sample("obs", dist.Normal(a + b * design["times"], 0.1).to_event(1), obs=obs)


def test_traces_sites_and_prior():
    m = nlp.models.IndividualModel(good, DESIGN, name="good")
    assert m.param_names == ("a", "b")
    phi = jnp.array([[0.3, -0.2], [2.0, 1.0]])
    expected = stats.norm(1, 2).logpdf(phi[:, 0]) + stats.norm(-1, 0.5).logpdf(phi[:, 1])
    np.testing.assert_allclose(m.prior_log_prob(phi), expected, rtol=1e-12)
    assert m.prior_sample(jax.random.key(0), (3,)).shape == (3, 2)
    assert m.fingerprint() == nlp.models.IndividualModel(good, DESIGN, name="good").fingerprint()


def test_fingerprint_changes_with_prior():
    def other(design, obs=None):
        a = numpyro.sample("a", dist.Normal(1.0, 3.0))
        b = numpyro.sample("b", dist.Normal(-1.0, 0.5))
        numpyro.sample("obs", dist.Normal(a + b * design["times"], 0.1).to_event(1), obs=obs)

    assert nlp.models.IndividualModel(other, DESIGN, name="good").fingerprint() != nlp.models.IndividualModel(good, DESIGN, name="good").fingerprint()


def no_latent(design, obs=None):
    numpyro.sample("obs", dist.Normal(jnp.zeros(5), 1.0).to_event(1), obs=obs)


def no_obs(design, obs=None):
    numpyro.sample("a", dist.Normal(0.0, 1.0))


def positive(design, obs=None):
    k = numpyro.sample("k", dist.LogNormal(0.0, 1.0))
    numpyro.sample("obs", dist.Normal(k * design["times"], 1.0).to_event(1), obs=obs)


def vector(design, obs=None):
    a = numpyro.sample("a", dist.Normal(jnp.zeros(2), 1.0))
    numpyro.sample("obs", dist.Normal(a[0] * design["times"], 1.0).to_event(1), obs=obs)


def broken(design, obs=None):
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    "fn, match",
    [
        (no_latent, r"no latent sample site"),
        (no_obs, r"no observed site named 'obs'.*sample sites: \['a'\]"),
        (positive, r"latent site 'k' has support Positive.*not the real line.*sample log\(k\)"),
        (vector, r"latent site 'a' must be a scalar"),
        (broken, r"running the program on its design failed: boom"),
    ],
)
def test_refuses_malformed_programs(fn, match):
    with pytest.raises(ValueError, match=match):
        nlp.models.IndividualModel(fn, DESIGN, name="bad")


def test_refuses_design_without_times():
    with pytest.raises(ValueError, match=r"`design` must be a dict with at least a 'times' entry"):
        nlp.models.IndividualModel(good, {"t": np.zeros(3)})


def test_unknown_builtin():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; the built-in models are \[.*'frohlich_simple'"):
        nlp.models.get("nope")


def swap(design, obs=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    c = numpyro.sample("c", dist.Normal(0.0, 2.0))
    numpyro.sample("obs", dist.Normal((a * b + c) * design["times"], 1.0).to_event(1), obs=obs)


def test_exchangeable_canonicalize_and_symmetrize():
    m = nlp.models.IndividualModel(swap, DESIGN, name="swap", exchangeable=(("a", "b"),))
    x = jnp.array([[0.1, 0.7, 3.0], [0.9, -0.2, 1.0]])
    np.testing.assert_array_equal(m.canonicalize(x), [[0.7, 0.1, 3.0], [0.9, -0.2, 1.0]])
    draws = m.symmetrize(jax.random.key(0), jnp.tile(jnp.array([1.0, 0.0, 5.0]), (20000, 1)))
    np.testing.assert_array_equal(draws[:, 2], 5.0)  # other parameters untouched
    frac = float(jnp.mean(draws[:, 0] == 1.0))
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / 20000)  # each order with probability 1/2
    assert m.log_num_symmetries == pytest.approx(np.log(2.0))
    assert m.fingerprint() != nlp.models.IndividualModel(swap, DESIGN, name="swap").fingerprint()


@pytest.mark.parametrize(
    "groups, match",
    [
        ((("a", "c"),), r"exchangeable parameters \('a', 'c'\) must have the same training prior"),
        ((("a", "zz"),), r"each exchangeable group needs at least two of"),
        ((("a", "b"), ("b", "c")), r"appear in two exchangeable groups"),
    ],
)
def test_exchangeable_refusals(groups, match):
    with pytest.raises(ValueError, match=match):
        nlp.models.IndividualModel(swap, DESIGN, name="swap", exchangeable=groups)


def _two_analyte_model():
    """A toy parent-metabolite model: y = log(dose-free exponential) per analyte, scaled by WT/70."""

    def program(design, obs=None):
        k = numpyro.sample("k", dist.Normal(0.0, 1.0))
        level = jnp.where(design["obs_cmt"] == 2, 1.0, 0.5) * design["WT"] / 70.0
        numpyro.sample("obs", dist.Normal(level * jnp.exp(-jnp.exp(k) * design["times"]), 0.1).mask(design["mask"]).to_event(1), obs=obs)

    design = {"times": jnp.array([1.0, 1.0, 2.0]), "obs_cmt": jnp.array([2, 3, 2]), "WT": jnp.array(70.0)}
    return nlp.models.IndividualModel(program, design, name="two_analytes", analytes=(2, 3), covariates={"WT": (70.0, 15.0)})


def test_analytes_and_simulator_covariates_reach_design_and_encoding():
    from nlme_ppl.estimators import encode, num_channels

    m = _two_analyte_model()
    data = nlp.Dataset.from_arrays([[1.0, 1.0, 2.0]] * 2, [[0.5, 0.2, 0.3], [0.9, 0.4, 0.6]], obs_cmt=[[2, 3, 2], [2, 3, 3]]).with_covariates(WT=[55.0, 100.0])
    d = m.designs_from_data(data)
    np.testing.assert_array_equal(np.asarray(d["obs_cmt"]), [[2, 3, 2], [2, 3, 3]])
    np.testing.assert_allclose(np.asarray(d["WT"]), [55.0, 100.0])
    assert num_channels(m) == 1 + 2 + 1
    _, v, _ = encode(m, data)
    np.testing.assert_array_equal(v[1, :, 1:3], [[1, 0], [0, 1], [0, 1]])  # one indicator per analyte
    np.testing.assert_allclose(v[:, :, 3], [[-1.0] * 3, [2.0] * 3])  # (WT - 70) / 15 on every row
    sims = nlp.simulate(m, jax.random.key(0), num_simulations=5, progress=False)
    assert sims.data.obs_cmt is not None and set(sims.data.covariates) == {"WT"}
    assert m.fingerprint() != nlp.models.IndividualModel(m.fn, dict(m.design), name="two_analytes", analytes=(2, 3)).fingerprint()


def test_analyte_and_covariate_data_checks():
    m = _two_analyte_model()
    base = nlp.Dataset.from_arrays([[1.0, 2.0]], [[0.5, 0.2]]).with_covariates(WT=[70.0])
    with pytest.raises(ValueError, match=r"observes compartments \(2, 3\) and needs the compartment of each observation"):
        m.designs_from_data(base)
    with pytest.raises(ValueError, match=r"observation 1 of individual '1' is of compartment CMT=4"):
        m.designs_from_data(base.with_obs_cmt(np.array([[2, 4]])))
    with pytest.raises(ValueError, match=r"simulates with the covariate\(s\) \['WT'\], which the data lacks"):
        m.designs_from_data(nlp.Dataset.from_arrays([[1.0, 2.0]], [[0.5, 0.2]]).with_obs_cmt(2))
    with pytest.raises(ValueError, match=r"observes several compartments \(CMT \[2, 3\]\) but model 'frohlich_simple' has one"):
        nlp.models.frohlich_simple().designs_from_data(base.with_obs_cmt(np.array([[2, 3]])))
    with pytest.raises(ValueError, match="declares analytes"):
        nlp.models.IndividualModel(m.fn, {"times": jnp.ones(2), "WT": jnp.array(1.0)}, analytes=(2, 3))


# ---------------------------------------------------------------------- observation_moments
def test_observation_moments_pk_closed_form_before_censoring():
    """Combined error: mean = C(t), SD = sqrt(a² + (b·C)²), with the censoring limit taken off."""
    from nlme_ppl.models.pk import one_compartment_concentration

    model = nlp.models.pk_oral_1cmt(error="combined", censoring=True)
    design = dict(model.design)
    design["lloq"] = jnp.full(design["times"].shape, 1e3)  # every observation censored: the moments ignore it
    phi = jnp.array([0.3, 1.2, 3.1, -1.5, -2.3])  # ka, CL, V, sigma_add, sigma_prop
    assert model.param_names == ("ka", "CL", "V", "sigma_add", "sigma_prop")
    conc = one_compartment_concentration(
        design["times"], design["dose_times"], design["dose_amounts"], design["dose_rates"], design["dose_cmt"],
        design["dose_mask"], *jnp.exp(phi[:3]),
    )  # fmt: skip
    mean, sd = jax.jit(lambda p, d: model.observation_moments(p, d))(phi, design)
    np.testing.assert_allclose(mean, conc, rtol=1e-10)
    np.testing.assert_allclose(sd, np.sqrt(np.exp(2 * phi[3]) + (np.exp(phi[4]) * conc) ** 2), rtol=1e-10)
    batch = jax.vmap(lambda p: model.observation_moments(p, design))(jnp.stack([phi, phi + 0.1]))
    assert batch[0].shape == (2, design["times"].shape[0])
    np.testing.assert_allclose(batch[0][0], mean, rtol=1e-10)


def test_observation_moments_refuses_a_wrong_shape():
    m = nlp.models.IndividualModel(good, DESIGN, name="good")
    with pytest.raises(ValueError, match="length 2 .*vmap"):
        m.observation_moments(jnp.zeros((3, 2)), m.design)


def test_observation_moments_sde_by_monte_carlo():
    """Hidden randomness: the law of total variance over paths matches the mean and SD of
    simulated observations at the same φ (2,000 paths; tolerances: 4 Monte Carlo SEs)."""
    model = nlp.models.frohlich_sde()
    phi = jnp.array([-1.0, -1.5, 0.5, 4.0, -1.0, 0.5, 1.0, -2.0])  # delta, gamma, k, m0, scale, t0, offset, sigma
    with pytest.raises(ValueError, match="needs a JAX key"):
        model.observation_moments(phi, model.design)
    mean, sd = model.observation_moments(phi, model.design, key=jax.random.key(1), num_paths=2000)
    cond = numpyro.handlers.condition(model.fn, data=dict(zip(model.param_names, phi)))

    def one(key):
        return numpyro.handlers.trace(numpyro.handlers.seed(cond, key)).get_trace(model.design)["obs"]["value"]

    y = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(2), 2000)))
    n = y.shape[0]
    late = np.asarray(model.design["times"]) > 2.0  # after t0: the path's spread is large against sigma
    assert np.all(np.asarray(sd)[late] > 1.2 * np.exp(-2.0))  # the path adds to the noise SD (measured: 1.3-2.2x)
    # the two estimates are independent, each with SE sd/sqrt(n) (mean) and about sd/sqrt(2n) (SD)
    np.testing.assert_array_less(np.abs(mean - y.mean(0)), 4 * np.sqrt(2) * y.std(0) / np.sqrt(n) + 1e-12)
    np.testing.assert_array_less(np.abs(sd - y.std(0)), 4 * y.std(0) / np.sqrt(n) + 1e-12)
