"""The uncertainty of a fit and its objective function: the absolute log-likelihood against the
closed form (linear-Gaussian) and R `nlme` (Theophylline), the Hessian and sandwich SEs and
their correlation matrix, profile likelihoods and the bootstrap."""

import warnings

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import nlme_ppl as nlp
from tests import linear_gaussian as lg

ROOT = __import__("pathlib").Path(__file__).parents[2]


@pytest.fixture(scope="module")
def linear():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(3), 60, np.array([1.0, -0.5]), np.array([0.6, 0.4]))
    pop = nlp.populations.gaussian(model)
    # a lossy estimator with a density, refined (refine="auto"): the refinement gives the constant
    fit = nlp.fit_map(pop, lg.WideEstimator(model, widen=1.5, shift=0.3), data, jax.random.key(0), num_starts=2)
    return model, data, pop, fit


def _closed_form(data, params):
    mean = np.array([params["mean[a]"], params["mean[b]"]])
    return lg.log_marginal(data, mean, np.diag([params["sd[a]"] ** 2, params["sd[b]"] ** 2]))


def test_absolute_loglik_matches_closed_form(linear):
    _, data, _, fit = linear
    ofv = fit.absolute
    exact = _closed_form(data, fit.params)
    # measured: |error| 0.02 with MC SE 0.03; tolerance 4 MC SEs plus 0.05
    assert abs(ofv.loglik - exact) < 4 * ofv.loglik_mc_se + 0.05, (ofv.loglik, exact, ofv.loglik_mc_se)
    assert ofv.ofv == pytest.approx(-2 * ofv.loglik)
    assert ofv.aic == pytest.approx(ofv.ofv + 2 * 4) and ofv.bic == pytest.approx(ofv.ofv + 4 * np.log(60 * lg.TIMES.size))
    # the constant from the estimator's own density agrees with the refinement's
    other = nlp.objective_function(fit, data, jax.random.key(5), posterior=fit.posterior.base, num_draws=2000)
    assert abs(other.constant - ofv.constant) < 4 * np.hypot(other.constant_mc_se, ofv.constant_mc_se) + 0.05


def test_profile_matches_closed_form_profile(linear):
    _, data, _, fit = linear
    prof = nlp.profile(fit, data, num_points=11)
    ci = prof.intervals()
    assert set(ci.index) == {"mean[a]", "mean[b]", "sd[a]", "sd[b]"} and all(p["converged"].all() for p in prof.profiles.values())
    # the closed-form profile of mean[a]: maximise the exact marginal over the other three
    names = ["mean[a]", "mean[b]", "sd[a]", "sd[b]"]

    def nll(x, held=None):
        p = dict(zip(names, x)) if held is None else dict(zip(names, [held, *x]))
        return -_closed_form(data, p) if min(p["sd[a]"], p["sd[b]"]) > 0 else np.inf

    best = optimize.minimize(nll, [fit.params[n] for n in names], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    q = stats.chi2.ppf(0.95, 1)

    def excess(v):
        r = optimize.minimize(lambda x: nll(x, v), best.x[1:], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
        return 2 * (r.fun - best.fun) - q

    lo = optimize.brentq(excess, best.x[0] - 1.0, best.x[0])
    hi = optimize.brentq(excess, best.x[0], best.x[0] + 1.0)
    # measured: the surrogate's ends within 0.01 of the closed-form ones (interval width 0.33); tolerance 0.03
    assert abs(ci.loc["mean[a]", "lower_95"] - lo) < 0.03 and abs(ci.loc["mean[a]", "upper_95"] - hi) < 0.03, (ci.loc["mean[a]"], lo, hi)
    assert abs(prof.estimate["mean[a]"] - best.x[0]) < 0.02
    # smooth: the deviance of every profile is convex on the same draws (no Monte Carlo jitter)
    for label, p in prof.profiles.items():
        second = np.diff(p["deviance"].to_numpy(), 2)
        assert (second > -1e-6).all(), (label, second)
    assert prof.plot().axes and len(ci.columns) == 7


def test_bootstrap_nonparametric_and_parametric(linear):
    _, data, _, fit = linear
    boot = nlp.bootstrap(fit, data, jax.random.key(1), num_replicates=40)
    assert boot.converged_share == 1.0 and boot.estimates.shape == (40, 4)
    again = nlp.bootstrap(fit, data, jax.random.key(1), num_replicates=40)
    pd.testing.assert_frame_equal(boot.estimates, again.estimates)  # the same key gives the same replicates
    ci = boot.intervals()
    # bootstrap SEs of the means near the Hessian's (measured ratios 0.9-1.1 at 40 replicates; tolerance 35%)
    for label in ("mean[a]", "mean[b]"):
        assert ci.loc[label, "bootstrap_se"] == pytest.approx(fit.stderr[label], rel=0.35)
        assert ci.loc[label, "lower_90"] < fit.params[label] < ci.loc[label, "upper_90"]
    par = nlp.bootstrap(fit, data, jax.random.key(2), kind="parametric", num_replicates=4)
    assert par.estimates.shape == (4, 4) and np.isfinite(par.estimates.to_numpy()).all()
    with pytest.raises(ValueError, match="kind"):
        nlp.bootstrap(fit, data, jax.random.key(2), kind="jackknife")


@pytest.mark.heavy  # about a minute; tests/test_cli.py checks the same figures through `nlme-ppl fit`
def test_theophylline_against_r_nlme():
    """SEs, correlation, sandwich and the log-likelihood of the Theophylline fit against R nlme
    (examples/theophylline_nlme.R: ML, diagonal ka/CL/V, additive error)."""
    ref = pd.read_csv(ROOT / "examples" / "data" / "theophylline_nlme.csv").set_index("parameter")["se"]
    ll_ref = pd.read_csv(ROOT / "examples" / "data" / "theophylline_nlme.csv").set_index("parameter").loc["loglik", "estimate"]
    model = nlp.models.pk_oral_1cmt()
    data = nlp.read_nonmem(ROOT / "examples" / "data" / "theophylline.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nlp.diagnostics.SurrogateWarning)
        fit = nlp.fit_map(nlp.populations.gaussian(model, fixed=("sigma_add",)), nlp.pretrained("pk_oral_1cmt"), data, jax.random.key(0))
    # measured: ka 0.190 vs 0.190, CL 0.083 vs 0.084, V 0.053 vs 0.046 (+16%); target 25%
    for label in ("mean[ka]", "mean[CL]", "mean[V]"):
        assert fit.stderr[label] == pytest.approx(ref[label], rel=0.25), label
        assert 0.5 < fit.robust_stderr[label] / fit.stderr[label] < 2.0
    corr = fit.correlation()
    assert np.allclose(np.diag(corr), 1.0) and np.allclose(corr, corr.T) and (np.abs(corr.to_numpy()) <= 1 + 1e-9).all()
    # measured: -180.55 +- 0.41 (an independent IS of the exact likelihood at this estimate: -180.56); R nlme's
    # linearised value is -179.74 (the exact likelihood at nlme's estimate, by the same IS: -180.35)
    assert abs(fit.loglik - ll_ref) < 1.0 and fit.absolute.loglik_mc_se < 0.6
    assert fit.absolute.num_params == 7 and fit.absolute.num_observations == 132
