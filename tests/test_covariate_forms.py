"""Covariate forms of populations.gaussian (Power, Exponential, Linear, Categorical): the
population density against a hand-written closed form, the bounded coefficient's transform,
equivalence with the plain-name form, recovery, and the error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density
from scipy import stats

import nlme_ppl as nlp
from nlme_ppl.populations import Categorical, Exponential, Linear, Power
from tests import linear_gaussian as lg

WT = np.array([50.0, 62.0, 70.0, 81.0, 95.0, 120.0])
AGE = np.array([25.0, 33.0, 40.0, 52.0, 61.0, 78.0])
CRCL = np.array([35.0, 60.0, 90.0, 100.0, 120.0, 140.0])
SEX = np.array([1.0, 2.0, 3.0, 2.0, 1.0, 3.0])
X = np.array([-1.0, 0.0, 0.5, 2.0, -0.3, 1.1])


def _data(n=6, **covariates):
    cov = dict(WT=WT, AGE=AGE, CRCL=CRCL, SEX=SEX, x=X)
    cov.update(covariates)
    return nlp.Dataset.from_arrays(lg.TIMES, np.zeros((n, lg.TIMES.size))).with_covariates(**cov)


COVARIATES = {
    "a": [Power("WT", ref=70.0, exponent=0.75), Categorical("SEX", levels=(1, 2, 3), reference=2),
          Exponential("AGE", ref=40.0, coefficient=-0.01), Linear("CRCL", ref=100.0, limits=(20, 150), coefficient=0.004)],
    "b": [Power("WT", ref=70.0), Exponential("AGE", ref=40.0), Linear("CRCL", ref=100.0, limits=(20, 150)), "x"],
}  # fmt: skip


def test_density_of_every_form_matches_closed_form():
    """log p(mean, sd, beta, φ) of the program against scipy, with each individual's mean written out by hand."""
    pop = nlp.populations.gaussian(lg.model(), covariates=COVARIATES)
    assert pop.coords["beta"] == ("a,SEX=1", "a,SEX=3", "b,WT", "b,AGE", "b,CRCL", "b,x")  # fixed terms: no coefficient
    mean, sd = jnp.array([0.3, -0.2]), jnp.array([0.5, 0.8])
    beta = jnp.array([0.2, -0.3, 0.9, 0.02, 0.005, -0.4])
    phi = np.array([[0.1, 0.2, 0.3, 0.4, -0.2, 0.7], [-1.0, 0.0, 1.0, 2.0, 0.5, -0.5]])
    ld, tr = log_density(pop, (_data(),), {}, {"mean": mean, "sd": sd, "beta": beta, "a": phi[0], "b": phi[1]})
    assert {k for k, m in tr.items() if m["type"] == "sample" and not m["is_observed"]} == {"mean", "sd", "beta", "a", "b"}

    mu_a = 0.3 + 0.75 * np.log(WT / 70) + 0.2 * (SEX == 1) - 0.3 * (SEX == 3) - 0.01 * (AGE - 40) + np.log(1 + 0.004 * (CRCL - 100))
    mu_b = -0.2 + 0.9 * np.log(WT / 70) + 0.02 * (AGE - 40) + np.log(1 + 0.005 * (CRCL - 100)) - 0.4 * X
    lo, hi = -1 / (150 - 100), 1 / (100 - 20)  # the linear coefficient's admissible interval on the limits
    prior_beta = stats.norm(0, 1).logpdf(np.delete(beta, 4)).sum() + stats.truncnorm(lo, hi, 0, 1).logpdf(beta[4])
    expected = (
        stats.norm(0, lg.S0).logpdf(mean).sum() + stats.halfnorm().logpdf(sd).sum() + prior_beta
        + stats.norm(mu_a, 0.5).logpdf(phi[0]).sum() + stats.norm(mu_b, 0.8).logpdf(phi[1]).sum()
    )
    assert float(ld) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(pop.individual_means(mean, beta, _data()), np.stack([mu_a, mu_b], -1), rtol=1e-12)

    # a fixed parameter takes the same shifted mean, and the full covariance the same means
    full = nlp.populations.gaussian(lg.model(), covariance="full", covariates=COVARIATES)
    chol = jnp.linalg.cholesky(jnp.array([[1.0, 0.3], [0.3, 1.0]]))
    ld, tr = log_density(full, (_data(),), {}, {"mean": mean, "sd": sd, "beta": beta, "corr_chol": chol, "phi": phi.T})
    cov = np.diag(sd) @ np.array([[1, 0.3], [0.3, 1]]) @ np.diag(sd)
    mvn = sum(stats.multivariate_normal([mu_a[i], mu_b[i]], cov).logpdf(phi.T[i]) for i in range(6))
    base = stats.norm(0, lg.S0).logpdf(mean).sum() + stats.halfnorm().logpdf(sd).sum() + prior_beta
    assert float(ld) == pytest.approx(base + float(tr["corr_chol"]["fn"].log_prob(chol)) + mvn, rel=1e-12)


