"""AmortizedPosterior: shapes, dtypes, chunking, densities, errors; the batched flow paths
against flowjax's generic code."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import paramax
import pytest

import nlme_ppl as nlp
from nlme_ppl.estimators import AmortizedPosterior, TrainConfig
from nlme_ppl.estimators import _posterior
from nlme_ppl.estimators._flow import build_flow
from nlme_ppl.estimators._spline_coupling import _fast_coupling, flow_log_prob_batch, flow_sample_batch

from ._helpers import SIGMA, SMALL, TIMES, linear_model, some_data, untrained_posterior


@pytest.fixture(scope="module")
def post():
    return untrained_posterior()


def _perturb(tree, seed, scale=0.3):
    """Add noise to every float leaf, so that no layer is at its (identity-like) initialisation."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: jnp.asarray(x + scale * rng.normal(size=x.shape), x.dtype) if eqx.is_inexact_array(x) else x, tree
    )


def _sym_program(design, obs=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    c = numpyro.sample("c", dist.Normal(0.0, 1.0))
    mu = a + (b + c) * design["times"] + b * c
    numpyro.sample("obs", dist.Normal(mu, SIGMA).mask(design["mask"]).to_event(1), obs=obs)


def _sym_posterior():
    """3 parameters (a permuted coupling flow, 2 hidden conditioner layers), an exchangeable pair,
    and a flow perturbed away from its initialisation."""
    model = nlp.models.IndividualModel(_sym_program, {"times": TIMES}, name="sym_test", exchangeable=(("b", "c"),))
    config = TrainConfig(**{**SMALL.to_dict(), "nn_depth": 2, "flow_layers": 3})
    p = untrained_posterior(model, config, seed=1, loc=(0.3, -0.2, 0.1), scale=(1.7, 0.6, 0.9))
    with jax.enable_x64(False):
        return eqx.tree_at(lambda q: q.flow, p, _perturb(p.flow, 7))


def _reference_sample(post, data, key, num_draws):
    """The straightforward path, one individual at a time: summary -> flowjax `transform` of
    the base draws -> unstandardise -> relabel exchangeable groups."""

    @eqx.filter_jit
    def one(summary, flow, t, y, m, u):
        s = summary(t, y, m)
        return jax.vmap(lambda ui: paramax.unwrap(flow).bijection.transform(ui, s))(u)

    times, values, mask = (np.asarray(a) for a in (data.times, data.values, data.mask))
    with jax.enable_x64(False):
        z = []
        for i in range(data.num_individuals):
            u = jax.random.normal(jax.random.fold_in(key, i), (num_draws, post.num_params), jnp.float32)
            t, y = np.float32(times[i]), np.float32(values[i])
            z.append(one(post.summary, post.flow, t, y, mask[i], u))
        z = jnp.stack(z)
    params = post.param_loc + post.param_scale * z.astype(jnp.float64)
    if post.model.exchangeable:
        params = post.model.symmetrize(jax.random.fold_in(key, 2**31 - 1), params)
    return params


def _reference_log_prob(post, data, params):
    """log q(φ | y) through flowjax's `Transformed.log_prob`, one individual at a time."""

    @eqx.filter_jit
    def one(summary, flow, t, y, m, z):
        return paramax.unwrap(flow).log_prob(z, condition=summary(t, y, m))

    z = np.float32((post.model.canonicalize(params) - post.param_loc) / post.param_scale)
    times, values, mask = (np.asarray(a) for a in (data.times, data.values, data.mask))
    with jax.enable_x64(False):
        lq = jnp.stack([
            one(post.summary, post.flow, np.float32(times[i]), np.float32(values[i]), mask[i], z[i])
            for i in range(data.num_individuals)
        ])
    return lq.astype(jnp.float64) - jnp.sum(jnp.log(post.param_scale)) - post.model.log_num_symmetries


def test_sample_shape_dtype(post):
    data = some_data(7)
    draws = post.sample(data, jax.random.key(0), num_draws=11)
    assert draws.shape == (7, 11, 2)
    assert draws.dtype == jnp.float64
    assert np.isfinite(np.asarray(draws)).all()
    assert post.param_names == ("a", "b")


def test_sample_is_reproducible_and_key_dependent(post):
    data = some_data(5)
    a = post.sample(data, jax.random.key(1), num_draws=4)
    b = post.sample(data, jax.random.key(1), num_draws=4)
    c = post.sample(data, jax.random.key(2), num_draws=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_chunking_does_not_change_draws(post, chunk_size):
    data = some_data(7)
    ref = post.sample(data, jax.random.key(3), num_draws=6)
    out = post.sample(data, jax.random.key(3), num_draws=6, chunk_size=chunk_size)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    lp_ref = post.log_prob(data, ref)
    np.testing.assert_allclose(post.log_prob(data, ref, chunk_size=chunk_size), lp_ref, rtol=1e-5, atol=1e-5)


def test_individual_draws_do_not_depend_on_the_others(post):
    data = some_data(6)
    full = post.sample(data, jax.random.key(4), num_draws=5)
    # individual i's draws depend on (key, i) only: changing individual 0's data leaves the rest
    values = np.array(data.values)
    values[0, 0] += 3.0
    other = nlp.Dataset.from_arrays(np.asarray(data.times), values, mask=np.asarray(data.mask))
    out = post.sample(other, jax.random.key(4), num_draws=5)
    np.testing.assert_allclose(out[1:], full[1:], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], full[0])


def test_log_prob_is_a_normalised_density_on_the_original_scale(post):
    """∫ q(φ | y) dφ = 1 on a grid; this checks the flow and the standardisation's Jacobian."""
    data = some_data(2)
    g = np.linspace(-12, 12, 301)
    a, b = np.meshgrid(g * 1.7 + 0.3, g * 0.6 - 0.2, indexing="ij")
    grid = np.stack([a.ravel(), b.ravel()], -1)
    lp = post.log_prob(data, np.broadcast_to(grid, (2, *grid.shape)))
    assert lp.shape == (2, grid.shape[0]) and lp.dtype == jnp.float64
    cell = (g[1] - g[0]) ** 2 * 1.7 * 0.6
    mass = np.exp(np.asarray(lp)).sum(1) * cell
    np.testing.assert_allclose(mass, 1.0, atol=0.02)


def test_log_prob_matches_draw_histogram_mean(post):
    """The mean of the draws equals the mean of the density (on a grid)."""
    data = some_data(1)
    draws = np.asarray(post.sample(data, jax.random.key(5), num_draws=20_000))[0]
    g = np.linspace(-12, 12, 301)
    a, b = np.meshgrid(g * 1.7 + 0.3, g * 0.6 - 0.2, indexing="ij")
    grid = np.stack([a.ravel(), b.ravel()], -1)
    w = np.exp(np.asarray(post.log_prob(data, grid[None]))[0])
    mean_grid = (grid * w[:, None]).sum(0) / w.sum()
    se = draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - mean_grid) < 5 * se + 1e-3)


