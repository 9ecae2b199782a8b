"""frohlich_sde: every simulation its own Brownian path, the ODE limit, and no exact likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import nlme_ppl as nlp
from nlme_ppl.models.frohlich import frohlich_simple_solution
from nlme_ppl.models.frohlich_sde import FROHLICH_SDE_PRIOR, frohlich_sde_path

TIMES = np.arange(1, 181) / 6.0


def test_each_key_gets_its_own_path_and_a_key_repeats_its_path():
    keys = jax.random.split(jax.random.key(0), 50)
    paths = np.asarray(jax.vmap(lambda k: frohlich_sde_path(k, TIMES, 0.3, 0.05, 2.0, 50.0, 0.5))(keys))
    assert np.isfinite(paths).all() and (paths >= 0).all()
    flat = paths.reshape(50, -1)
    dist = np.abs(flat[:, None, :] - flat[None, :, :]).max(-1)
    assert (dist[~np.eye(50, dtype=bool)] > 1.0).all(), "two simulations shared a Brownian path"
    again = np.asarray(frohlich_sde_path(keys[3], TIMES, 0.3, 0.05, 2.0, 50.0, 0.5))
    np.testing.assert_array_equal(again, paths[3])
    np.testing.assert_array_equal(paths[:, TIMES <= 0.5], 0.0)  # nothing before t0


def test_simulations_of_one_parameter_set_differ():
    """Through the NumPyro program and `simulate_one`, as `nlp.simulate` runs it: same φ, tiny
    measurement noise, different keys -> different paths (not the same path reseeded)."""
    model = nlp.models.frohlich_sde()
    phi = {"delta": np.log(0.3), "gamma": np.log(0.05), "k": np.log(2.0), "m0": np.log(30.0), "scale": 0.0, "t0": 0.0, "offset": 0.0, "sigma": np.log(1e-4)}
    fixed = numpyro.handlers.condition(model.fn, data=phi)
    def one(key):
        tr = numpyro.handlers.trace(numpyro.handlers.seed(fixed, key)).get_trace(model.design)
        return tr["obs"]["value"]
    obs = np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(1), 20)))
    spread = obs.std(axis=0)
    assert np.median(spread[TIMES > 3]) > 0.05, f"paths barely differ (median SD {np.median(spread):.2g})"


def test_mean_path_matches_the_ode_for_many_copies():
    """m0 = 1e5 copies: 400 paths' mean is the ODE solution to 1% (noise ~ 1/sqrt(copies),
    Euler weak error ~ delta·dt)."""
    delta, gamma, k, m0, t0 = 0.5, 0.1, 2.0, 1e5, 1.0
    keys = jax.random.split(jax.random.key(2), 400)
    paths = np.asarray(jax.vmap(lambda kk: frohlich_sde_path(kk, TIMES, delta, gamma, k, m0, t0))(keys))
    ode = np.asarray(frohlich_simple_solution(jnp.asarray(TIMES), delta, gamma, k * m0, t0))
    big = ode > 0.05 * ode.max()
    rel = np.abs(paths.mean(0)[big] / ode[big] - 1)
    assert rel.max() < 0.01, f"mean path off the ODE limit by {rel.max():.3%}"
    # and the intrinsic noise is Poisson-like: relative SD ~ 1/sqrt(p), far below 1 here
    assert (paths.std(0)[big] / ode[big]).max() < 0.02


def test_model_prior_and_no_exact_likelihood():
    m = nlp.models.frohlich_sde()
    assert m.param_names == tuple(FROHLICH_SDE_PRIOR) and not m.tractable
    for name, (mean, var) in FROHLICH_SDE_PRIOR.items():
        assert float(m.prior[name].loc) == mean and float(m.prior[name].scale) == pytest.approx(np.sqrt(var))
    sims = nlp.simulate(m, jax.random.key(0), num_simulations=300, progress=False)
    assert sims.num_dropped == 0 and np.isfinite(np.asarray(sims.data.values)).all()
    with pytest.raises(ValueError, match="no tractable likelihood"):
        m.log_likelihood(sims.params[0], m.design, sims.data.values[0])
    with pytest.raises(ValueError, match="frohlich_sde.*no tractable likelihood"):
        nlp.fit_exact_individual(m, sims.data.subset(0), jax.random.key(0))
