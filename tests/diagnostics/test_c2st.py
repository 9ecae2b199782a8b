"""Classifier two-sample test against known answers.

For P = N(0, I) and Q = N(d e_1, I) with equal sample sizes, the best possible classifier
(the Bayes rule) has accuracy Φ(d / 2); a well-trained classifier reaches it within a few
points, and its cross-validated accuracy is about 0.5 when d = 0.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import stats

from nlme_ppl.diagnostics import c2st, c2st_individuals
from tests import linear_gaussian as lg

SHIFTS = (0.0, 1.0, 2.0, 4.0)


def _pair(shift, *, n=1000, dim=2, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n, dim))
    q = rng.standard_normal((n, dim))
    q[:, 0] += shift
    return p, q


@pytest.fixture(scope="module")
def accuracies():
    return {d: c2st(*_pair(d, seed=int(10 * d))) for d in SHIFTS}


def test_same_distribution_is_chance(accuracies):
    assert abs(accuracies[0.0] - 0.5) < 0.07


def test_well_separated(accuracies):
    assert accuracies[4.0] > 0.9


def test_monotone_in_shift_and_near_bayes_accuracy(accuracies):
    acc = [accuracies[d] for d in SHIFTS]
    assert all(a < b for a, b in zip(acc, acc[1:])), acc
    for d in SHIFTS:
        assert abs(accuracies[d] - stats.norm.cdf(d / 2)) < 0.05, (d, accuracies[d])


def test_deterministic_given_seed_and_random_forest():
    p, q = _pair(2.0, n=300)
    assert c2st(p, q, seed=3) == c2st(p, q, seed=3)
    rf = c2st(p, q, classifier="rf", seed=1)
    assert 0.7 < rf < 0.92  # Bayes accuracy 0.84


def test_unequal_sizes_stay_at_chance():
    rng = np.random.default_rng(5)
    acc = c2st(rng.standard_normal((900, 2)), rng.standard_normal((300, 2)), classifier="rf")
    assert abs(acc - 0.5) < 0.07  # plain accuracy would reward predicting the larger class (0.75)


def test_z_score_makes_scale_irrelevant():
    p, q = _pair(2.0, n=400)
    a = c2st(p, q)
    b = c2st(1e4 * p + 7.0, 1e4 * q + 7.0)
    assert abs(a - b) < 0.03


def test_invalid_inputs():
    p = np.zeros((50, 2))
    with pytest.raises(ValueError, match=r"pass samples_p\[:, None\]"):
        c2st(np.zeros(50), p)
    with pytest.raises(ValueError, match="`samples_p` has 2 columns but `samples_q` has 3"):
        c2st(p, np.zeros((50, 3)))
    with pytest.raises(ValueError, match="`samples_q` has 10 rows; C2ST needs at least 20"):
        c2st(p, np.zeros((10, 2)))
    bad = np.zeros((50, 2))
    bad[4, 1] = np.inf
    with pytest.raises(ValueError, match="row 4, column 1"):
        c2st(p, bad)
    with pytest.raises(ValueError, match="`classifier` must be one of"):
        c2st(p, p, classifier="svm")
    with pytest.raises(ValueError, match="`num_folds` must be between 2"):
        c2st(p, p, num_folds=1)
    with pytest.raises(TypeError, match="numeric array"):
        c2st([["a", "b"]] * 30, p)


def test_c2st_individuals_exact_posterior():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(0), 4, np.array([0.0, 1.0]), np.array([1.0, 1.0]))
    exact = lg.ExactPosterior(model)
    ref = np.asarray(exact.sample(data, jax.random.key(1), num_draws=500))
    rows = {"2": ref[1], "4": ref[3] + np.array([1.0, 0.0])}  # individual 4's reference is shifted
    out = c2st_individuals(exact, data, rows, jax.random.key(2))
    assert list(out) == ["2", "4"]
    assert abs(out["2"] - 0.5) < 0.07
    assert out["4"] > 0.95  # a shift of ~5 posterior sds in `a`
    with pytest.raises(ValueError, match=r"individual\(s\) \['9'\] that are not in the data"):
        c2st_individuals(exact, data, {"9": ref[0]}, jax.random.key(2))
    with pytest.raises(TypeError, match="JAX random key"):
        c2st_individuals(exact, data, rows, 0)
