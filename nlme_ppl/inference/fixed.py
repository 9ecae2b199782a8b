"""Parameters without random effect, by their likelihood (the *likelihood treatment*).

A parameter f without random effect (a `Delta` population site) has one value θ_f shared by
every individual. The kernel treatment of the surrogate smooths its point mass with a narrow
Gaussian kernel around θ_f: that biases the estimate, inflates its SE, and gives heavy-tailed
importance weights (few draws fall near θ_f). Where p(y | φ) is tractable there is an exact
identity instead. Write φ = (r, f), with r the parameters with a random effect. For draws
φ_ij ~ p(φ | y_i) and *any* conditional density K_i(f | r), normalised in f,

    E[ N(r_ij; μ, Σ) p(y_i | r_ij, θ_f) K_i(f_ij | r_ij) / (p_train(φ_ij) p(y_i | φ_ij)) ] = p(y_i | θ) / p_train(y_i),

the quantity the surrogate estimates for every individual. It needs no bandwidth. With K_i
equal to the conditional posterior p(f | r, y_i), the f-part of the weights is constant; here
K_i is its Laplace approximation at each draw.

p(y_i | r_ij, θ_f) must be evaluated as θ_f moves, and a likelihood evaluation per draw per
objective evaluation is slow (0.46 s per value and gradient for `frohlich_simple` at
N·M = 50,000). So log p(y_i | r_ij, f) is expanded to second order around a point f*_i near
the estimate, once per fit (gradient g_ij and Hessian H_ij in f), and the expansion enters the
surrogate's fast path as F + F + F(F-1)/2 sufficient statistics per draw. The error of the
expansion is of third order in θ_f − f*, and the fit re-expands until the estimate stays
within a tenth of an individual posterior SD of the point (one to three fits in practice,
from a first point at the median of the individual posterior means).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..data import Dataset
from ..likelihood import SurrogateDraws, _evaluated
from .refine import EXACT_BACKENDS

__all__ = ["expand_fixed", "fixed_point", "initial_point", "wants_likelihood_treatment"]

#: Likelihood evaluations (with their f-Hessians) per compiled block call: bounds the memory
#: (sunitinib's take about 2 MB each: 16,000 in one block asked for 32 GB).
_EVALS_PER_BLOCK = 2048

FIXED_TREATMENTS = ("auto", "kernel", "likelihood")


def wants_likelihood_treatment(fixed: str, posterior) -> bool:
    """Whether a fit with `fixed=` (`"auto"`, `"kernel"` or `"likelihood"`) on `posterior`'s
    draws uses the likelihood treatment: `"auto"` where the draws are exact (a refined or exact
    posterior) and the model's likelihood is tractable."""
    if fixed not in FIXED_TREATMENTS:
        raise ValueError(f"fixed must be one of {FIXED_TREATMENTS}; got {fixed!r}.")
    tractable = bool(getattr(posterior.model, "tractable", False))
    if fixed == "likelihood" and not tractable:
        raise ValueError(
            f"fixed='likelihood' needs a tractable likelihood p(y | phi), and model {posterior.model.name!r} declares "
            "tractable=False; use fixed='kernel' (or 'auto')."
        )
    if fixed == "auto":
        return tractable and getattr(posterior, "backend", None) in EXACT_BACKENDS
    return fixed == "likelihood"


def fixed_point(population, draws: SurrogateDraws, params: dict, data: Dataset) -> dict[str, Float[Array, " individuals"]]:
    """The values `(N,)` that `population` gives its parameters without random effect at
    population parameters `params` (constrained site values), by parameter name."""
    return {n: jnp.asarray(v, jnp.float64) for n, v in _evaluated(population, draws, params, (data,), {}).fixed_loc.items()}


def initial_point(population, draws: SurrogateDraws, data: Dataset, params: dict | None = None) -> dict[str, Float[Array, " individuals"]]:
    """The first expansion point of the likelihood treatment: `fixed_point` at `params` where
    given, else the median over individuals of each such parameter's posterior means (empty for
    a program without parameters without random effect)."""
    point = fixed_point(population, draws, {} if params is None else params, data)
    if params is None:
        centre = np.asarray(draws.centre)
        point = {n: jnp.full(draws.num_individuals, float(np.median(centre[:, draws.param_names.index(n)]))) for n in point}
    return point


#: Up to this many parameters without random effect, the expansion's derivatives are taken
#: forward over forward (F² second-order directional derivatives); above, forward over reverse.
_FORWARD_MAX = 3


def _value_grad_hessian(fn, point):
    """`fn(point)`, its gradient and its Hessian in one pass. For the F ≤ `_FORWARD_MAX`
    parameters without random effect of the models here, forward over forward is the cheaper
    way: for the likelihood of `frohlich_simple` (F = 2) it took half the time of
    `jax.hessian` (forward over reverse) plus a separate `jax.grad`, 32 against 64 ms per
    2,000 draws; its cost grows as F², reverse mode's as F."""
    if point.shape[0] > _FORWARD_MAX:

        def value_grad(f):
            v, g = jax.value_and_grad(fn)(f)
            return g, (v, g)
    else:
        eye = jnp.eye(point.shape[0], dtype=point.dtype)

        def value_grad(f):
            v, g = jax.vmap(lambda t: jax.jvp(fn, (f,), (t,)))(eye)
            return g, (v[0], g)

    h, (v, g) = jax.jacfwd(value_grad, has_aux=True)(point)
    return v, g, h


