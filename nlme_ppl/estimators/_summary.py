"""Summary networks: one individual's padded sequence `(times, values, mask)` -> a vector.

Every network first *compacts* the sequence (a stable sort moves the observed entries to the
front, in their original order), so padding anywhere in the sequence becomes padding at the
end. Padded steps then leave the output unchanged:

- the GRU carries its state through them with `jnp.where(mask, h_new, h)`;
- pooled sums are accumulated in float64 over features that are exactly zero at padded
  steps, so neither the position nor the amount of padding changes the rounding.

Networks hold their parameters in float32 and return float32.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

__all__ = ["AbstractSummary", "DeepSetSummary", "GRUSummary", "InputScaling", "gru_states", "to_float32"]


def to_float32(tree):
    """Cast every floating-point array leaf of `tree` to float32 (other leaves unchanged)."""

    def cast(x):
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(jnp.float32)
        return x

    return jax.tree.map(cast, tree)


class InputScaling(eqx.Module):
    """Standardisation of network inputs: `t / time_scale`, gaps `Δt / gap_scale`, and
    `(y - value_loc) / value_scale`.

    The scalars are fitted on training data by [`InputScaling.fit`][nlme_ppl.estimators.InputScaling.fit] and are not trained
    (gradients are stopped).
    """

    time_scale: Float[Array, ""]
    gap_scale: Float[Array, ""]
    value_loc: Float[Array, ""]
    value_scale: Float[Array, ""]

    def __init__(
        self, time_scale: float = 1.0, gap_scale: float = 1.0, value_loc: float = 0.0, value_scale: float = 1.0
    ):
        for name, v in (("time_scale", time_scale), ("gap_scale", gap_scale), ("value_scale", value_scale)):
            if isinstance(v, (int, float)) and not (np.isfinite(v) and v > 0):
                raise ValueError(f"`{name}` must be a positive finite number; got {v}.")
        self.time_scale = jnp.asarray(time_scale, jnp.float32)
        self.gap_scale = jnp.asarray(gap_scale, jnp.float32)
        self.value_loc = jnp.asarray(value_loc, jnp.float32)
        self.value_scale = jnp.asarray(value_scale, jnp.float32)

    @classmethod
    def fit(cls, times, values, mask) -> "InputScaling":
        """Fit on `(n, T)` training arrays, observed entries only: the largest |time|, the
        median gap between consecutive observations, and the mean and SD of the values."""
        times, values, mask = np.asarray(times), np.asarray(values), np.asarray(mask, bool)
        if not mask.any():
            raise ValueError("the training data has no observed entries (every mask entry is False).")
        t, y = times[mask], values[mask]
        time_scale = float(np.max(np.abs(t))) or 1.0
        rows = mask[: min(len(mask), 2000)]
        gaps = np.concatenate([np.diff(r_t[r_m]) for r_t, r_m in zip(times[: len(rows)], rows)])
        gaps = gaps[gaps > 0]
        gap_scale = float(np.median(gaps)) if gaps.size else time_scale
        value_scale = float(np.std(y)) or 1.0
        return cls(time_scale, gap_scale, float(np.mean(y)), value_scale)

    def __call__(self, times, gaps, values):
        ts, gs, loc, sc = jax.lax.stop_gradient((self.time_scale, self.gap_scale, self.value_loc, self.value_scale))
        return times / ts, gaps / gs, (values - loc) / sc


def _compact(times, values, mask):
    """Move observed entries to the front (stable), zero the padding."""
    order = jnp.argsort(~mask, stable=True)
    t, y, m = times[order], values[order], mask[order]
    zero = jnp.zeros((), times.dtype)
    my = m if y.ndim == 1 else m[:, None]
    return jnp.where(m, t, zero), jnp.where(my, y, zero), m


def _patches(scaling: InputScaling, times, values, mask, size: int):
    """Group consecutive observations into patches of `size`, after compaction.

    Returns per-patch features `(P, (3 + F) * size)` and the patch mask `(P,)` (a patch exists if
    its first entry is observed). Features: the patch's first time, the gap to the previous
    observation before each entry, the values, a flag per entry, and the `F` event channels
    of each entry (when `values` is `(T, 1 + F)`, see `_encoding`); zero where padded.
    """
    t, y, m = _compact(times, values, mask)
    events = None
    if y.ndim == 2:
        y, events = y[:, 0], y[:, 1:]
    n = t.shape[0]
    extra = (-n) % size
    if extra:
        t, y = (jnp.concatenate([a, jnp.zeros(extra, a.dtype)]) for a in (t, y))
        m = jnp.concatenate([m, jnp.zeros(extra, bool)])
        if events is not None:
            events = jnp.concatenate([events, jnp.zeros((extra, events.shape[1]), events.dtype)])
    gap = jnp.where(m, t - jnp.concatenate([t[:1], t[:-1]]), 0.0)
    t, gap, y = scaling(t.astype(jnp.float32), gap.astype(jnp.float32), y.astype(jnp.float32))
    mf = m.astype(jnp.float32)
    t, gap, y = t * mf, gap * mf, y * mf
    p = t.shape[0] // size
    shape = (p, size)
    parts = [t.reshape(shape)[:, :1], gap.reshape(shape), y.reshape(shape), mf.reshape(shape)[:, 1:]]
    if events is not None:
        parts.append((events.astype(jnp.float32) * mf[:, None]).reshape(p, -1))
    return jnp.concatenate(parts, axis=-1), m.reshape(shape)[:, 0]


def _masked_mean(feats, mask):
    """Mean of `feats` `(P, H)` over rows where `mask`.

    Summed by a sequential scan: with the padding compacted to the end and zeroed, the
    amount of padding cannot change the rounding (a tree reduction's split would).
    """
    w = jnp.where(mask[:, None], feats, 0.0)
    total, _ = jax.lax.scan(lambda c, x: (c + x, None), jnp.zeros(feats.shape[1:], feats.dtype), w)
    return total / jnp.maximum(jnp.sum(mask), 1).astype(feats.dtype)


def _check_inputs(times, values, mask, num_channels: int = 1):
    want = times.shape if num_channels == 1 else (*times.shape, num_channels)
    if times.ndim != 1 or values.shape != want or mask.shape != times.shape:
        raise ValueError(
            "a summary network takes ONE individual's times (T,), values "
            f"{'(T,)' if num_channels == 1 else f'(T, {num_channels})'} and mask (T,); got {times.shape}, "
            f"{values.shape}, {mask.shape}. vmap over individuals."
        )


class AbstractSummary(eqx.Module):
    """A summary network: one individual's `(times, values, mask)`, each `(T,)` -> `(summary_dim,)`.

    Implementations must give the same output whatever the padding (entries with
    `mask == False`), wherever it lies.
    """

    scaling: eqx.AbstractVar[InputScaling]
    summary_dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(
        self, times: Float[Array, " T"], values: Float[Array, " T"], mask: Bool[Array, " T"]
    ) -> Float[Array, " summary_dim"]:
        """**Arguments:** `times`, `values`, `mask` of one individual, each `(T,)`; for dosing
        models `values` is `(T, C)`, the event rows of `nlme_ppl.estimators.encode`.

        **Returns:** the summary, shape `(summary_dim,)`, float32.
        """


class GRUSummary(AbstractSummary):
    """A GRU over patches of consecutive observations, carried unchanged through padding.

    Each step reads one patch of `patch_size` consecutive observed entries (see
    `DeepSetSummary`); `patch_size=1` is a plain GRU over observations. The summary is an
    MLP of the final state, the masked mean of the states, and log(1 + #obs).

    **Arguments:**

    - `key`: a JAX random key.
    - `summary_dim`: output size.
    - `hidden_size`: GRU state size.
    - `patch_size`: observations read per GRU step.
    - `scaling`: the input standardisation (default: none).
    - `num_channels`: channels per row, 1 (the measurement) or 1 + event channels (dosing models).
    """

    scaling: InputScaling
    cell: eqx.nn.GRUCell
    head: eqx.nn.MLP
    summary_dim: int = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    num_channels: int = eqx.field(static=True)

    def __init__(
        self, key: PRNGKeyArray, *, summary_dim: int = 32, hidden_size: int = 64, patch_size: int = 4, scaling=None,
        num_channels: int = 1,
    ):
        k1, k2 = jax.random.split(key)
        self.scaling = InputScaling() if scaling is None else scaling
        self.summary_dim, self.patch_size, self.num_channels = summary_dim, patch_size, num_channels
        self.cell = to_float32(eqx.nn.GRUCell((2 + num_channels) * patch_size, hidden_size, dtype=jnp.float32, key=k1))
        self.head = to_float32(
            eqx.nn.MLP(2 * hidden_size + 1, summary_dim, hidden_size, 1, activation=jax.nn.gelu, dtype=jnp.float32, key=k2)
        )

    def __call__(self, times, values, mask):
        _check_inputs(times, values, mask, self.num_channels)
        x, pm = _patches(self.scaling, times, values, mask, self.patch_size)
        h, hs = gru_states(self.cell, x, pm)
        count = jnp.log1p(jnp.sum(mask).astype(jnp.float32))[None]
        return self.head(jnp.concatenate([h, _masked_mean(hs, pm), count]))


def gru_states(cell: eqx.nn.GRUCell, x: Float[Array, "T F"], mask: Bool[Array, " T"]):
    """`eqx.nn.GRUCell` run over the rows of `x` from a zero state, the state carried unchanged
    through rows where `mask` is False. **Returns:** the last state and every step's state.

    The same arithmetic as `cell(x_t, h)` step by step (tests/estimators/test_summary.py
    compares them), with the input projection of every step done at once before the scan, so
    that the scan does only the recurrent part.
    """
    xi = x @ cell.weight_ih.T + cell.bias

    def step(h, inp):
        xi_t, m_t = inp
        r_i, z_i, n_i = jnp.split(xi_t, 3)
        r_h, z_h, n_h = jnp.split(cell.weight_hh @ h, 3)
        r = jax.nn.sigmoid(r_i + r_h)
        z = jax.nn.sigmoid(z_i + z_h)
        n = jnp.tanh(n_i + r * (n_h + cell.bias_n))
        h = jnp.where(m_t, n + z * (h - n), h)
        return h, h

    return jax.lax.scan(step, jnp.zeros(cell.hidden_size, jnp.float32), (xi, mask))


class DeepSetSummary(AbstractSummary):
    """A DeepSet over patches of consecutive observations: per-patch MLP, masked mean and
    max pooling, then an MLP.

    After compaction (observed entries first), the observations are cut into patches of
    `patch_size` consecutive entries. A patch's features are its first time, the gap before
    each entry, the values, and flags for the entries present; so the network sees local
    differences (and the noise level) directly, at `patch_size` times fewer positions than a
    per-observation DeepSet. log(1 + #obs) is appended to the pooled features.

    **Arguments:**

    - `key`: a JAX random key.
    - `summary_dim`: output size.
    - `hidden_size`: width of the per-patch and output MLPs.
    - `depth`: hidden layers of the per-patch MLP.
    - `patch_size`: consecutive observations per patch (1: a plain DeepSet).
    - `scaling`: the input standardisation (default: none).
    - `num_channels`: channels per row, 1 (the measurement) or 1 + event channels (dosing models).
    """

    scaling: InputScaling
    phi: eqx.nn.MLP
    rho: eqx.nn.MLP
    summary_dim: int = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    num_channels: int = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        *,
        summary_dim: int = 32,
        hidden_size: int = 64,
        depth: int = 2,
        patch_size: int = 4,
        scaling=None,
        num_channels: int = 1,
    ):
        k1, k2 = jax.random.split(key)
        self.scaling = InputScaling() if scaling is None else scaling
        self.summary_dim, self.patch_size, self.num_channels = summary_dim, patch_size, num_channels
        self.phi = to_float32(
            eqx.nn.MLP((2 + num_channels) * patch_size, hidden_size, hidden_size, depth, activation=jax.nn.gelu, dtype=jnp.float32, key=k1)
        )
        self.rho = to_float32(
            eqx.nn.MLP(2 * hidden_size + 1, summary_dim, 2 * hidden_size, 1, activation=jax.nn.gelu, dtype=jnp.float32, key=k2)
        )

    def __call__(self, times, values, mask):
        _check_inputs(times, values, mask, self.num_channels)
        x, pm = _patches(self.scaling, times, values, mask, self.patch_size)
        h = jax.vmap(self.phi)(x)
        mean = _masked_mean(h, pm)
        mx = jnp.max(jnp.where(pm[:, None], h, -jnp.inf), axis=0)
        mx = jnp.where(jnp.any(pm), mx, 0.0)
        count = jnp.log1p(jnp.sum(mask).astype(jnp.float32))[None]
        return self.rho(jnp.concatenate([mean, mx, count]))