def test_linear_coefficient_stays_in_its_interval():
    """The bounded prior's bijection: inside the interval for every real z, invertible, and its
    log-Jacobian that of jax; unbounded coefficients are left as they are."""
    pop = nlp.populations.gaussian(lg.model(), covariates=COVARIATES)
    _, tr = log_density(pop, (_data(),), {}, {"mean": jnp.zeros(2), "sd": jnp.ones(2), "beta": jnp.zeros(6), "a": jnp.zeros(6), "b": jnp.zeros(6)})
    t = biject_to(tr["beta"]["fn"].support)
    z = jnp.array([-30.0, 40.0, 0.7, -1.3, 30.0, 2.0])
    y = t(z)
    assert -1 / 50 < float(y[4]) < 1 / 80 and float(t(z.at[4].set(-30.0))[4]) > -1 / 50
    np.testing.assert_allclose(np.delete(np.asarray(y), 4), np.delete(np.asarray(z), 4))
    for zz in (z.at[4].set(-8.0), jnp.linspace(-3, 3, 6)):  # (at |z| = 30 the sigmoid saturates in float64)
        np.testing.assert_allclose(t.inv(t(zz)), zz, rtol=1e-10)
        jac = jax.jacobian(t)(zz)
        assert float(jnp.sum(t.log_abs_det_jacobian(zz, t(zz)))) == pytest.approx(float(jnp.linalg.slogdet(jac)[1]), rel=1e-10)
    # a one-sided interval (ref at the lower limit): θ > −1/(high − ref)
    one = nlp.populations.gaussian(lg.model(), covariates={"a": Linear("CRCL", ref=20.0, limits=(20, 150))})
    _, tr = log_density(one, (_data(),), {}, {"mean": jnp.zeros(2), "sd": jnp.ones(2), "beta": jnp.zeros(1), "a": jnp.zeros(6), "b": jnp.zeros(6)})
    t = biject_to(tr["beta"]["fn"].support)
    assert float(t(jnp.array([-40.0]))[0]) > -1 / 130 and float(t(jnp.array([5.0]))[0]) == pytest.approx(-1 / 130 + np.exp(5.0))
    assert float(tr["beta"]["fn"].log_prob(jnp.array([0.1]))) == pytest.approx(stats.truncnorm(-1 / 130, np.inf).logpdf(0.1))


def _lg_population(n, key, *, exponent=0.75, sex_effect=-0.5, linear=0.006, expo=-0.02):
    """a_i = 1 + exponent·log(WT/70) + sex_effect·[SEX=2] + 0.4 η, b_i = −0.5 + log(1 + linear (CRCL − 100)) + expo (AGE − 40) + 0.3 η'."""
    rng = np.random.default_rng(key)
    cov = {"WT": rng.lognormal(np.log(70), 0.3, n), "SEX": rng.integers(1, 3, n).astype(float),
           "CRCL": rng.uniform(30, 150, n), "AGE": rng.uniform(20, 80, n)}  # fmt: skip
    a = 1.0 + exponent * np.log(cov["WT"] / 70) + sex_effect * (cov["SEX"] == 2) + 0.4 * rng.standard_normal(n)
    b = -0.5 + np.log1p(linear * (cov["CRCL"] - 100)) + expo * (cov["AGE"] - 40) + 0.3 * rng.standard_normal(n)
    y = a[:, None] + b[:, None] * lg.TIMES + lg.SIGMA * rng.standard_normal((n, lg.TIMES.size))
    return nlp.Dataset.from_arrays(lg.TIMES, y, covariates=cov)


def _fit(covariates, data, key=7):
    model = lg.model()
    pop = nlp.populations.gaussian(model, covariates=covariates)
    return nlp.fit_map(pop, lg.ExactPosterior(model), data, jax.random.key(key), num_draws=200, num_starts=1, diagnose=False, max_draws=200)


def test_forms_equal_their_plain_name_parametrisation():
    """Power with an estimated exponent on WT is the plain name on log(WT/70), and Categorical the
    plain name on the 0/1 indicator: the same fit, to rounding."""
    data = _lg_population(120, 1)
    wt, sex = np.asarray(data.covariates["WT"]), np.asarray(data.covariates["SEX"])
    forms = _fit({"a": [Power("WT", ref=70.0), Categorical("SEX", levels=(1, 2))], "b": Exponential("AGE", ref=40.0)}, data)
    plain = _fit({"a": ["log_wt70", "sex2"], "b": "age40"}, data.with_covariates(log_wt70=np.log(wt / 70), sex2=(sex == 2) * 1.0,
                                                                                  age40=np.asarray(data.covariates["AGE"]) - 40))  # fmt: skip
    rename = {"beta[a,WT]": "beta[a,log_wt70]", "beta[a,SEX=2]": "beta[a,sex2]", "beta[b,AGE]": "beta[b,age40]"}
    assert sorted(rename.get(k, k) for k in forms.params) == sorted(plain.params)
    for k, v in forms.params.items():
        assert v == pytest.approx(plain.params[rename.get(k, k)], rel=1e-8, abs=1e-10), k
    assert forms.log_likelihood == pytest.approx(plain.log_likelihood, rel=1e-10)


