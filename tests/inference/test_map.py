"""fit_map: user-written population programs, result fields, and bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import nlme_ppl as nlp
from tests import linear_gaussian as lg


@pytest.fixture(scope="module")
def problem():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(11), 200, np.array([0.5, -1.0]), np.array([0.4, 0.3]))
    return model, data, lg.ExactPosterior(model)


def user_population(data):
    """A hand-written program (no init_values): starts come from its prior."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 100.0).expand([2]).to_event(1))
    omega = numpyro.sample("omega", dist.HalfNormal(100.0).expand([2]).to_event(1))
    with numpyro.plate("individuals", data.num_individuals):
        numpyro.sample("a", dist.Normal(mu[0], omega[0]))
        numpyro.sample("b", dist.Normal(mu[1], omega[1]))


def test_user_program_matches_builtin_and_closed_form(problem):
    model, data, post = problem
    fit = nlp.fit_map(user_population, post, data, jax.random.key(0), num_draws=500, num_starts=6)
    mean, sd, _ = lg.closed_form_mle(data)
    np.testing.assert_allclose([fit.params["mu[0]"], fit.params["mu[1]"]], mean, atol=0.01)
    np.testing.assert_allclose([fit.params["omega[0]"], fit.params["omega[1]"]], sd, rtol=0.05)
    assert fit.losses.shape == (6,) and fit.converged.shape == (6,) and fit.iterations.shape == (6,)
    assert fit.converged.sum() >= 4
    # the three best starts were re-scored on fresh draws; the others were not
    assert np.isfinite(fit.rescored).sum() == 3
    assert fit.pointwise.shape == (data.num_individuals,)
    assert fit.log_likelihood == pytest.approx(fit.pointwise.sum())


def test_to_arviz(problem):
    model, data, post = problem
    fit = nlp.fit_map(nlp.populations.gaussian(model), post, data, jax.random.key(1), num_draws=200, num_starts=2)
    tree = fit.to_arviz(data)
    assert tree.posterior["mean"].shape == (1, 1, 2)
    assert list(tree.posterior["sd"].coords["sd_param"].values) == ["a", "b"]
    assert tree.log_likelihood["obs"].shape == (1, 1, data.num_individuals)
    assert "observed_data" in tree.children


def test_bad_arguments(problem):
    model, data, post = problem
    pop = nlp.populations.gaussian(model)
    with pytest.raises(ValueError, match="`num_starts` must be a positive integer; got 0"):
        nlp.fit_map(pop, post, data, jax.random.key(0), num_starts=0)
    with pytest.raises(ValueError, match="`num_draws` must be a positive integer"):
        nlp.fit_map(pop, post, data, jax.random.key(0), num_draws=-5)
    with pytest.raises(TypeError, match="expected a JAX random key"):
        nlp.fit_map(pop, post, data, 42)


def test_wrong_model_draws_are_refused(problem):
    _, data, post = problem
    with pytest.raises(ValueError, match=r"draws have 3 parameters but model 'linear_gaussian' has 2"):
        nlp.likelihood.draws_from_values(jnp.zeros((data.num_individuals, 5, 3)), post.model)


def test_program_is_inspected_on_one_individual_only_when_that_is_safe(problem):
    """`fit_map` inspects the surrogate program on one individual when its sites do not depend
    on the individuals; a program with a per-individual latent or a deterministic site is
    inspected on all of them, and its fit is the same as without the shortcut."""
    from nlme_ppl.inference.map import _probe

    model, data, post = problem
    draws = nlp.prepare_draws(post, data, jax.random.key(1), num_draws=50)

    def with_individual_latent(data):
        user_population(data)
        with numpyro.plate("individuals", data.num_individuals):
            numpyro.sample("u", dist.Normal(0.0, 1.0))  # a per-individual latent beside the surrogate

    def with_deterministic(data):
        user_population(data)
        numpyro.deterministic("n", jnp.asarray(data.num_individuals, jnp.float64))

    assert _probe(user_population, draws, data, "obs")[1].num_individuals == 1
    assert _probe(nlp.populations.gaussian(model), draws, data, "obs")[1].num_individuals == 1
    for program in (with_individual_latent, with_deterministic):
        assert _probe(program, draws, data, "obs")[1].num_individuals == data.num_individuals
    fit = nlp.inference.map.fit_map_draws(with_deterministic, draws, data, jax.random.key(2), num_starts=2)
    assert float(fit.site_values["n"]) == data.num_individuals
    fit_u = nlp.inference.map.fit_map_draws(with_individual_latent, draws, data, jax.random.key(2), num_starts=2)
    assert fit_u.site_values["u"].shape == (data.num_individuals,)
    np.testing.assert_allclose(fit_u.site_values["u"], 0.0, atol=1e-4)  # its MAP is its prior's mode
    np.testing.assert_allclose(fit_u.site_values["mu"], fit.site_values["mu"], atol=1e-4)


