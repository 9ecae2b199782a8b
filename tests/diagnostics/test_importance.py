"""Importance-weight diagnostics against known answers.

- Weights drawn from a Pareto law of known shape: the PSIS k̂ recovers the shape (this pins
  down the sign convention of ArviZ's `psislw`).
- Draws φ ~ N(0, 1) reweighted to N(0, 1) / N(0, 3²): k is low and the ESS fraction equals
  its closed form (1 + 4a)^½ / (1 + 2a) with a = (1 - 1/9) / 2, i.e. 15/17.
- A population far narrower than the draws: k > 0.7 and a warning naming the individuals.
- End to end on the linear-Gaussian model with its exact posterior as estimator.
"""

from __future__ import annotations

import re
import warnings

import jax
import numpy as np
import pytest
from scipy import integrate, stats

import nlme_ppl as nlp
from nlme_ppl.diagnostics import ImportanceDiagnostics, SurrogateWarning, importance_diagnostics, importance_from_fit
from nlme_ppl.likelihood import prepare_draws
from tests import linear_gaussian as lg

TRAIN_SD = 3.0


def _gaussian_log_w(key, n, m, pop_sd):
    phi = np.asarray(jax.random.normal(key, (n, m), dtype=np.float64))
    return stats.norm(0.0, pop_sd).logpdf(phi) - stats.norm(0.0, TRAIN_SD).logpdf(phi)


@pytest.mark.parametrize("shape", [0.3, 0.9])
def test_pareto_k_recovers_known_tail_shape(shape):
    # w ~ Pareto(alpha = 1 / shape) has generalized-Pareto tail shape k = shape.
    rng = np.random.default_rng(0)
    w = rng.pareto(1.0 / shape, size=(40, 4000)) + 1.0
    diag = importance_diagnostics(np.log(w))
    assert abs(np.mean(diag.pareto_k) - shape) < 0.06
    assert np.std(diag.pareto_k) < 0.2


def test_good_overlap_low_k_and_closed_form_ess():
    diag = importance_diagnostics(_gaussian_log_w(jax.random.key(0), 200, 100, 1.0))
    assert np.all(diag.pareto_k < 0.5)
    a = (1 - 1 / TRAIN_SD**2) / 2
    expected = np.sqrt(1 + 4 * a) / (1 + 2 * a)  # (E w)² / E w² under φ ~ N(0, 1)
    # the closed form against numerical integration of the moments of w = N(φ; 0, 1) / N(φ; 0, 3²)
    log_w = lambda x: stats.norm.logpdf(x) - stats.norm.logpdf(x, scale=TRAIN_SD)  # noqa: E731
    m1, m2 = (integrate.quad(lambda x, p=p: np.exp(stats.norm.logpdf(x) + p * log_w(x)), -np.inf, np.inf)[0] for p in (1, 2))
    np.testing.assert_allclose(m1**2 / m2, expected, rtol=1e-8)  # 15/17
    assert abs(np.mean(diag.ess) / diag.num_draws - expected) < 0.02
    assert diag.bad() == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diag.warn()  # nothing to warn about


def test_narrow_population_flagged_and_warned():
    n = 15
    ids = [f"subj-{i}" for i in range(n)]
    diag = importance_diagnostics(_gaussian_log_w(jax.random.key(1), n, 100, 0.01), ids=ids)
    assert np.all(diag.pareto_k > 0.7)
    assert np.all(diag.ess < 5)
    assert diag.bad() == tuple(ids)
    table = diag.table()
    assert list(table.columns) == ["pareto_k", "ess", "ess_fraction", "flag", "draws"]
    assert table.index.name == "id" and list(table.index) == ids
    assert table["flag"].all()
    np.testing.assert_allclose(table["ess_fraction"], diag.ess / 100)
    with pytest.warns(SurrogateWarning) as record:
        diag.warn()
    assert len(record) == 1
    msg = str(record[0].message)
    assert f"for {n} of {n} individuals" in msg
    assert "'subj-0'" in msg and "'subj-9'" in msg and "'subj-10'" not in msg  # names 10, counts the rest
    assert "and 5 more" in msg
    assert "num_draws" in msg and "training prior" in msg


def test_threshold_selects_individuals():
    lw = np.concatenate(
        [_gaussian_log_w(jax.random.key(2), 3, 100, 1.0), _gaussian_log_w(jax.random.key(3), 2, 100, 0.01)]
    )
    diag = importance_diagnostics(lw, ids=["a", "b", "c", "d", "e"])
    assert diag.bad() == ("d", "e")
    assert diag.bad(threshold=np.inf) == ()
    assert list(diag.table()["flag"]) == [False, False, False, True, True]
    with pytest.warns(SurrogateWarning, match=r"2 of 5 individuals: 'd', 'e'\."):
        diag.warn()


def test_ess_hand_computation():
    rng = np.random.default_rng(3)
    w = rng.gamma(0.5, size=(4, 30))
    w[1, :10] = 0.0  # zero weights (log w = -inf) are allowed
    with np.errstate(divide="ignore"):
        log_w = np.log(w) + 700.0  # a large offset must not overflow
    diag = importance_diagnostics(log_w)
    hand = w.sum(1) ** 2 / (w**2).sum(1)
    np.testing.assert_allclose(diag.ess, hand, rtol=1e-12)
    assert diag.ids == ("1", "2", "3", "4")


def test_degenerate_rows():
    lw = np.zeros((3, 50))
    lw[1] = -np.inf  # no draw reaches the population
    lw[2, :] = -np.inf
    lw[2, 0] = 0.0  # a single draw carries all the weight
    diag = importance_diagnostics(lw, ids=["flat", "dead", "one"])
    assert diag.pareto_k[0] == -np.inf and diag.ess[0] == pytest.approx(50)
    assert diag.pareto_k[1] == np.inf and diag.ess[1] == 0.0
    assert diag.pareto_k[2] == np.inf and diag.ess[2] == pytest.approx(1.0)
    assert diag.bad() == ("dead", "one")


