"""Several devices (`nlme_ppl._sharding`): a fit on two host devices splits the individuals over
both and gives the single-device estimates.

Each device count needs its own process (`XLA_FLAGS=--xla_force_host_platform_device_count=D`
before JAX starts), so the fits run in subprocesses: `fit_map` of `frohlich_simple` at N = 200
(`refine=False, diagnose=False, num_starts=2`, no extra draws) with 1 and with 2 devices.

Measured here (2026-12): the draws, their statistics and the per-individual terms of the fused
kernel are bit for bit the same (the test allows rounding in the last two); the estimates differ
by at most 4.4e-16 (the sums over individuals are added in another order: per device, then
across) and the log-likelihood by 0. The tolerance is that × 10, floored at 1e-8. The two cold
processes took about 140 s together on 2 busy cores with extra draws (`max_draws`, checked on
2 devices by hand: the same estimates), hence `slow`, and without them in the suite.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nlme_ppl._sharding import individual_sharding, shard_individuals

#: The estimates of the two runs agree to this (absolute; see the module docstring).
TOLERANCE = 1e-8

_SCRIPT = r"""
import hashlib, json
import equinox as eqx
import jax, jax.numpy as jnp, numpy as np
import nlme_ppl as nlp
from nlme_ppl.demo import DEMO_TRUTH
from nlme_ppl._lse import _lse_local, lse_linear
from nlme_ppl.inference.map import objective_at_fit

model = nlp.models.frohlich_simple()
post = nlp.pretrained("frohlich_simple")
pop = nlp.populations.gaussian(model, covariance="diag", fixed=("offset", "sigma"))

def simulate(n, seed):  # as benchmarks/run.py's _data
    phi = nlp.simulate_population(pop, DEMO_TRUTH, jax.random.key(seed), num_individuals=n)
    return nlp.simulate_data(model, phi, jax.random.key(seed + 1))

def digest(x):
    return hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()

data = simulate(200, 100)
fit = nlp.fit_map(pop, post, data, jax.random.key(7), refine=False, diagnose=False, num_starts=2, max_draws=100)
d = fit.draws
local = _lse_local(*(np.asarray(a) for a in (d.stats, d.stats[:, 0] * 0.01, d.log_prior[:, 0], d.log_prior)))[0]
kernel = jax.jit(lse_linear)(d.stats, d.stats[:, 0] * 0.01, d.log_prior[:, 0], d.log_prior)

# an odd number of individuals is not split: it runs on one device
odd = simulate(201, 300)
draws = nlp.prepare_draws(post, odd, jax.random.key(9))
objective, _, z = objective_at_fit(fit, data)
value, grad = eqx.filter_jit(jax.value_and_grad(objective))(z, draws, odd)
print(json.dumps({
    "devices": jax.device_count(),
    "stats_devices": len(d.stats.sharding.device_set),
    "spec": str(getattr(d.stats.sharding, "spec", None)),
    "draws": digest(d.values),
    "stats": [float(np.sum(np.asarray(d.stats))), float(np.sum(np.abs(np.asarray(d.stats))))],
    "params": fit.params,
    "loglik": fit.log_likelihood,
    "kernel": float(np.max(np.abs(np.asarray(kernel) - np.asarray(local)) / (1.0 + np.abs(np.asarray(local))))),
    "odd_devices": len(draws.stats.sharding.device_set),
    "odd_value": float(value),
    "odd_grad": np.asarray(grad).tolist(),
}))
"""


def _run(devices: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs() -> dict:
    return {d: _run(d) for d in (1, 2)}


@pytest.mark.slow
def test_two_devices_split_the_individuals(runs):
    one, two = runs[1], runs[2]
    assert (one["devices"], one["stats_devices"]) == (1, 1)
    assert (two["devices"], two["stats_devices"]) == (2, 2)
    assert "individuals" in two["spec"]
    assert two["draws"] == one["draws"]  # the same draws bit for bit, placed differently
    np.testing.assert_allclose(two["stats"], one["stats"], rtol=1e-13)  # identical here
    # each device's block loop on its own individuals: the per-individual terms of one device (identical here)
    assert one["kernel"] <= 1e-14 and two["kernel"] <= 1e-14


@pytest.mark.slow
def test_two_devices_give_the_single_device_estimates(runs):
    one, two = runs[1], runs[2]
    assert one["params"].keys() == two["params"].keys()
    for name, value in one["params"].items():
        assert abs(two["params"][name] - value) <= TOLERANCE, name
    assert abs(two["loglik"] - one["loglik"]) <= TOLERANCE * max(1.0, abs(one["loglik"]))


@pytest.mark.slow
def test_individuals_not_divisible_stay_on_one_device(runs):
    one, two = runs[1], runs[2]
    assert two["odd_devices"] == 1
    assert np.isfinite(two["odd_value"]) and np.all(np.isfinite(two["odd_grad"]))
    np.testing.assert_allclose(two["odd_value"], one["odd_value"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(two["odd_grad"], one["odd_grad"], rtol=0, atol=TOLERANCE)


def test_one_device_changes_nothing():
    """In this process (one device unless the environment says otherwise) nothing is placed."""
    if jax.device_count() > 1:
        pytest.skip("this process has several devices")
    tree = {"a": np.ones((32, 3)), "b": 1.0}
    assert individual_sharding(32) is None
    assert shard_individuals(tree, 32) is tree