def test_recovery_on_the_linear_gaussian_model():
    """N = 400 with the exact individual posteriors: a fixed exponent 0.75 (no coefficient), a
    categorical effect, and estimated linear and exponential effects, recovered within 3 SE
    (measured: 1.00, −0.90, −1.42, −0.91, −0.16 SE for the five labels below); and the fixed
    exponent is used: fixing it at 0 instead costs 45.3 log-likelihood units (asserted > 25)."""
    data = _lg_population(400, 2)
    covariates = {"a": [Power("WT", ref=70.0, exponent=0.75), Categorical("SEX", levels=(1, 2))],
                  "b": [Linear("CRCL", ref=100.0, limits=(20, 200)), Exponential("AGE", ref=40.0)]}  # fmt: skip
    fit = _fit(covariates, data)
    assert "beta[a,WT]" not in fit.params
    table = fit.table()
    for label, truth in {"beta[a,SEX=2]": -0.5, "beta[b,CRCL]": 0.006, "beta[b,AGE]": -0.02, "mean[a]": 1.0, "mean[b]": -0.5}.items():
        est, se = table.loc[label, "estimate"], table.loc[label, "se"]
        assert abs(est - truth) < 3 * se, (label, est, se)
    covariates["a"][0] = Power("WT", ref=70.0, exponent=0.0)
    assert fit.log_likelihood - _fit(covariates, data).log_likelihood > 25


@pytest.fixture(scope="module")
def pk_case():
    """150 subjects of pk_oral_1cmt: CL ∝ (WT/70)^0.75 · exp(−0.4 [SEX=2]), V ∝ WT/70."""
    model = nlp.models.pk_oral_1cmt()
    rng = np.random.default_rng(0)
    cov = {"WT": rng.lognormal(np.log(70), 0.35, 150), "SEX": rng.integers(1, 3, 150).astype(float)}
    truth_pop = _pk_population(model, 0.75)
    truth = {"mean": {"ka": 0.2, "CL": 1.0, "V": 3.4, "sigma_add": -1.2}, "sd": {"ka": 0.3, "CL": 0.3, "V": 0.2}, "beta": {"CL,SEX=2": -0.4}}
    phi = nlp.simulate_population(truth_pop, truth, jax.random.key(1), num_individuals=150, covariates=cov)
    data = nlp.simulate_data(model, phi, jax.random.key(2), covariates=cov)
    draws = nlp.prepare_draws(nlp.pretrained("pk_oral_1cmt"), data, jax.random.key(3), num_draws=100)
    return model, data, draws


def _pk_population(model, exponent):
    return nlp.populations.gaussian(model, fixed=("sigma_add",), covariates={
        "CL": [Power("WT", ref=70.0, exponent=exponent), Categorical("SEX", levels=(1, 2))], "V": Power("WT", ref=70.0, exponent=1.0)})  # fmt: skip


def test_allometric_recovery_with_the_shipped_estimator(pk_case):
    """The estimated exponent and the sex effect on CL, with V's exponent fixed at 1, by MAP over
    the shipped pk_oral_1cmt estimator. Measured (SE ≈ 0.08 and 0.05): exponent 0.811 (truth
    0.75), sex −0.406 (−0.4), mean[CL] 1.007 (1.0), sd[CL] 0.323 (0.3); tolerances are about
    2.5 SE: 0.2, 0.12, 0.1 and 25%."""
    from nlme_ppl.inference.map import fit_map_draws

    model, data, draws = pk_case
    fit = fit_map_draws(_pk_population(model, None), draws, data, jax.random.key(4), num_starts=1)
    assert fit.params["beta[CL,WT]"] == pytest.approx(0.75, abs=0.2)
    assert fit.params["beta[CL,SEX=2]"] == pytest.approx(-0.4, abs=0.12)
    assert fit.params["mean[CL]"] == pytest.approx(1.0, abs=0.1)
    assert fit.params["mean[V]"] == pytest.approx(3.4, abs=0.1)
    assert fit.params["sd[CL]"] == pytest.approx(0.3, rel=0.25)
    assert not any(k.startswith("beta[V") for k in fit.params)  # V's fixed exponent is no parameter


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "make, match, err",
    [
        (lambda: Power("WT", ref=0.0), r"`Power.ref` must be positive", ValueError),
        (lambda: Power("WT", ref=70, exponent=float("nan")), r"`Power.exponent` must be a finite number", ValueError),
        (lambda: Power(3, ref=70), r"takes the covariate's name", TypeError),
        (lambda: Linear("AGE", ref=40, limits=(90, 18)), r"low < high", ValueError),
        (lambda: Linear("AGE", ref=40, limits=(18, 90), coefficient=-0.5), r"1 \+ θ \(x − 40\) ≤ 0 within limits \(18.0, 90.0\).*\(-0.02, 0.0454", ValueError),
        (lambda: Categorical("SEX", levels=(1, 2), reference=3), r"`Categorical.reference` 3 is not one of the levels", ValueError),
        (lambda: Categorical("SEX", levels=(1,)), r"two or more distinct numbers", ValueError),
        (lambda: nlp.populations.gaussian(lg.model(), covariates={"a": ["WT", Power("WT", ref=70)]}), r"`covariates\['a'\]` lists 'WT' twice", ValueError),
        (lambda: nlp.populations.gaussian(lg.model(), covariates={"a": 3.0}), r"must be covariate names \(strings\) or forms", TypeError),
    ],
)
def test_bad_forms(make, match, err):
    with pytest.raises(err, match=match):
        make()


