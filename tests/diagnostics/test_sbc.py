"""Simulation-based calibration against known answers.

The reference is a linear-Gaussian individual model, a ~ N(0, 1), b ~ N(0, 2²),
y_t ~ N(a + b t, 1), whose posterior is Gaussian in closed form. A fake posterior samples it
exactly (SBC must pass), or with a bias or too narrow (SBC must fail).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

import nlme_ppl as nlp
from tests.linear_gaussian import conjugate_posterior
from nlme_ppl.diagnostics import (
    SBCResult,
    posterior_contraction_and_zscores,
    sbc,
    sbc_check,
    sbc_ranks,
    simultaneous_band,
)

PRIOR_SD = np.array([1.0, 2.0])
TIMES = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
ROOT = Path(__file__).resolve().parents[2]


def _program(design, obs=None):
    a = numpyro.sample("a", dist.Normal(0.0, PRIOR_SD[0]))
    b = numpyro.sample("b", dist.Normal(0.0, PRIOR_SD[1]))
    numpyro.sample("obs", dist.Normal(a + b * design["times"], 1.0).mask(design["mask"]).to_event(1), obs=obs)


def _design_prior(key, n):
    """Each individual keeps its first 2..6 observations, so the mask matters."""
    n_obs = jax.random.randint(key, (n,), 2, len(TIMES) + 1)
    mask = jnp.arange(len(TIMES))[None, :] < n_obs[:, None]
    return {"times": jnp.broadcast_to(jnp.asarray(TIMES), (n, len(TIMES))), "mask": mask}


def linear_gaussian_model():
    return nlp.models.IndividualModel(_program, {"times": TIMES}, name="linear_gaussian", design_prior=_design_prior)


def exact_posterior(data):
    """Closed-form posterior mean `(N, 2)` and covariance `(N, 2, 2)` given a Dataset."""
    return conjugate_posterior(data.times, data.values, data.mask, prior_sd=PRIOR_SD, sigma=1.0)


class FakePosterior:
    """Samples the exact posterior, optionally shifted by `shift` posterior sds or scaled by `scale`."""

    def __init__(self, model, *, shift=(0.0, 0.0), scale=1.0):
        self.model = model
        self.param_names = model.param_names
        self.shift = np.asarray(shift, dtype=np.float64)
        self.scale = scale

    def sample(self, data, key, *, num_draws):
        mean, cov = exact_posterior(data)
        sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        chol = np.linalg.cholesky(cov)
        eps = np.asarray(jax.random.normal(key, (data.num_individuals, num_draws, 2), dtype=jnp.float64))
        draws = mean[:, None, :] + self.scale * np.einsum("nkl,nml->nmk", chol, eps)
        return draws + (self.shift * sd)[:, None, :]


class GridPosterior:
    """Deterministic 'draws': the same grid for every data set, so ranks are known exactly."""

    def __init__(self, names):
        self.param_names = names

    def sample(self, data, key, *, num_draws):
        grid = np.linspace(-3.0, 3.0, num_draws)
        return np.broadcast_to(grid[None, :, None], (data.num_individuals, num_draws, len(self.param_names))).copy()


@pytest.fixture(scope="module")
def model():
    return linear_gaussian_model()


@pytest.fixture(scope="module")
def sims(model):
    return nlp.simulate(model, jax.random.key(1), num_simulations=500, progress=False)


# ---------------------------------------------------------------- the band itself


def test_band_has_stated_simultaneous_coverage():
    """Uniform ranks leave the band with probability 1 - prob (checked on 4000 replicates)."""
    n, L, reps = 200, 50, 4000
    rng = np.random.default_rng(0)
    ranks = rng.integers(0, L + 1, size=(n, reps))  # each column one replicate SBC run
    for prob, (lo, hi) in {0.99: (0.004, 0.018), 0.9: (0.08, 0.12)}.items():
        res = sbc_check(ranks, L, prob=prob)
        reject = 1.0 - np.mean(list(res.passed.values()))
        # expected 1 - prob; binomial sd 0.0016 (0.99) and 0.0047 (0.9), plus the band's own MC error
        assert lo < reject < hi, (prob, reject)


def test_band_is_wider_than_pointwise_and_symmetric():
    n, L = 500, 100
    lower, upper, gamma = simultaneous_band(n, L, prob=0.99)
    z = np.arange(1, L + 1) / (L + 1)
    assert 0.99 < gamma < 1.0  # a simultaneous band needs a higher pointwise level
    pw_lo = stats.binom.ppf(0.005, n, z) / n
    pw_hi = stats.binom.ppf(0.995, n, z) / n
    assert np.all(lower <= pw_lo) and np.all(upper >= pw_hi)
    assert np.all(lower <= z) and np.all(upper >= z)
    # mirror-symmetric: the band above z equals the band below at 1 - z, up to the 1/n grid
    np.testing.assert_allclose((upper - z), (z - lower)[::-1], atol=2.0 / n + 1e-12)
    # half-width near Kolmogorov-Smirnov's 99% value 1.63/sqrt(n) (Säilynoja's band is a bit narrower in the middle)
    assert 0.8 * 1.63 / np.sqrt(n) < np.max(upper - lower) / 2 < 1.1 * 1.63 / np.sqrt(n)


# ---------------------------------------------------------------- sbc_check on given ranks


def test_uniform_ranks_pass():
    rng = np.random.default_rng(3)
    res = sbc_check(rng.integers(0, 101, size=(500, 4)), 100, param_names=("w", "x", "y", "z"))
    assert res.all_passed
    assert all(d < 0.07 for d in res.max_deviation.values())  # band half-width is ~0.078
    table = res.table()
    assert list(table.index) == ["w", "x", "y", "z"] and table["passed"].all()
    np.testing.assert_allclose(table["mean_rank_fraction"], 0.5, atol=0.05)


def test_overconfident_ranks_fail_with_expected_deviation():
    """Truth ~ N(0, 1) ranked among draws ~ N(0, 0.5²): ECDF(u) = Φ(0.5 Φ⁻¹(u))."""
    rng = np.random.default_rng(4)
    n, L, s = 500, 100, 0.5
    truth = rng.normal(size=(n, 1))
    draws = s * rng.normal(size=(n, L))
    ranks = (draws < truth).sum(axis=1, keepdims=True)
    res = sbc_check(ranks, L)
    assert not res.passed["param_0"] and not res.all_passed
    u = np.arange(1, L + 1) / (L + 1)
    expected = np.max(np.abs(stats.norm.cdf(s * stats.norm.ppf(u)) - u))  # 0.137
    assert abs(res.max_deviation["param_0"] - expected) < 0.05


def test_rank_checks():
    with pytest.raises(ValueError, match="0..10"):
        sbc_check(np.array([[0], [11]]), 10)
    with pytest.raises(ValueError, match="ranks\\[:, None\\]"):
        sbc_check(np.arange(10), 10)
    with pytest.raises(TypeError, match="integers"):
        sbc_check(np.array([[0.5], [1.0]]), 10)
    with pytest.raises(ValueError, match="strictly between"):
        sbc_check(np.zeros((5, 1), int), 10, prob=1.0)
    with pytest.raises(ValueError, match="2 parameter names"):
        sbc_check(np.zeros((5, 1), int), 10, param_names=("a", "b"))


# ---------------------------------------------------------------- ranks from a posterior


def test_sbc_ranks_exact_counts_and_chunking(model, sims):
    post = GridPosterior(model.param_names)
    grid = np.linspace(-3.0, 3.0, 40)
    expected = (grid[None, :, None] < np.asarray(sims.params)[:, None, :]).sum(axis=1)
    for chunk in (7, 1000):
        ranks = sbc_ranks(post, sims, jax.random.key(0), num_draws=40, chunk_size=chunk)
        assert ranks.shape == (len(sims), 2) and np.issubdtype(ranks.dtype, np.integer)
        np.testing.assert_array_equal(ranks, expected)


def test_exact_posterior_passes(model, sims):
    ranks = sbc_ranks(FakePosterior(model), sims, jax.random.key(2), num_draws=100, chunk_size=128)
    res = sbc_check(ranks, 100, param_names=model.param_names)
    assert res.all_passed, res.table()
    assert all(d < 0.07 for d in res.max_deviation.values())


@pytest.mark.parametrize(
    "shift, scale, fails",
    [((0.8, 0.0), 1.0, {"a"}), ((0.0, -0.8), 1.0, {"b"}), ((0.0, 0.0), 0.5, {"a", "b"})],
    ids=["a-biased", "b-biased", "overconfident"],
)
def test_miscalibrated_posterior_fails(model, sims, shift, scale, fails):
    post = FakePosterior(model, shift=shift, scale=scale)
    ranks = sbc_ranks(post, sims, jax.random.key(2), num_draws=100)
    res = sbc_check(ranks, 100, param_names=model.param_names)
    assert {p for p, ok in res.passed.items() if not ok} == fails
    for p in fails:
        assert res.max_deviation[p] > 0.12  # measured ~0.3 (0.8 sd shift) and ~0.18 (sd halved); band half-width 0.078


def test_sbc_end_to_end_with_contraction_and_plot(model, tmp_path):
    res = sbc(FakePosterior(model), model, jax.random.key(5), num_simulations=500, num_draws=100)
    assert isinstance(res, SBCResult) and res.all_passed and res.num_simulations == 500
    table = res.table()
    # z-scores of an exact posterior: mean 0 (sd 1/sqrt(500) = 0.045), sd 1 (+ small M=100 inflation)
    np.testing.assert_allclose(table["zscore_mean"], 0.0, atol=0.15)
    np.testing.assert_allclose(table["zscore_sd"], 1.0, atol=0.1)
    # contraction: median over designs of 1 - posterior var / prior var, against the closed form
    sims = nlp.simulate(model, jax.random.split(jax.random.key(5))[0], num_simulations=500, progress=False)
    _, cov = exact_posterior(sims.data)
    exact = np.median(1.0 - np.diagonal(cov, axis1=1, axis2=2) / PRIOR_SD**2, axis=0)
    np.testing.assert_allclose(table["contraction_median"], exact, atol=0.05)
    path = tmp_path / "sub" / "sbc.png"
    fig = res.plot(path)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    assert fig.axes[0].get_title().startswith("a: PASS")
    assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_shape_and_name_checks(model, sims):
    class Wrong(GridPosterior):
        def sample(self, data, key, *, num_draws):
            return super().sample(data, key, num_draws=num_draws)[:, :-1]

    with pytest.raises(ValueError, match="expected"):
        sbc_ranks(Wrong(model.param_names), sims, jax.random.key(0), num_draws=10)
    with pytest.raises(ValueError, match="differ"):
        sbc_ranks(GridPosterior(("x", "y")), sims, jax.random.key(0), num_draws=10)
    with pytest.raises(TypeError, match="random key"):
        sbc_ranks(GridPosterior(model.param_names), sims, 0, num_draws=10)


# ---------------------------------------------------------------- contraction and z-scores


def test_contraction_and_zscores_known_answer():
    rng = np.random.default_rng(6)
    n, M, k = 5, 50, 3
    e = rng.normal(size=(n, M, k))
    e = (e - e.mean(1, keepdims=True)) / e.std(1, ddof=1, keepdims=True)  # exactly mean 0, sd 1
    mean, sd = rng.normal(size=(n, k)), rng.uniform(0.1, 1.0, size=(n, k))
    truth, prior_sd = rng.normal(size=(n, k)), np.array([1.0, 2.0, 0.5])
    out = posterior_contraction_and_zscores(mean[:, None] + sd[:, None] * e, truth, prior_sd)
    np.testing.assert_allclose(out["contraction"], 1 - sd**2 / prior_sd**2, rtol=1e-10)
    np.testing.assert_allclose(out["zscore"], (mean - truth) / sd, rtol=1e-10)
    with pytest.raises(ValueError, match="truths"):
        posterior_contraction_and_zscores(e, truth[:2], prior_sd)


# ---------------------------------------------------------------- the script


def _script():
    spec = importlib.util.spec_from_file_location("sbc_pretrained", ROOT / "scripts" / "sbc_pretrained.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("shift, code", [((0.0, 0.0), 0), ((1.0, 0.0), 1)], ids=["calibrated", "biased"])
def test_script_smoke(model, tmp_path, monkeypatch, capsys, shift, code):
    mod = _script()
    monkeypatch.setattr(mod, "_load", lambda name: FakePosterior(model, shift=shift))
    out = tmp_path / "sbc.png"
    argv = ["--model", "linear_gaussian", "--num-simulations", "300", "--num-draws", "50", "--out", str(out)]
    assert mod.main(argv) == code
    assert out.stat().st_size > 10_000
    printed = capsys.readouterr()
    assert "max_deviation" in printed.out and ("FAILED: a" in printed.err) == bool(code)
