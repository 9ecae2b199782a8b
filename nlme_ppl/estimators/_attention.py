"""A self-attention summary over patches of observations (a Set-Transformer-style encoder).

BayesFlow 2's `SetTransformer` stacks multi-head attention blocks over the set elements and pools
them; this network does the same over the patches of `_summary._patches`, with the mask on the
keys. Padding invariance is exact, as for the other networks: padded keys get a weight of exactly
0 (their logits are -inf after the per-query maximum of the observed ones), and every sum over
keys or patches is a sequential scan over compacted inputs, so trailing zeros cannot change the
rounding; the per-patch layers run row by row, so that the number of rows cannot either.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from ._summary import AbstractSummary, InputScaling, _check_inputs, _masked_mean, _patches, to_float32

__all__ = ["AttentionSummary"]


def _rows(fn, x):
    """`fn` on each row of `x`, one row at a time (`lax.map`): a batched matmul's blocking, and so
    its rounding, follows the number of rows, which padding changes (measured: 6e-8 apart)."""
    return jax.lax.map(fn, x)


def _masked_attention(q, k, v, mask):
    """Multi-head attention `(P, heads, d)` -> `(P, heads, d)`, keys where `mask` only."""
    # a per-pair product summed over d (not a matmul, whose blocking, and so rounding, follows P)
    logits = jnp.moveaxis(jnp.sum(q[:, None] * k[None], -1), -1, 0) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    logits = jnp.where(mask[None, None, :], logits, -jnp.inf)
    top = jnp.max(logits, axis=-1, keepdims=True)
    shifted = logits - jnp.where(jnp.isfinite(top), top, 0.0)  # -inf at padded keys: weight exactly 0
    w = jnp.exp(shifted)

    # the products are formed before the scan, which only adds: a multiply-add fused in the
    # vectorised lanes but not in the remainder would round differently as padding moves the lanes
    terms = jnp.einsum("hqk,khd->khqd", w, v, precision=jax.lax.Precision.HIGHEST)

    def step(carry, inp):
        num, den = carry
        t_k, w_k = inp  # (heads, P, d), (heads, P)
        return (num + t_k, den + w_k), None

    heads, p, d = q.shape[1], q.shape[0], q.shape[-1]
    zero = (jnp.zeros((heads, p, d), q.dtype), jnp.zeros((heads, p), q.dtype))
    (num, den), _ = jax.lax.scan(step, zero, (terms, jnp.moveaxis(w, -1, 0)))
    out = jnp.where(den[..., None] > 0, num / jnp.where(den > 0, den, 1.0)[..., None], 0.0)
    return jnp.swapaxes(out, 0, 1)


class _AttentionBlock(eqx.Module):
    """Pre-norm transformer block: masked multi-head self-attention, then an MLP, both residual."""

    norm1: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear
    out: eqx.nn.Linear
    norm2: eqx.nn.LayerNorm
    ff: eqx.nn.MLP
    num_heads: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, width: int, num_heads: int):
        k1, k2, k3 = jax.random.split(key, 3)
        self.num_heads = num_heads
        self.norm1, self.norm2 = eqx.nn.LayerNorm(width, dtype=jnp.float32), eqx.nn.LayerNorm(width, dtype=jnp.float32)
        self.qkv = eqx.nn.Linear(width, 3 * width, dtype=jnp.float32, key=k1)
        self.out = eqx.nn.Linear(width, width, dtype=jnp.float32, key=k2)
        self.ff = eqx.nn.MLP(width, width, 2 * width, 1, activation=jax.nn.gelu, dtype=jnp.float32, key=k3)

    def __call__(self, h: Float[Array, "P H"], mask: Bool[Array, " P"]) -> Float[Array, "P H"]:
        p, width = h.shape
        q, k, v = jnp.split(_rows(lambda r: self.qkv(self.norm1(r)), h), 3, axis=-1)
        split = lambda x: x.reshape(p, self.num_heads, width // self.num_heads)  # noqa: E731
        att = _masked_attention(split(q), split(k), split(v), mask).reshape(p, width)
        h = h + _rows(self.out, att)
        h = h + _rows(lambda r: self.ff(self.norm2(r)), h)
        return jnp.where(mask[:, None], h, 0.0)


class AttentionSummary(AbstractSummary):
    """Self-attention over patches of consecutive observations, then masked mean and max pooling.

    The patches are those of [`DeepSetSummary`][nlme_ppl.estimators.DeepSetSummary] (first time,
    gaps, values, flags). An MLP embeds each patch; `depth` pre-norm attention blocks let every
    patch read every other one (the DeepSet sees each patch alone until it pools); the masked
    mean and max of the patches, with log(1 + #obs), go through an output MLP.

    **Arguments:**

    - `key`: a JAX random key.
    - `summary_dim`: output size.
    - `hidden_size`: width of the patches' embedding (a multiple of `num_heads`).
    - `depth`: attention blocks.
    - `num_heads`: attention heads per block.
    - `patch_size`: consecutive observations per patch.
    - `scaling`: the input standardisation (default: none).
    - `num_channels`: channels per row, 1 (the measurement) or 1 + event channels (dosing models).
    """

    scaling: InputScaling
    embed: eqx.nn.MLP
    blocks: tuple[_AttentionBlock, ...]
    rho: eqx.nn.MLP
    summary_dim: int = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    num_channels: int = eqx.field(static=True)

    def __init__(
        self, key: PRNGKeyArray, *, summary_dim: int = 32, hidden_size: int = 64, depth: int = 2, num_heads: int = 4,
        patch_size: int = 4, scaling=None, num_channels: int = 1,
    ):  # fmt: skip
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads}).")
        k_embed, k_rho, *k_blocks = jax.random.split(key, 2 + depth)
        self.scaling = InputScaling() if scaling is None else scaling
        self.summary_dim, self.patch_size, self.num_channels = summary_dim, patch_size, num_channels
        self.embed = eqx.nn.MLP((2 + num_channels) * patch_size, hidden_size, hidden_size, 1, activation=jax.nn.gelu,
                                dtype=jnp.float32, key=k_embed)  # fmt: skip
        self.blocks = tuple(_AttentionBlock(k, hidden_size, num_heads) for k in k_blocks)
        self.rho = eqx.nn.MLP(2 * hidden_size + 1, summary_dim, 2 * hidden_size, 1, activation=jax.nn.gelu, dtype=jnp.float32, key=k_rho)
        self.embed, self.blocks, self.rho = to_float32((self.embed, self.blocks, self.rho))

    def __call__(self, times, values, mask):
        _check_inputs(times, values, mask, self.num_channels)
        x, pm = _patches(self.scaling, times, values, mask, self.patch_size)
        h = jnp.where(pm[:, None], _rows(self.embed, x), 0.0)
        for block in self.blocks:
            h = block(h, pm)
        mean = _masked_mean(h, pm)
        mx = jnp.where(jnp.any(pm), jnp.max(jnp.where(pm[:, None], h, -jnp.inf), axis=0), 0.0)
        count = jnp.log1p(jnp.sum(mask).astype(jnp.float32))[None]
        return self.rho(jnp.concatenate([mean, mx, count]))