def test_summaries(post):
    s = post.summaries(some_data(4))
    assert s.shape == (4, post.config.summary_dim)
    np.testing.assert_allclose(post.summaries(some_data(4), chunk_size=3), s, rtol=1e-5, atol=1e-6)


def test_errors(post):
    data = some_data(3)
    with pytest.raises(TypeError, match="Dataset"):
        post.sample(np.zeros((3, 9)), jax.random.key(0), num_draws=2)
    with pytest.raises(TypeError, match="random key"):
        post.sample(data, 0, num_draws=2)
    with pytest.raises(ValueError, match="num_draws"):
        post.sample(data, jax.random.key(0), num_draws=0)
    with pytest.raises(ValueError, match="chunk_size"):
        post.sample(data, jax.random.key(0), num_draws=2, chunk_size=0)
    with pytest.raises(ValueError, match=r"individuals=3, draws, k=2"):
        post.log_prob(data, np.zeros((3, 5, 3)))
    with pytest.raises(ValueError, match=r"must have shape \(6,\)"):
        untrained_posterior(nlp.models.frohlich_simple())
    with pytest.raises(ValueError, match="6 parameters"):
        AmortizedPosterior(
            model=nlp.models.frohlich_simple(), summary=post.summary, flow=post.flow, param_loc=jnp.zeros(6),
            param_scale=jnp.ones(6), config=post.config, history=post.history,
        )


def test_repr_and_model(post):
    assert "linear_test" in repr(post)
    assert post.model.prior_log_prob(np.zeros(2)).shape == ()
    assert post.model == post.model and isinstance(post.model, nlp.models.IndividualModel)
    assert linear_model().fingerprint() == post.model.fingerprint()