_PARAMS = {"mean": jnp.zeros(2), "sd": jnp.ones(2), "a": jnp.zeros(6), "b": jnp.zeros(6)}


@pytest.mark.parametrize(
    "spec, covariates, match",
    [
        (Power("WT", ref=70), dict(WT=np.where(WT == 81.0, 0.0, WT)), r"covariate 'WT' of individual '4' is 0 \(1 individual\(s\) in all\): the power effect on a takes log\(WT/70\), which needs WT > 0; fix the value, or use an Exponential or Linear form"),
        (Categorical("SEX", levels=(1, 2)), {}, r"covariate 'SEX' of individual '3' is 3 \(2 individual\(s\) in all\): not one of the levels \('1', '2'\) of the categorical effect on a; add the level"),
        (Linear("AGE", ref=40, limits=(18, 65)), {}, r"covariate 'AGE' of individual '6' is 78 .*outside the limits \(18, 65\) of the linear effect on a; widen `Linear\('AGE', limits=...\)`"),
        (Exponential("HT", ref=170), {}, r"covariate effects on \['HT'\] but the data has covariates \['AGE', 'CRCL', 'SEX', 'WT', 'x'\]"),
    ],
)
def test_bad_covariate_values_name_the_individual(spec, covariates, match):
    pop = nlp.populations.gaussian(lg.model(), covariates={"a": spec})
    n_beta = len(pop.effects)
    params = {**_PARAMS, **({"beta": jnp.zeros(n_beta)} if n_beta else {})}
    with pytest.raises(ValueError, match=match):
        log_density(pop, (_data(**covariates),), {}, params)


def test_non_finite_covariate_names_the_individual():
    """Datasets refuse NaN covariates themselves; a population program given other data (any object
    with `num_individuals` and `covariates`) checks too."""
    from types import SimpleNamespace

    pop = nlp.populations.gaussian(lg.model(), covariates={"a": Power("WT", ref=70)})
    frame = SimpleNamespace(num_individuals=6, covariates={"WT": np.where(WT == 81.0, np.nan, WT)}, ids=("p1", "p2", "p3", "p4", "p5", "p6"))
    with pytest.raises(ValueError, match=r"covariate 'WT' of individual 'p4' is nan .*the covariate effects \['a~WT'\] need a finite value for every individual: impute it"):
        log_density(pop, (frame,), {}, {**_PARAMS, "beta": jnp.zeros(1)})


def test_bad_covariate_values_inside_jit():
    """Traced data (a jitted objective) cannot name the individual; the error names the covariate and the form."""
    pop = nlp.populations.gaussian(lg.model(), covariates={"a": Power("WT", ref=70)})
    data = _data(WT=np.where(WT == 81.0, -1.0, WT))
    f = jax.jit(lambda d: log_density(pop, (d,), {}, {**_PARAMS, "beta": jnp.zeros(1)})[0])
    with pytest.raises(Exception, match=r"a value of covariate 'WT' is invalid: the power effect on a takes log\(WT/70\), which needs WT > 0.*outside jit to name"):
        f(data)


def test_categorical_levels_from_data():
    cat = Categorical.from_data(_data(), "SEX", reference=2)
    assert cat.levels == (1.0, 2.0, 3.0) and cat.reference == 2.0
    pop = nlp.populations.gaussian(lg.model(), covariates={"b": cat})
    assert pop.coords["beta"] == ("b,SEX=1", "b,SEX=3")
    with pytest.raises(ValueError, match=r"the data has no covariate 'RACE'"):
        Categorical.from_data(_data(), "RACE")
