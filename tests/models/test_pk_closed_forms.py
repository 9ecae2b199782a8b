"""The PK closed forms (`models._pk_closed_forms`, used by `pk_oral_*` and `pk_iv_*`) against a
scipy ODE solve: many doses, loading doses, infusions, steady state (SS with II) and resets.

The reference integrates the compartment ODEs (LSODA, rtol 1e-11) dose event by dose event. A
steady-state dose is written out as the dose plus its earlier doses every II, far enough back
that the ones left out weigh less than e^{-60}, and acts after its time (as in NONMEM, where the SS
record sets the compartments at its time; a sample at that time is taken before it). A reset zeroes the compartments, which for a
linear system is the same as dropping the earlier doses: the doses are integrated in groups of
the same end (a reset time, or none), and a group stops contributing after its end.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from nlme_ppl.models.pk import one_compartment_concentration, two_compartment_concentration
from nlme_ppl.models.pk_iv import iv_one_compartment_concentration, iv_two_compartment_concentration

INF = np.inf


def _ode_group(times, doses, ka, cl, v, q, v2):
    """Central concentration at `times` of the doses (time, amount, rate, route) by LSODA."""
    ke, k12, k21 = cl / v, q / v, q / v2
    starts = sorted({d[0] for d in doses})
    events = sorted({*starts, *[d[0] + d[1] / d[2] for d in doses if d[2] > 0], float(times.max())})
    x, out = np.zeros(3), np.zeros_like(times)
    for t_a, t_b in zip(events[:-1], events[1:]):
        for td, a, r, route in doses:
            if td == t_a and r == 0:
                x[0 if route == "depot" else 1] += a
        rate = sum(r for (td, a, r, _) in doses if r > 0 and td <= t_a < td + a / r)
        rhs = lambda t, s: [-ka * s[0], ka * s[0] - (ke + k12) * s[1] + k21 * s[2] + rate, k12 * s[1] - k21 * s[2]]  # noqa: E731
        sol = solve_ivp(rhs, (t_a, t_b), x, method="LSODA", rtol=1e-11, atol=1e-13, dense_output=True)
        inside = (times > t_a) & (times <= t_b)
        if inside.any():
            out[inside] = sol.sol(times[inside])[1] / v
        x = sol.y[:, -1]
    return out


def _slowest_rate(ka, cl, v, q, v2):
    k10, k12, k21 = cl / v, q / v, q / v2
    total = k10 + k12 + k21
    beta = (total - np.sqrt(total**2 - 4 * k10 * k21)) / 2 if q > 0 else k10
    return min(beta, ka) if ka else beta


def ode_reference(times, doses, *, ka=0.0, cl, v, q=0.0, v2=1.0):
    """doses: (time, amount, rate, route, ii, end); see the module docstring."""
    lam = _slowest_rate(ka, cl, v, q, v2)
    groups: dict[tuple[float, float], list] = {}
    for td, a, r, route, ii, end in doses:
        copies = [td] if ii == 0 else [td - n * ii for n in range(int(np.ceil(60 / (lam * ii))) + 1)]
        # a steady-state series acts from its dose's time on (NONMEM: the SS record sets the amounts then)
        groups.setdefault((end, td if ii > 0 else -INF), []).extend((t0, a, r, route) for t0 in copies)
    out = np.zeros_like(times)
    for (end, start), group in groups.items():
        out += np.where((times <= end) & (times > start), _ode_group(times, group, ka, cl, v, q, v2), 0.0)
    return out


def _ours(fn, times, doses, cmt_of, *params):
    dt, da, dr, route, ii, end = (np.array(x) for x in zip(*doses))
    cmt = np.array([cmt_of[r] for r in route])
    return np.asarray(fn(jnp.asarray(times), jnp.asarray(dt, float), jnp.asarray(da, float), jnp.asarray(dr, float), jnp.asarray(cmt),
                         jnp.ones(len(doses), bool), *params, dose_ii=jnp.asarray(ii, float), dose_end=jnp.asarray(end, float)))


# (time, amount, rate, route, ii, end); routes "central" (IV) or "depot" (oral)
IV_CASES = {
    "ten boluses, loading dose": [(0.0, 1000.0, 0.0, "central", 0.0, INF)] + [(12.0 * k, 400.0, 0.0, "central", 0.0, INF) for k in range(1, 10)],
    "eight 2-h infusions": [(8.0 * k, 300.0, 150.0, "central", 0.0, INF) for k in range(8)],
    "steady-state bolus, then three more": [(0.0, 250.0, 0.0, "central", 12.0, INF)] + [(12.0 * k, 250.0, 0.0, "central", 0.0, INF) for k in (1, 2, 3)],
    "steady-state 3-h infusion, washout": [(0.0, 600.0, 200.0, "central", 12.0, INF)],
    "reset and dose (EVID=4)": [(0.0, 500.0, 0.0, "central", 0.0, 36.0), (12.0, 500.0, 0.0, "central", 0.0, 36.0),
                                (24.0, 500.0, 100.0, "central", 0.0, 36.0), (36.0, 300.0, 0.0, "central", 0.0, INF),
                                (60.0, 300.0, 60.0, "central", 0.0, INF)],
    "SS=1 after earlier doses, infusion cut by a reset": [(0.0, 500.0, 0.0, "central", 0.0, 30.0), (24.0, 500.0, 50.0, "central", 0.0, 30.0),
                                                          (30.0, 200.0, 0.0, "central", 8.0, INF), (38.0, 200.0, 0.0, "central", 0.0, INF)],
}
TIMES = np.concatenate([np.linspace(0.0, 120.0, 481), [36.0, 30.0, 12.0]])  # reset and dose times included


@pytest.mark.parametrize("case", sorted(IV_CASES))
@pytest.mark.parametrize("cl, v", [(3.0, 30.0), (0.6, 50.0)])
def test_iv_one_compartment_matches_ode(case, cl, v):
    doses = IV_CASES[case]
    ours = _ours(iv_one_compartment_concentration, TIMES, doses, {"central": 1}, cl, v)
    ref = ode_reference(TIMES, doses, cl=cl, v=v)
    # measured (2026-12, all cases and parameters): max relative error 2.1e-10, max absolute 8.8e-9 mg/L at
    # ~40 mg/L (mostly LSODA's); the bound rtol 1e-8 + atol 1e-9 leaves a margin of ~40x
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-9)
    # and the same doses through the oral model's IV route (CMT 2) agree
    oral_iv = _ours(one_compartment_concentration, TIMES, doses, {"central": 2}, 1.0, cl, v)
    np.testing.assert_allclose(oral_iv, ours, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(IV_CASES))
@pytest.mark.parametrize("cl, v1, q, v2", [(3.0, 20.0, 4.0, 60.0), (10.0, 10.0, 0.5, 100.0)])
def test_iv_two_compartment_matches_ode(case, cl, v1, q, v2):
    doses = IV_CASES[case]
    ours = _ours(iv_two_compartment_concentration, TIMES, doses, {"central": 1}, cl, v1, q, v2)
    ref = ode_reference(TIMES, doses, cl=cl, v=v1, q=q, v2=v2)
    # measured: max relative error 3.9e-11, absolute 4.9e-10 mg/L
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-9)
    oral_iv = _ours(two_compartment_concentration, TIMES, doses, {"central": 2}, 1.0, cl, v1, q, v2)
    np.testing.assert_allclose(oral_iv, ours, rtol=1e-10, atol=1e-12)


ORAL_CASES = {
    "steady-state oral dose, then four more": [(0.0, 300.0, 0.0, "depot", 24.0, INF)] + [(24.0 * k, 300.0, 0.0, "depot", 0.0, INF) for k in (1, 2, 3, 4)],
    "oral doses, then SS=1 oral with an IV infusion": [(0.0, 200.0, 0.0, "depot", 0.0, 48.0), (24.0, 200.0, 0.0, "depot", 0.0, 48.0),
                                                        (48.0, 100.0, 0.0, "depot", 12.0, INF), (50.0, 200.0, 100.0, "central", 0.0, INF)],
    "SS=2 oral (no reset) on top of earlier doses": [(0.0, 200.0, 0.0, "depot", 0.0, INF), (10.0, 150.0, 0.0, "depot", 8.0, INF)],
}


@pytest.mark.parametrize("case", sorted(ORAL_CASES))
@pytest.mark.parametrize("ka, cl, v", [(1.5, 2.8, 32.0), (0.0875, 2.8, 32.0), (0.0875 * (1 + 3e-6), 2.8, 32.0)])  # ka = ke, ka next to ke
def test_oral_one_compartment_steady_state_matches_ode(case, ka, cl, v):
    doses = ORAL_CASES[case]
    ours = _ours(one_compartment_concentration, TIMES, doses, {"depot": 1, "central": 2}, ka, cl, v)
    ref = ode_reference(TIMES, doses, ka=ka, cl=cl, v=v)
    # measured: max relative error 2.1e-10, absolute 1.9e-10 mg/L (ka = ke and ka next to ke included)
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("case", sorted(ORAL_CASES))
@pytest.mark.parametrize("ka, cl, v1, q, v2", [(1.5, 3.0, 20.0, 4.0, 60.0), (0.5, 10.0, 10.0, 0.5, 100.0)])
def test_oral_two_compartment_steady_state_matches_ode(case, ka, cl, v1, q, v2):
    doses = ORAL_CASES[case]
    ours = _ours(two_compartment_concentration, TIMES, doses, {"depot": 1, "central": 2}, ka, cl, v1, q, v2)
    ref = ode_reference(TIMES, doses, ka=ka, cl=cl, v=v1, q=q, v2=v2)
    # measured: max relative error 6.8e-11, absolute 8.8e-11 mg/L
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-9)


def test_steady_state_is_the_limit_of_repeated_doses():
    """By hand: an SS bolus every 12 h into V = 30 L with CL = 3 L/h gives the trough
    A/V · e^{-ke II} / (1 - e^{-ke II}) just before the next dose, and A/V / (1 - e^{-ke II}) right after it."""
    cl, v, a, ii = 3.0, 30.0, 250.0, 12.0
    ke = cl / v
    t = jnp.array([12.0, 1e-9])
    c = iv_one_compartment_concentration(t, jnp.array([0.0]), jnp.array([a]), jnp.zeros(1), jnp.ones(1, int), jnp.ones(1, bool), cl, v,
                                         dose_ii=jnp.array([ii]))
    np.testing.assert_allclose(np.asarray(c), [a / v * np.exp(-ke * ii) / (1 - np.exp(-ke * ii)), a / v / (1 - np.exp(-ke * ii))], rtol=1e-8)