def _expansion_one(model, phi, design, y, point, idx):
    """For one draw: g, H (of log p(y | φ) in the fixed parameters at `point`), the log
    likelihood at `point` and at the draw, and the training prior's g and H there."""
    at = lambda f: phi.at[idx].set(f)  # noqa: E731
    ll_star, g, h = _value_grad_hessian(lambda f: model.log_likelihood(at(f), design, y), point)
    _, g_p, h_p = _value_grad_hessian(lambda f: model.prior_log_prob(at(f)), point)
    return ll_star, g, h, model.log_likelihood(phi, design, y), g_p, h_p


@eqx.filter_jit
def _block(model, values, designs, obs, point, idx):
    """The expansion of a block `(n, M, k)` of draws: statistics `(n, M, C_f)` and the per-draw
    log-prior adjustment `(n, M)` (see the module docstring)."""
    one = jax.vmap(jax.vmap(lambda p, d, y, f: _expansion_one(model, p, d, y, f, idx), in_axes=(0, None, None, None)))
    ll_star, g, h, ll_own, g_p, h_p = one(values, designs, obs, point)
    # the expansion is made concave in f (its Hessian's eigenvalues clipped at 0), so that the
    # surrogate stays bounded in θ_f; K's precision adds the prior's curvature, floored above 0
    lam, vec = jnp.linalg.eigh(0.5 * (h + jnp.swapaxes(h, -1, -2)))
    h = jnp.einsum("...ab,...b,...cb->...ac", vec, jnp.minimum(lam, 0.0), vec)
    lam_k, vec_k = jnp.linalg.eigh(-(h + 0.5 * (h_p + jnp.swapaxes(h_p, -1, -2))))
    lam_k = jnp.maximum(lam_k, 1e-8)
    step = jnp.einsum("...ab,...b,...cb,...c->...a", vec_k, 1.0 / lam_k, vec_k, g + g_p)
    resid = jnp.einsum("...ab,...a->...b", vec_k, values[..., idx] - (point[:, None, :] + step))
    f = len(idx)
    log_k = 0.5 * jnp.sum(jnp.log(lam_k), -1) - 0.5 * jnp.sum(lam_k * resid**2, -1) - 0.5 * f * jnp.log(2 * jnp.pi)
    a, b = np.triu_indices(f, k=1)
    diag = jnp.diagonal(h, axis1=-2, axis2=-1)
    stats = jnp.concatenate([g, diag, h[..., a, b]], -1)
    adjust = ll_own - ll_star - log_k
    ok = jnp.all(jnp.isfinite(stats), -1) & jnp.isfinite(adjust)
    return jnp.where(ok[..., None], stats, 0.0), jnp.where(ok, adjust, jnp.inf)


def expand_fixed(draws: SurrogateDraws, model, data: Dataset, point: dict) -> SurrogateDraws:
    """`draws` with the likelihood treatment of the parameters in `point`, expanded there.

    **Arguments:**

    - `draws`: [`SurrogateDraws`][nlme_ppl.SurrogateDraws] of `data`, from an exact (refined)
      posterior: the identity of the treatment holds for draws from p(φ | y_i).
    - `model`: the individual model (its likelihood must be tractable).
    - `data`: the [`Dataset`][nlme_ppl.Dataset] of the draws.
    - `point`: the expansion point f*: `(N,)` values (or scalars) by parameter name, e.g.
      [`fixed_point`][nlme_ppl.inference.fixed_point] at a fit.

    **Returns:** [`SurrogateDraws`][nlme_ppl.SurrogateDraws] whose `fixed_names` are `point`'s
    names; the surrogate evaluates those parameters through the expansion (and refuses a
    population program that gives one of them a random effect).
    """
    if draws.fixed_names:
        raise ValueError(f"these draws are expanded already (for {draws.fixed_names}); expand the original draws.")
    names = tuple(point)
    unknown = [n for n in names if n not in draws.param_names]
    if unknown or not names:
        raise ValueError(f"point must name some of the parameters {draws.param_names}; got {list(point)}.")
    n, m = draws.num_individuals, draws.num_draws
    idx = np.asarray([draws.param_names.index(p) for p in names])
    f_star = np.stack([np.broadcast_to(np.asarray(point[p], np.float64), (n,)) for p in names], -1)
    designs_all = model.designs_from_data(data)
    obs_all = np.asarray(data.values, np.float64)
    values_all = np.asarray(draws.values, np.float64)
    block = max(1, min(n, _EVALS_PER_BLOCK // m))
    stats, adjust = [], []
    for start in range(0, n, block):
        rows = np.arange(start, start + block).clip(max=n - 1)  # the last block padded: one compiled shape
        designs = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[rows]), designs_all)
        s, a = _block(model, jnp.asarray(values_all[rows]), designs, jnp.asarray(obs_all[rows]), jnp.asarray(f_star[rows]), idx)
        keep = min(block, n - start)
        stats.append(np.asarray(s)[:keep])
        adjust.append(np.asarray(a)[:keep])
    adjust = np.concatenate(adjust)
    if np.all(~np.isfinite(adjust), axis=1).any():
        i = int(np.argmax(np.all(~np.isfinite(adjust), axis=1)))
        raise ValueError(f"individual {data.ids[i]!r}: the likelihood is not finite at {dict(zip(names, f_star[i]))} for any draw.")
    extra = None
    if draws.extra is not None:  # the extra draws of some individuals, expanded at their points
        rows = np.asarray(draws.extra_index)
        extra = expand_fixed(draws.extra, model, data.subset(rows), {p: f_star[rows, a] for a, p in enumerate(names)})
    return SurrogateDraws(
        draws.values, draws.log_prior + jnp.asarray(adjust), draws.bandwidth, draws.centre,
        jnp.concatenate([draws.stats, jnp.asarray(np.concatenate(stats))], -1), draws.param_names, names, jnp.asarray(f_star),
        extra, draws.extra_index,
    )  # fmt: skip
