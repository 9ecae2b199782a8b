"""LeftCensored (M3) against scipy, and censoring in the PK models: simulation, likelihood, data checks."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats

import nlme_ppl as nlp
from nlme_ppl.models import LeftCensored
from nlme_ppl.models.pk import one_compartment_concentration


def test_log_prob_is_the_cdf_below_the_limit_and_the_density_above():
    mu, sd = np.array([1.0, 1.0, 1.0, 0.2]), np.array([0.5, 0.5, 0.5, 2.0])
    lloq = np.array([0.8, 0.8, -np.inf, 3.0])
    value = np.array([0.8, 1.7, -4.0, 3.0])  # censored at the limit, measured, no limit, censored
    got = LeftCensored(dist.Normal(mu, sd), lloq).log_prob(value)
    want = [stats.norm.logcdf(0.8, 1.0, 0.5), stats.norm.logpdf(1.7, 1.0, 0.5), stats.norm.logpdf(-4.0, 1.0, 0.5),
            stats.norm.logcdf(3.0, 0.2, 2.0)]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)


def test_samples_put_the_censored_mass_at_the_limit():
    n, mu, sd, lloq = 200_000, 1.0, 0.5, 0.7
    y = np.asarray(LeftCensored(dist.Normal(mu, sd), lloq).sample(jax.random.key(0), (n,)))
    p = stats.norm.cdf(lloq, mu, sd)
    frac = np.mean(y == lloq)
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n)  # 4 Monte Carlo SEs
    assert y.min() == lloq
    above = y[y > lloq]  # the uncensored part is the normal truncated at the limit
    want = stats.truncnorm((lloq - mu) / sd, np.inf, loc=mu, scale=sd).mean()
    assert abs(above.mean() - want) < 4 * above.std() / np.sqrt(above.size)


def test_gradient_is_finite_deep_in_the_tail():
    f = lambda m: LeftCensored(dist.Normal(m, 0.1), 0.0).log_prob(jnp.array([0.0, 5.0])).sum()  # noqa: E731
    g = jax.grad(f)(3.0)  # P(y < 0) = Phi(-30): the CDF underflows to its floor
    assert np.isfinite(g)
    np.testing.assert_allclose(jax.grad(f)(0.05), (f(0.05 + 1e-6) - f(0.05 - 1e-6)) / 2e-6, rtol=1e-5)


def test_base_must_be_univariate_with_a_cdf():
    with pytest.raises(ValueError, match="univariate"):
        LeftCensored(dist.MultivariateNormal(jnp.zeros(2), jnp.eye(2)), 0.0)


def _censored_pk_individual():
    """One individual of pk_oral_1cmt(censoring=True) with its limit set so that about half its samples are censored."""
    m = nlp.models.pk_oral_1cmt(censoring=True)
    design = dict(m.design)
    phi = jnp.array([0.3, 1.2, 3.4, -1.0])
    conc = one_compartment_concentration(design["times"], design["dose_times"], design["dose_amounts"], design["dose_rates"],
                                         design["dose_cmt"], design["dose_mask"], *jnp.exp(phi[:3]))
    design["lloq"] = jnp.full_like(design["times"], float(jnp.median(conc[design["mask"]])))
    return m, design, phi, np.asarray(conc)


def test_censored_pk_log_likelihood_is_m3():
    m, design, phi, conc = _censored_pk_individual()
    _, y = m.simulate_one(jax.random.key(3), design)
    y, lloq, mask, sd = np.asarray(y), np.asarray(design["lloq"]), np.asarray(design["mask"]), np.exp(-1.0)
    cens = mask & (y <= lloq)
    assert 0 < cens.sum() < mask.sum() and np.all(y[cens] == lloq[cens]) and np.all(y[mask & ~cens] > lloq[mask & ~cens])
    want = stats.norm.logcdf(lloq[cens], conc[cens], sd).sum() + stats.norm.logpdf(y[mask & ~cens], conc[mask & ~cens], sd).sum()
    assert float(m.log_likelihood(phi, design, jnp.asarray(y))) == pytest.approx(want, rel=1e-10)


def test_simulated_censoring_rate_matches_the_model():
    """Over prior draws, the number of censored samples matches Σ P(y < LLOQ | φ) within 4 SEs."""
    m = nlp.models.pk_oral_1cmt(censoring=True)
    assert m.design_prior is nlp.models.pk.pk_censored_design_prior
    phi = m.prior_sample(jax.random.key(0), (4000,))
    designs = m.sample_designs(jax.random.key(1), 4000)
    data = nlp.simulate_data(m, phi, jax.random.key(2), designs=designs)
    conc = np.asarray(jax.vmap(one_compartment_concentration)(
        designs["times"], designs["dose_times"], designs["dose_amounts"], designs["dose_rates"],
        designs["dose_cmt"], designs["dose_mask"], *np.exp(np.asarray(phi)[:, :3]).T))
    lloq, mask, cens = np.asarray(designs["lloq"]), np.asarray(designs["mask"]), np.asarray(data.censored)
    p = stats.norm.cdf(lloq, conc, np.exp(np.asarray(phi)[:, 3:4]))
    observed, expected = cens[mask].sum(), p[mask].sum()
    assert abs(observed - expected) < 4 * np.sqrt((p * (1 - p))[mask].sum())
    assert 0.05 < observed / mask.sum() < 0.4  # the design prior censors a real share of samples
    np.testing.assert_array_equal(np.asarray(data.values)[cens], lloq[cens])  # a censored value is its limit
    assert not cens[~np.isfinite(lloq)].any()  # individuals without a limit are never censored


def test_data_checks_and_the_uncensored_limit():
    plain, censored = nlp.models.pk_oral_1cmt(), nlp.models.pk_oral_1cmt(censoring=True)
    assert censored.name == "pk_oral_1cmt_censored" and censored.uses_censoring and not plain.uses_censoring
    assert censored.param_names == plain.param_names
    doses = nlp.Doses.from_individuals([[0.0], [0.0]], [[320.0], [320.0]])
    data = nlp.Dataset.from_arrays([[1.0, 8.0, 24.0], [2.0, 12.0, 30.0]], [[6.0, 3.0, 0.2], [5.0, 2.0, 0.3]], doses=doses,
                                   censored=[[False, False, True], [False, False, False]])
    with pytest.raises(ValueError, match=r"1 censored observation\(s\).*individual '1'.*pk_oral_1cmt\(censoring=True\)"):
        plain.designs_from_data(data)
    d = censored.designs_from_data(data)
    np.testing.assert_array_equal(np.asarray(d["lloq"]), [[-np.inf, -np.inf, 0.2], [-np.inf] * 3])
    # without censored rows the M3 likelihood is the plain one
    phi = jnp.array([0.3, 1.2, 3.4, -1.0])
    uncensored = nlp.Dataset.from_arrays(data.times, data.values, doses=doses)
    dc, dp = censored.designs_from_data(uncensored), plain.designs_from_data(uncensored)
    one = lambda m, d: float(m.log_likelihood(phi, {k: v[1] for k, v in d.items()}, uncensored.values[1]))  # noqa: E731
    assert one(censored, dc) == pytest.approx(one(plain, dp), rel=1e-12)


def _heavily_censored(model, num: int, min_censored: int):
    """Prior-predictive individuals of `model` with at least `min_censored` censored samples and
    parameters within 1.5 prior SDs of the prior mean (seeded)."""
    sims = nlp.simulate(model, jax.random.key(7), num_simulations=1000, progress=False)
    prior = np.array([[model.prior[n].loc, model.prior[n].scale] for n in model.param_names])
    typical = (np.abs(np.asarray(sims.params) - prior[:, 0]) / prior[:, 1]).max(axis=1) < 1.5
    rows = np.flatnonzero((np.asarray(sims.data.censored).sum(axis=1) >= min_censored) & typical)[:num]
    assert rows.size == num
    return sims.data.subset(rows)


@pytest.mark.heavy
def test_shipped_estimator_learns_m3_from_the_flag():
    """Eight individuals with ≥ 3 censored samples. E3 is the exact M3 posterior (NUTS on the
    model's own likelihood) and E0 the exact posterior that reads the limits as measurements.
    The shipped censoring estimator given the flags (A3) is close to E3: median |mean error|
    under 0.5 exact posterior SDs. It is far closer to E3 than to E0, and without the flags
    (A0) it is closer to E0 than to E3: the flag, not the values, carries the censoring."""
    model = nlp.models.pk_oral_1cmt(censoring=True)
    post = nlp.pretrained("pk_oral_1cmt_censored")
    data = _heavily_censored(model, 8, 3)
    unflagged = nlp.Dataset.from_arrays(data.times, data.values, mask=data.mask, ids=data.ids, doses=data.doses)
    a3 = np.asarray(post.sample(data, jax.random.key(1), num_draws=4000)).mean(axis=1)
    a0 = np.asarray(post.sample(unflagged, jax.random.key(1), num_draws=4000)).mean(axis=1)
    e3, e0, sd = [], [], []
    for i in range(data.num_individuals):
        x3 = nlp.fit_exact_individual(model, data, jax.random.key(2 + i), index=i, num_warmup=400, num_samples=1000)
        x0 = nlp.fit_exact_individual(model, unflagged, jax.random.key(2 + i), index=i, num_warmup=400, num_samples=1000)
        e3.append(x3.mean(0)), e0.append(x0.mean(0)), sd.append(x3.std(0))
    e3, e0, sd = np.array(e3), np.array(e0), np.array(sd)
    z = lambda a, e: (a - e) / sd  # noqa: E731
    assert np.median(np.abs(z(a3, e3))) < 0.5, z(a3, e3)
    assert np.sum(z(a3, e3) ** 2) < 0.25 * np.sum(z(a3, e0) ** 2)
    assert np.sum(z(a0, e0) ** 2) < 0.25 * np.sum(z(a0, e3) ** 2)
