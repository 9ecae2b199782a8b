"""frohlich_simple: closed form against a diffrax ODE solve, stability at delta = gamma, the program."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.models.frohlich import FROHLICH_SIMPLE_PRIOR, frohlich_simple_solution


def _ode_solution(times, delta, gamma, k, t0):
    def rhs(t, state, args):
        m, p = state
        return jnp.stack([-delta * m, k * m - gamma * p])

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs), diffrax.Kvaerno5(), t0=t0, t1=float(times[-1]), dt0=1e-3, y0=jnp.array([1.0, 0.0]),
        saveat=diffrax.SaveAt(ts=jnp.asarray(times[times > t0])),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10), max_steps=100_000,
    )
    out = np.zeros_like(times)
    out[times > t0] = np.asarray(sol.ys[:, 1])
    return out


@pytest.mark.parametrize("delta, gamma, k, t0", [(0.8, 0.03, 50.0, 1.3), (0.05, 0.5, 200.0, 0.2), (0.2, 0.2 + 1e-9, 10.0, 2.0), (3.0, 0.01, 5.0, 0.7)])
def test_closed_form_matches_diffrax(delta, gamma, k, t0):
    times = np.arange(1, 181) / 6.0
    exact = _ode_solution(times, delta, gamma, k, t0)
    closed = np.asarray(frohlich_simple_solution(jnp.asarray(times), delta, gamma, k, t0))
    np.testing.assert_allclose(closed, exact, rtol=1e-6, atol=1e-9 * k)


def test_solution_is_smooth_and_finite_at_equal_rates():
    t = jnp.linspace(0.1, 30, 50)
    f = lambda d: frohlich_simple_solution(t, d, 0.3, 10.0, 0.05)  # noqa: E731
    np.testing.assert_allclose(f(0.3), f(0.3 + 1e-7), rtol=1e-5)
    grad = jax.jacfwd(f)(0.3)
    assert np.all(np.isfinite(grad))
    # the limit delta = gamma: p = k tau e^{-gamma tau}
    np.testing.assert_allclose(f(0.3), 10.0 * (t - 0.05) * jnp.exp(-0.3 * (t - 0.05)), rtol=1e-10)


def test_extreme_prior_draws_stay_finite():
    big = frohlich_simple_solution(jnp.linspace(0.1, 30, 180), 40.0, 1e-4, 1e6, 0.01)
    assert np.all(np.isfinite(big))
    assert np.all(np.isfinite(frohlich_simple_solution(jnp.linspace(0.1, 30, 180), 1e-4, 40.0, 1e6, 0.01)))


def test_model_sites_and_prior():
    m = nlp.models.frohlich_simple()
    assert m.param_names == ("delta", "gamma", "k_m0_scale", "t0", "offset", "sigma")
    for name, (mean, var) in FROHLICH_SIMPLE_PRIOR.items():
        assert float(m.prior[name].loc) == mean and float(m.prior[name].scale) == pytest.approx(np.sqrt(var))
    assert np.asarray(m.design["times"]).shape == (180,)
    np.testing.assert_allclose(np.asarray(m.design["times"])[[0, -1]], [1 / 6, 30.0])


def test_log_likelihood_matches_scipy():
    from scipy import stats

    m = nlp.models.frohlich_simple()
    phi = jnp.array([np.log(0.8), np.log(0.03), 5.0, 0.2, 1.0, np.log(0.1)])
    _, y = m.simulate_one(jax.random.key(0), m.design)
    mu = np.log(np.asarray(frohlich_simple_solution(m.design["times"], 0.8, 0.03, np.exp(5.0), np.exp(0.2))) + np.e)
    expected = stats.norm(mu, 0.1).logpdf(np.asarray(y)).sum()
    assert float(m.log_likelihood(phi, m.design, y)) == pytest.approx(expected, rel=1e-10)


# ----------------------------------------------------------------------------- frohlich_detailed
def _radau_detailed(times, d1, d2, e0, k2s, k2, k1, r0, g, t0):
    from scipy.integrate import solve_ivp

    def rhs(t, x):
        m, e, r, p = x
        return [-d1 * m * e - k1 * m * r + k2 * (r0 - r), -d1 * m * e + d2 * (e0 - e), k2 * (r0 - r) - k1 * m * r, k2s * (r0 - r) - g * p]

    after = times > t0
    out = np.zeros_like(times)
    if after.any():
        sol = solve_ivp(rhs, (t0, times[-1]), [1.0, e0, r0, 0.0], method="Radau", t_eval=times[after], rtol=1e-10, atol=1e-12)
        assert sol.success
        out[after] = sol.y[3]
    return out


def test_detailed_solution_matches_scipy_radau():
    """Eight prior draws (stiff ones included) against scipy Radau at rtol 1e-10: the observable
    log(p + offset) agrees to 5e-4 (worst of 40 draws: 2.6e-5, 6.8e-5 before the 15-minute step cap; the simulator runs at
    rtol 1e-4; the noise SD is >= 0.01 for 99% of the prior)."""
    from nlme_ppl.models.frohlich import frohlich_detailed_solution

    m = nlp.models.frohlich_detailed()
    times = np.asarray(m.design["times"])
    draws = np.asarray(m.prior_sample(jax.random.key(3), (8,)))
    solve = jax.jit(lambda *a: frohlich_detailed_solution(jnp.asarray(times), *a))
    for phi in draws:
        kin = np.exp(phi[:9])
        offset = np.exp(phi[9])
        ours = np.log(np.maximum(np.asarray(solve(*kin)), 0.0) + offset)
        ref = np.log(np.maximum(_radau_detailed(times, *kin), 0.0) + offset)
        np.testing.assert_allclose(ours, ref, atol=5e-4, err_msg=f"parameters {dict(zip(m.param_names, phi.round(2)))}")


def test_detailed_model_sites_prior_and_simulation():
    from nlme_ppl.models.frohlich import FROHLICH_DETAILED_PRIOR

    m = nlp.models.frohlich_detailed()
    assert m.num_params == 11 and m.param_names == tuple(FROHLICH_DETAILED_PRIOR)
    for name, (mean, var) in FROHLICH_DETAILED_PRIOR.items():
        assert float(m.prior[name].loc) == mean and float(m.prior[name].scale) == pytest.approx(np.sqrt(var))
    sims = nlp.simulate(m, jax.random.key(0), num_simulations=500, progress=False)
    assert sims.num_dropped <= 5 and np.isfinite(np.asarray(sims.data.values)).all()
    # before t0 the cell shows only its background: y = log(offset) + noise
    i = int(np.argmax(np.exp(np.asarray(sims.params[:, 8])) > 1.0))
    t0, offset, sigma = np.exp(np.asarray(sims.params[i, 8:]))
    early = np.asarray(sims.data.times[i]) < t0
    z = (np.asarray(sims.data.values[i])[early] - np.log(offset)) / sigma
    assert early.sum() >= 5 and abs(z.mean()) < 4 / np.sqrt(early.sum())


def test_detailed_newton_linear_solver_matches_numpy():
    """The unrolled, pivoting LU of the implicit stages solves A x = b and Aᵀ x = b, including a
    system that needs a row swap (zero leading entry)."""
    import lineax

    from nlme_ppl.models.frohlich import _SmallLU

    rng = np.random.default_rng(0)
    for a in (rng.normal(size=(4, 4)), np.array([[0.0, 2, 1, 0], [1, 0, 0, 3], [0, 1, 5, 0], [2, 0, 1, 1]])):
        b = rng.normal(size=4)
        solver = _SmallLU()
        state = solver.init(lineax.MatrixLinearOperator(jnp.asarray(a)), {})
        np.testing.assert_allclose(solver.compute(state, jnp.asarray(b), {})[0], np.linalg.solve(a, b), rtol=1e-10)
        transposed, _ = solver.transpose(state, {})
        np.testing.assert_allclose(solver.compute(transposed, jnp.asarray(b), {})[0], np.linalg.solve(a.T, b), rtol=1e-10)


def test_detailed_solution_long_horizon_and_gradient():
    """The step cap grows on long horizons (no max_steps failure at 3000 h), and reverse-mode
    gradients through the solve match central differences."""
    from nlme_ppl.models.frohlich import frohlich_detailed_solution

    m = nlp.models.frohlich_detailed()
    phi = np.asarray(m.prior_sample(jax.random.key(3), (1,)))[0]
    long = frohlich_detailed_solution(jnp.linspace(1.0, 3000.0, 180), *np.exp(phi[:9]))
    assert np.all(np.isfinite(np.asarray(long)))
    times = jnp.asarray(m.design["times"])
    f = jax.jit(lambda lk: jnp.sum(jnp.log(jnp.maximum(frohlich_detailed_solution(times, *jnp.exp(lk)), 0.0) + np.exp(phi[9]))))
    x = jnp.asarray(phi[:9])
    grad = np.asarray(jax.grad(f)(x))
    fd = np.array([(float(f(x + 1e-5 * e)) - float(f(x - 1e-5 * e))) / 2e-5 for e in np.eye(9)])
    np.testing.assert_allclose(grad, fd, atol=1e-5 * np.abs(fd).max())
