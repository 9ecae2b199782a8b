"""A self-attention summary over patches of observations (a Set-Transformer-style encoder).

BayesFlow 2's `SetTransformer` stacks multi-head attention blocks over the set elements and pools
them; this network does the same over the patches of `_summary._patches`, with the mask on the
keys.

**Padding invariance by a canonical length.** The network always computes on exactly
`ceil(max_rows / patch_size)` patches, a static size fixed when it is built (by `train`, from the
longest training sequence). After compaction the observed rows come first; the patch array is
then cut or zero-extended to that size, so an individual's input reaches the layers as the same
array, of the same shape, whatever padding it came with. The same compiled arithmetic on the same
array gives the same bits, so batched matmuls and reductions can be used freely. (The first
version ran every per-patch layer row by row and every sum over keys as a sequential scan, so
that a changing row count could not change the rounding: exact too, but 25× slower to train.)
An individual with more observed rows than `max_rows` is refused inside jit (`eqx.error_if`).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from ._summary import AbstractSummary, InputScaling, _check_inputs, _patches, to_float32

__all__ = ["AttentionSummary"]


def _masked_attention(q, k, v, mask):
    """Multi-head attention `(P, heads, d)` -> `(P, heads, d)`, keys where `mask` only."""
    logits = jnp.einsum("qhd,khd->hqk", q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    logits = jnp.where(mask[None, None, :], logits, -jnp.inf)
    top = jnp.max(logits, axis=-1, keepdims=True)
    w = jnp.exp(logits - jnp.where(jnp.isfinite(top), top, 0.0))  # exactly 0 at padded keys
    den = jnp.sum(w, axis=-1, keepdims=True)
    w = w / jnp.where(den > 0, den, 1.0)
    return jnp.einsum("hqk,khd->qhd", w, v)


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
        q, k, v = jnp.split(jax.vmap(lambda r: self.qkv(self.norm1(r)))(h), 3, axis=-1)
        split = lambda x: x.reshape(p, self.num_heads, width // self.num_heads)  # noqa: E731
        att = _masked_attention(split(q), split(k), split(v), mask).reshape(p, width)
        h = h + jax.vmap(self.out)(att)
        h = h + jax.vmap(lambda r: self.ff(self.norm2(r)))(h)
        return jnp.where(mask[:, None], h, 0.0)


class AttentionSummary(AbstractSummary):
    """Self-attention over patches of consecutive observations, then masked mean and max pooling.

    The patches are those of [`DeepSetSummary`][nlme_ppl.estimators.DeepSetSummary] (first time,
    gaps, values, flags). An MLP embeds each patch; `depth` pre-norm attention blocks let every
    patch read every other one (the DeepSet sees each patch alone until it pools); the masked
    mean and max of the patches, with log(1 + #obs), go through an output MLP.

    The network computes on a fixed number of patches, `ceil(max_rows / patch_size)`, whatever
    the input's length (see the module's note): that is what makes padding change nothing, to
    the bit. An individual with more than `max_rows` observed rows is an error.

    **Arguments:**

    - `key`: a JAX random key.
    - `summary_dim`: output size.
    - `hidden_size`: width of the patches' embedding (a multiple of `num_heads`).
    - `depth`: attention blocks.
    - `num_heads`: attention heads per block.
    - `patch_size`: consecutive observations per patch.
    - `max_rows`: the most observed rows (observations, and dose rows for dosing models) an
      individual may have; `train` sets it to the longest training sequence.
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
    max_rows: int = eqx.field(static=True)

    def __init__(
        self, key: PRNGKeyArray, *, summary_dim: int = 32, hidden_size: int = 64, depth: int = 2, num_heads: int = 4,
        patch_size: int = 4, max_rows: int = 256, scaling=None, num_channels: int = 1,
    ):  # fmt: skip
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads}).")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"`max_rows` must be a positive int; got {max_rows!r}.")
        k_embed, k_rho, *k_blocks = jax.random.split(key, 2 + depth)
        self.scaling = InputScaling() if scaling is None else scaling
        self.summary_dim, self.patch_size, self.num_channels = summary_dim, patch_size, num_channels
        self.max_rows = max_rows
        self.embed = eqx.nn.MLP((2 + num_channels) * patch_size, hidden_size, hidden_size, 1, activation=jax.nn.gelu,
                                dtype=jnp.float32, key=k_embed)  # fmt: skip
        self.blocks = tuple(_AttentionBlock(k, hidden_size, num_heads) for k in k_blocks)
        self.rho = eqx.nn.MLP(2 * hidden_size + 1, summary_dim, 2 * hidden_size, 1, activation=jax.nn.gelu, dtype=jnp.float32, key=k_rho)
        self.embed, self.blocks, self.rho = to_float32((self.embed, self.blocks, self.rho))

    def _canonical(self, times, values, mask):
        """The input cut or zero-extended to `max_rows` rows after compaction, then the patches."""
        rows = times.shape[0]
        if rows > self.max_rows:
            count = jnp.sum(mask)
            times = eqx.error_if(
                times, count > self.max_rows,
                f"an individual has more observed rows than the {self.max_rows} this attention summary network was "
                "built for (AttentionSummary.max_rows, the longest training sequence); train an estimator on designs "
                "like this data set's (TrainConfig(max_rows=...)).",
            )  # fmt: skip
            order = jnp.argsort(~mask, stable=True)[: self.max_rows]
            times, values, mask = times[order], values[order], mask[order]
        x, pm = _patches(self.scaling, times, values, mask, self.patch_size)
        num = math.ceil(self.max_rows / self.patch_size)
        if x.shape[0] < num:
            x = jnp.concatenate([x, jnp.zeros((num - x.shape[0], x.shape[1]), x.dtype)])
            pm = jnp.concatenate([pm, jnp.zeros(num - pm.shape[0], bool)])
        return x, pm

    def __call__(self, times, values, mask):
        _check_inputs(times, values, mask, self.num_channels)
        x, pm = self._canonical(times, values, mask)
        h = jnp.where(pm[:, None], jax.vmap(self.embed)(x), 0.0)
        for block in self.blocks:
            h = block(h, pm)
        mean = jnp.sum(h, axis=0) / jnp.maximum(jnp.sum(pm), 1).astype(h.dtype)
        mx = jnp.where(jnp.any(pm), jnp.max(jnp.where(pm[:, None], h, -jnp.inf), axis=0), 0.0)
        count = jnp.log1p(jnp.sum(mask).astype(jnp.float32))[None]
        return self.rho(jnp.concatenate([mean, mx, count]))