def test_site_names_the_likelihood_factor(problem):
    """`site=` renames the surrogate's likelihood factor, as in `fit_nuts`: the fit is the same,
    the `log_likelihood` variable takes the name, and a program with a site of the default
    name ('obs') can be fitted under another."""
    model, data, post = problem
    pop = nlp.populations.gaussian(model)
    key, kw = jax.random.key(3), dict(num_draws=100, num_starts=2, diagnose=False)
    ref = nlp.fit_map(pop, post, data, key, **kw)
    fit = nlp.fit_map(pop, post, data, key, site="lik", **kw)
    assert fit.params == ref.params and fit.stderr == ref.stderr
    np.testing.assert_array_equal(fit.pointwise, ref.pointwise)
    assert list(fit.to_arviz().log_likelihood.data_vars) == ["lik"]
    assert list(ref.to_arviz().log_likelihood.data_vars) == ["obs"]

    def with_obs_site(data):
        user_population(data)
        numpyro.sample("obs", dist.Normal(0.0, 1.0))  # a population-level site named 'obs'

    with pytest.raises(ValueError, match="has a site named 'obs', the name of the likelihood factor; pass site="):
        nlp.fit_map(with_obs_site, post, data, key, **kw)
    clash = nlp.fit_map(with_obs_site, post, data, key, site="lik", **kw)
    assert "obs" in clash.site_values and clash.pointwise.shape == (data.num_individuals,)
    checked = nlp.fit_map(with_obs_site, post, data, key, site="lik", num_draws=100, num_starts=2)  # the checks too
    assert checked.importance.num_individuals == data.num_individuals


def test_high_k_individuals_get_extra_draws_and_the_fit_is_redone():
    """A population much narrower than the individual posteriors, at 30 draws: some individuals'
    weights have Pareto k > 0.7 at the fit (3 of 60 here). They, and the next-highest k up to a
    bucket (4 here, N/16; so that similar fits reuse their compiled programs), get draws up to
    `max_draws`, the fit is redone on them, and the result's checks count all their draws."""
    from nlme_ppl.inference.map import bucket_size

    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(11), 60, np.array([0.5, -1.0]), np.array([0.08, 0.06]))
    post, pop, key = lg.ExactPosterior(model), nlp.populations.gaussian(model), jax.random.key(3)
    with pytest.warns(nlp.diagnostics.SurrogateWarning, match="Pareto k > 0.7"):
        plain = nlp.fit_map(pop, post, data, key, num_draws=30, num_starts=2, max_draws=30)
    flagged = plain.importance.bad()
    assert plain.raised == () and 1 <= len(flagged) < 8
    fit = nlp.fit_map(pop, post, data, key, num_draws=30, num_starts=2, max_draws=600)
    k = plain.importance.table()["pareto_k"]
    size = bucket_size(len(flagged), 60)
    assert set(flagged) <= set(fit.raised) and len(fit.raised) == size == max(len(flagged), 4) and fit.max_draws == 600
    assert set(fit.raised) == set(k.sort_values(ascending=False, kind="stable").index[:size])
    assert [bucket_size(n, 10_000) for n in (1, 8, 9, 385, 2048, 9000)] == [8, 8, 10, 448, 2048, 10_000]
    assert bucket_size(385, 400) == 400 and bucket_size(1, 12) == 1 and bucket_size(3, 12) == 3
    counts = fit.importance.table()["draws"]
    assert set(counts[list(fit.raised)]) == {600} and set(counts.drop(list(fit.raised))) == {30}
    summary = fit.diagnostics_summary()
    assert summary["raised"] == size and summary["raised_ids"] == list(fit.raised)
    assert summary["pareto_k_above_0.7"] == len(fit.importance.bad())
    assert fit.params != plain.params
    with pytest.raises(ValueError, match="at least num_draws"):
        nlp.fit_map(pop, post, data, key, num_draws=30, max_draws=20)
    tree = nlp.fit_nuts(pop, post, data, key, num_draws=30, init=plain, max_draws=600, num_chains=1, num_warmup=50, num_samples=50, progress=False)
    # judged at the start on NUTS's own draws
    draws = tree["surrogate_diagnostics"]["draws"].to_series()
    assert tree["posterior"].attrs["num_raised"] == int(np.sum(draws == 600)) >= 1 and set(draws) == {30, 600}


def test_a_second_fit_compiles_nothing_new_and_reports_its_phases(problem):
    """The recompilation hunt (issue 19): `fit.timings` holds each phase's wall and compile
    seconds, and a second fit of data of the same shapes, with another key, compiles no new
    program for its L-BFGS starts, rescoring or standard errors (each new shape of the draws once
    compiled them anew)."""
    model, data, post = problem
    pop, kw = nlp.populations.gaussian(model), dict(num_draws=100, num_starts=3, refine=False)
    first = nlp.fit_map(pop, post, data, jax.random.key(20), **kw)
    second = nlp.fit_map(pop, post, data, jax.random.key(21), **kw)
    phases = first.timings.phases
    assert {"draws", "setup", "starts", "rescore", "stderr", "pointwise", "diagnostics"} <= set(phases)
    assert phases["starts"]["compilations"] >= 1 and phases["starts"]["compile_seconds"] > 0
    for name in ("starts", "rescore", "stderr"):
        assert second.timings.phases[name]["compilations"] == 0, name
    inside = sum(p["seconds"] for p in second.timings.phases.values())
    assert inside <= second.timings.total + 1e-6 and "starts" in second.timings.table()