def test_invalid_inputs():
    with pytest.raises(ValueError, match=r"shape \(individuals, draws\)"):
        importance_diagnostics(np.zeros(100))
    with pytest.raises(ValueError, match="at least 25 draws"):
        importance_diagnostics(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="got 1 ids for 2 rows"):
        importance_diagnostics(np.zeros((2, 100)), ids=["a"])
    lw = np.zeros((2, 100))
    lw[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"individual 'b' \(row 1\) at draw 7"):
        importance_diagnostics(lw, ids=["a", "b"])
    with pytest.raises(ValueError, match="inconsistent ImportanceDiagnostics"):
        ImportanceDiagnostics(ids=("a",), pareto_k=np.zeros(2), ess=np.zeros(2), num_draws=100)


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def lg_setup():
    model = lg.model()
    mean, sd = np.array([1.0, -0.5]), np.array([0.8, 0.6])
    data, _ = lg.simulate_population(jax.random.key(4), 40, mean, sd)
    draws = prepare_draws(lg.ExactPosterior(model), data, jax.random.key(5), num_draws=200)
    return model, data, draws, mean, sd


def test_exact_posterior_at_truth_has_low_k(lg_setup):
    model, data, draws, mean, sd = lg_setup
    pop = nlp.populations.gaussian(model)
    diag = importance_from_fit(pop, draws, {"mean": mean, "sd": sd}, data)
    assert diag.ids == data.ids and diag.num_draws == 200
    assert np.all(diag.pareto_k < 0.7), diag.table().sort_values("pareto_k").tail()
    assert np.median(diag.ess) > 50
    # Same weights as log_weights gives directly.
    lw = np.asarray(nlp.log_weights(pop, draws, {"mean": mean, "sd": sd}, data))
    np.testing.assert_array_equal(diag.ess, importance_diagnostics(lw, ids=data.ids).ess)


def test_full_covariance_population_at_truth(lg_setup):
    model, data, draws, mean, sd = lg_setup
    pop = nlp.populations.gaussian(model, covariance="full")
    diag = importance_from_fit(pop, draws, {"mean": mean, "sd": sd, "corr_chol": np.eye(2)}, data)
    assert np.all(diag.pareto_k < 0.7)


def test_tiny_population_sd_flags_most(lg_setup):
    model, data, draws, mean, _ = lg_setup
    pop = nlp.populations.gaussian(model)

    class Fit:  # stands in for a MAPResult: only `site_values` is read
        site_values = {"mean": mean, "sd": np.full(2, 1e-3)}

    diag = importance_from_fit(pop, draws, Fit(), data)
    assert np.mean(diag.pareto_k > 0.7) > 0.8
    with pytest.warns(SurrogateWarning) as record:
        diag.warn()
    listed = re.search(r"individuals: (.*?)\. Their", str(record[0].message)).group(1)
    named = re.findall(r"'([^']+)'", listed)
    assert len(named) == min(10, len(diag.bad())) and set(named) <= set(diag.bad())


def test_importance_from_fit_checks(lg_setup):
    model, data, draws, mean, sd = lg_setup
    pop = nlp.populations.gaussian(model)
    with pytest.raises(ValueError, match=r"no value given for population site\(s\) \['sd'\]"):
        importance_from_fit(pop, draws, {"mean": mean}, data)
    with pytest.raises(ValueError, match="draws` hold 40 individuals but `data` has 5"):
        importance_from_fit(pop, draws, {"mean": mean, "sd": sd}, data.subset(np.arange(5)))
    with pytest.raises(TypeError, match="MAPResult or a dict"):
        importance_from_fit(pop, draws, [mean, sd], data)



@pytest.mark.parametrize("num_draws", [100, 300, 1000])
def test_batched_pareto_fit_equals_arviz(num_draws):
    """The batched k̂ is ArviZ's PSIS k̂ (`arviz_stats` fits one row at a time): on Gaussian,
    Cauchy and Pareto-tailed log weights of 300 rows, equal to 1e-12 (measured 2e-15), with
    NaN and inf in the same rows."""
    from arviz_stats.base import array_stats

    from nlme_ppl.diagnostics._importance import _psis_khat

    rng = np.random.default_rng(num_draws)
    lw = rng.standard_normal((300, num_draws)) * rng.uniform(0.1, 6.0, (300, 1))
    lw[:20] = rng.standard_t(1, (20, num_draws))
    lw[20:25] = np.log(rng.pareto(0.8, (5, num_draws)) + 1e-300)
    lw -= lw.max(axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        _, ref = array_stats.psislw(-lw, r_eff=1.0, axis=-1)
    ours, ref = _psis_khat(lw), np.asarray(ref, np.float64)
    # Where the tail's weights are subnormal (Cauchy log weights reach -709), ArviZ's grid is all
    # NaN and it returns the prior's k = 5 / (n + 10); the batched fit says NaN or inf (no fit),
    # which `importance_diagnostics` reports as k = inf, as documented.
    tail = int(np.floor(3 * np.sqrt(num_draws))) if num_draws > 225 else num_draws // 5
    subnormal = np.sort(lw, axis=1)[:, -tail - 1] < np.log(np.finfo(float).tiny)
    assert not np.any(np.isfinite(ours[subnormal]))
    assert np.all(np.isinf(importance_diagnostics(lw[subnormal]).pareto_k))
    ours, ref = ours[~subnormal], ref[~subnormal]
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(ref))
    ok = np.isfinite(ref)
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=0, atol=1e-12)