# ---------------------------------------------------------------- the batched fast path
@pytest.mark.parametrize("which", ["linear", "sym", pytest.param("pretrained", marks=pytest.mark.slow)])
def test_sample_and_log_prob_match_the_straightforward_path(post, which):
    """Same key, same draws (to float32 rounding) as summary -> flowjax -> unstandardise ->
    symmetrize, individual by individual; and the same density as flowjax's `log_prob`."""
    if which == "linear":
        p, data = post, some_data(5)
    elif which == "sym":
        p, data = _sym_posterior(), some_data(5)
    else:
        p = nlp.pretrained("frohlich_simple")
        with jax.enable_x64(False):
            assert _fast_coupling(p.flow, jnp.zeros((1, p.config.summary_dim))) is not None
        pop = nlp.populations.gaussian(p.model, fixed=("offset", "sigma"))
        phi = nlp.simulate_population(pop, nlp.demo.DEMO_TRUTH, jax.random.key(0), num_individuals=4)
        data = nlp.simulate_data(p.model, phi, jax.random.key(1))
    key = jax.random.key(11)
    draws = p.sample(data, key, num_draws=40, chunk_size=3)  # a padded last chunk
    ref = _reference_sample(p, data, key, 40)
    scale = np.asarray(p.param_scale)  # compare on the flow's (standardised) scale
    np.testing.assert_allclose(np.asarray(draws) / scale, np.asarray(ref) / scale, rtol=1e-4, atol=1e-4)
    lq, lq_ref = p.log_prob(data, draws, chunk_size=3), _reference_log_prob(p, data, draws)
    if which == "pretrained":  # float32 loses up to ~1e-2 nats here in either implementation
        np.testing.assert_allclose(lq, lq_ref, rtol=1e-3, atol=5e-2)
    else:
        np.testing.assert_allclose(lq, lq_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dim, nn_depth, kind", [(2, 1, "coupling"), (3, 2, "coupling"), (3, 1, "maf")])
def test_flow_batch_functions_match_flowjax(dim, nn_depth, kind):
    """`flow_sample_batch` / `flow_log_prob_batch` against flowjax's `transform` / `log_prob`,
    including points outside the spline interval (where the splines are the identity).

    Compared in float64, where they agree to rounding: in float32 the density of these
    perturbed flows is ill-conditioned at some sampled points (flowjax's own float32 log q is
    off by up to ~1 nat there). The float32 path is compared in
    `test_sample_and_log_prob_match_the_straightforward_path`."""
    with jax.enable_x64(False):
        flow = build_flow(jax.random.key(dim), dim=dim, cond_dim=4, kind=kind, flow_layers=3, knots=5,
                          interval=3.0, nn_width=16, nn_depth=nn_depth)
        flow = paramax.unwrap(_perturb(flow, 1))
    cond = jax.random.normal(jax.random.key(2), (6, 4), jnp.float32)
    u = 1.5 * jax.random.normal(jax.random.key(3), (6, 50, dim), jnp.float32)
    tails = 4.0 * jax.random.normal(jax.random.key(4), (6, 20, dim), jnp.float32)
    assert (_fast_coupling(flow, cond) is not None) == (kind == "coupling")  # else the generic fallback

    @eqx.filter_jit
    def both(flow, cond, u):
        """flowjax's draws, their log-det, and log q at [draws, tails]; then the batched versions."""
        x, log_det = jax.vmap(lambda c, ui: jax.vmap(lambda v: flow.bijection.transform_and_log_det(v, c))(ui))(cond, u)
        z = jnp.concatenate([x, tails.astype(x.dtype)], axis=1)
        lp = jax.vmap(lambda c, zi: flow.log_prob(zi, condition=c))(cond, z)
        return (x, log_det, lp), (flow_sample_batch(flow, u, cond), flow_log_prob_batch(flow, z, cond))

    (x64, log_det64, lp64_ref), (x64_batch, lp64) = both(
        *jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, (flow, cond, u))
    )
    np.testing.assert_allclose(x64_batch, x64, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lp64, lp64_ref, rtol=1e-9, atol=1e-9)
    # the two directions are inverse: log q(sample(u)) = log N(u) - log|det ∂sample/∂u|
    base = jnp.sum(jax.scipy.stats.norm.logpdf(u.astype(jnp.float64)), -1)
    np.testing.assert_allclose(lp64[:, :50], base - log_det64, rtol=1e-8, atol=1e-8)


def test_one_compiled_kernel_for_every_chunk(post, monkeypatch):
    """Every chunk, the padded last one included, reuses one compiled sampling kernel: the
    kernel's Python body (which runs only when JAX traces it) runs again only for a new shape."""
    traced = []
    real = _posterior.flow_sample_batch

    def counting(flow, u, s):
        traced.append(u.shape)
        return real(flow, u, s)

    monkeypatch.setattr(_posterior, "flow_sample_batch", counting)
    post.sample(some_data(6), jax.random.key(0), num_draws=7, chunk_size=4)  # compiles (or reuses) the kernel
    traced.clear()
    post.sample(some_data(11), jax.random.key(1), num_draws=7, chunk_size=4)  # 3 chunks, the last padded
    assert traced == []
    post.sample(some_data(3), jax.random.key(1), num_draws=5, chunk_size=4)  # a new shape: traced once
    assert len(traced) == 1 and traced[0][1] == 5
