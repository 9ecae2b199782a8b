"""The conditional flow: a flowjax rational-quadratic-spline flow on standardised parameters.

The flow is built with float32 parameters (under `jax.enable_x64(False)`, so that the
constants flowjax captures when it builds the layers are float32 too). `flow_log_prob` and
`flow_sample` evaluate one point through the flow's bijection; vmap them over draws and
individuals. They take float32 inputs and return float32 values (log-densities may come out
in float64 where flowjax accumulates log-determinants; callers cast). Training uses them.

`flow_sample_batch` and `flow_log_prob_batch` (in `_spline_coupling`) do the same for a batch
of individuals with many draws each; `AmortizedPosterior.sample` and `.log_prob` use them.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import paramax
from flowjax.bijections import AbstractBijection, Chain, RationalQuadraticSpline
from flowjax.distributions import StandardNormal, Transformed
from flowjax.flows import coupling_flow, masked_autoregressive_flow
from jaxtyping import Array, Float, PRNGKeyArray
from ._summary import to_float32

__all__ = ["FLOW_KINDS", "ConditionalAffine", "build_flow", "flow_log_prob", "flow_log_prob_many", "flow_sample", "flow_sample_many"]

#: Flow architectures `build_flow` knows: flowjax coupling flow or masked autoregressive flow.
FLOW_KINDS = ("coupling", "maf")


class ConditionalAffine(AbstractBijection):
    """x = loc(s) + exp(log_scale(s)) · u, with (loc, log_scale) an MLP of the condition s.

    The last layer of the flow: the splines shape a standardised distribution (its modes and
    tails), and this layer places and scales it for each data set. Without it, the splines
    alone must squeeze a standard normal into posteriors hundreds of times narrower than the
    training prior, which trains slowly. It starts as the identity (zero last layer).
    """

    shape: tuple[int, ...]
    cond_shape: tuple[int, ...]
    mlp: eqx.nn.MLP

    def __init__(self, key, *, dim: int, cond_dim: int, width: int):
        self.shape, self.cond_shape = (dim,), (cond_dim,)
        mlp = eqx.nn.MLP(cond_dim, 2 * dim, width, 2, activation=jax.nn.gelu, key=key)
        last = mlp.layers[-1]
        self.mlp = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp, (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))

    def _loc_scale(self, condition):
        loc, log_scale = jnp.split(self.mlp(condition), 2)
        return loc, 5.0 * jnp.tanh(log_scale / 5.0)  # bounded log-scale: scales in (e^-5, e^5)

    def transform_and_log_det(self, x, condition=None):
        loc, log_scale = self._loc_scale(condition)
        return loc + jnp.exp(log_scale) * x, jnp.sum(log_scale)

    def inverse_and_log_det(self, y, condition=None):
        loc, log_scale = self._loc_scale(condition)
        return (y - loc) * jnp.exp(-log_scale), -jnp.sum(log_scale)


def build_flow(
    key: PRNGKeyArray,
    *,
    dim: int,
    cond_dim: int,
    kind: str = "coupling",
    flow_layers: int = 8,
    knots: int = 10,
    interval: float = 6.0,
    nn_width: int = 128,
    nn_depth: int = 1,
) -> Transformed:
    """A conditional spline flow `q(z | s)` on `R^dim`, with a standard normal base.

    **Arguments:**

    - `key`: a JAX random key.
    - `dim`: number of parameters `k`.
    - `cond_dim`: size of the condition (the summary).
    - `kind`: `"coupling"` (fast sampling and density) or `"maf"` (masked autoregressive
      with the fast direction used for the density; sampling is `dim` times sequential).
    - `flow_layers`: number of flow layers.
    - `knots`, `interval`: spline knots and the interval `[-interval, interval]` they cover
      (outside, the layer is the identity).
    - `nn_width`, `nn_depth`: conditioner MLP width and hidden layers.

    **Returns:** a flowjax `Transformed` distribution with float32 parameters.
    """
    if kind not in FLOW_KINDS:
        raise ValueError(f"unknown flow kind {kind!r}; choose one of {FLOW_KINDS}.")
    builder = coupling_flow if kind == "coupling" else masked_autoregressive_flow
    with jax.enable_x64(False):
        flow = builder(
            key,
            base_dist=StandardNormal((dim,)),
            transformer=RationalQuadraticSpline(knots=knots, interval=float(interval)),
            cond_dim=cond_dim,
            flow_layers=flow_layers,
            nn_width=nn_width,
            nn_depth=nn_depth,
            nn_activation=jax.nn.gelu,
            invert=True,
        )
        affine = ConditionalAffine(jax.random.fold_in(key, 1), dim=dim, cond_dim=cond_dim, width=nn_width)
        flow = Transformed(flow.base_dist, Chain([flow.bijection, affine]))
    return to_float32(flow)


def flow_log_prob(flow: Transformed, z: Float[Array, " k"], cond: Float[Array, " c"]) -> Float[Array, ""]:
    """log q(z | cond) of one point (standardised scale)."""
    bij = paramax.unwrap(flow.bijection)
    u, log_det = bij.inverse_and_log_det(z, cond)
    base = jnp.sum(-0.5 * u * u) - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi).astype(u.dtype)
    return (base + log_det).astype(z.dtype)


def flow_sample(flow: Transformed, u: Float[Array, " k"], cond: Float[Array, " c"]) -> Float[Array, " k"]:
    """Push a standard-normal draw `u` through the flow: a draw of q(z | cond)."""
    bij = paramax.unwrap(flow.bijection)
    return bij.transform(u, cond)


def _split_affine(flow: Transformed):
    """The flow's bijection without its final `ConditionalAffine` layer, and that layer (or None)."""
    bij = paramax.unwrap(flow.bijection)
    if isinstance(bij, Chain) and isinstance(bij.bijections[-1], ConditionalAffine):
        rest = bij.bijections[:-1]
        return (rest[0] if len(rest) == 1 else Chain(rest)), bij.bijections[-1]
    return bij, None


def flow_sample_many(flow: Transformed, u: Float[Array, "draws k"], cond: Float[Array, " c"]) -> Float[Array, "draws k"]:
    """`flow_sample` for many draws sharing one condition.

    The final `ConditionalAffine` layer depends on the condition only, so its location and
    scale are computed once rather than once per draw.
    """
    inner, affine = _split_affine(flow)
    x = jax.vmap(inner.transform, in_axes=(0, None))(u, cond)
    if affine is not None:
        loc, log_scale = affine._loc_scale(cond)
        x = loc + jnp.exp(log_scale) * x
    return x


def flow_log_prob_many(flow: Transformed, z: Float[Array, "draws k"], cond: Float[Array, " c"]) -> Float[Array, " draws"]:
    """`flow_log_prob` for many points sharing one condition (the affine layer computed once)."""
    inner, affine = _split_affine(flow)
    log_det = jnp.zeros((), z.dtype)
    if affine is not None:
        loc, log_scale = affine._loc_scale(cond)
        z = (z - loc) * jnp.exp(-log_scale)
        log_det = -jnp.sum(log_scale)
    u, ld = jax.vmap(inner.inverse_and_log_det, in_axes=(0, None))(z, cond)
    base = jnp.sum(-0.5 * u * u, axis=-1) - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi).astype(u.dtype)
    return (base + ld + log_det).astype(z.dtype)
