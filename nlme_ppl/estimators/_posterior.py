"""`AmortizedPosterior`: a trained q(φ | y) — summary network, flow and standardisation."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flowjax.distributions import Transformed
from jaxtyping import Array, Float, PRNGKeyArray

from .._buffers import write_rows
from .._validate import check_keys, positive_int
from ..data import Dataset
from ..io.serialization import ArchiveError
from ..models import IndividualModel
from ._config import TrainConfig
from ._encoding import encode, num_channels
from ._flow import build_flow
from ._history import TrainingHistory
from ._spline_coupling import flow_log_prob_batch, flow_sample_batch
from ._attention import AttentionSummary
from ._summary import AbstractSummary, DeepSetSummary, GRUSummary, InputScaling

__all__ = ["AmortizedPosterior", "build_networks"]

#: Draws evaluated per chunk when `chunk_size` is not given (individuals × draws). On a 2-core
#: CPU, N=10,000 × M=100 took 2.6 s at 10k–20k draws per chunk, 3.3 s at 40k–100k (cache).
_DRAWS_PER_CHUNK = 20_000


def build_networks(
    config: TrainConfig, *, num_params: int, scaling: InputScaling, key: PRNGKeyArray, num_channels: int = 1
) -> tuple[AbstractSummary, Transformed]:
    """The untrained summary network and flow that `config` describes (float32). `num_channels`:
    channels per input row (1, or 1 + event channels for dosing models; see `_encoding`)."""
    k_sum, k_flow = jax.random.split(key)
    common = dict(summary_dim=config.summary_dim, hidden_size=config.hidden_size, patch_size=config.patch_size,
                  scaling=scaling, num_channels=num_channels)  # fmt: skip
    if config.summary == "gru":
        summary = GRUSummary(k_sum, **common)
    elif config.summary == "attention":
        if config.max_rows is None:
            raise ValueError("an attention summary needs TrainConfig.max_rows (train sets it from the simulations).")
        summary = AttentionSummary(k_sum, depth=config.summary_depth, max_rows=config.max_rows, **common)
    else:  # the DeepSet's per-patch MLP layers
        summary = DeepSetSummary(k_sum, depth=config.summary_depth, **common)
    flow = build_flow(
        k_flow,
        dim=num_params,
        cond_dim=config.summary_dim,
        kind=config.flow,
        flow_layers=config.flow_layers,
        knots=config.knots,
        interval=config.interval,
        nn_width=config.nn_width,
        nn_depth=config.nn_depth,
    )
    return summary, flow


# ---------------------------------------------------------------------- jitted kernels
# Module-level so that their compilation caches persist across calls; every chunk has the same
# shapes (the last one is padded), so one compiled kernel serves them all. The chunk kernels run
# under `jax.enable_x64(False)` (see `_f32`), on float32 inputs; `_finish` runs in float64.


@eqx.filter_jit
def _summaries_chunk(summary, times, values, mask):
    return jax.vmap(summary)(times, values, mask)


@eqx.filter_jit
def _sample_chunk(summary, flow, times, values, mask, index, key, num_draws: int):
    # One summary per individual; individual i's base draws come from fold_in(key, i).
    s = jax.vmap(summary)(times, values, mask)
    u = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (num_draws, *flow.shape), jnp.float32))(index)
    return flow_sample_batch(flow, u, s)


@eqx.filter_jit
def _finish(model, loc, scale, z, key):
    """Standardised float32 draws -> float64 parameters, exchangeable groups relabelled at random."""
    params = _scale(loc, scale, z)
    if model.exchangeable:  # the flow learned the canonical form: permute groups at random
        params = model.symmetrize(jax.random.fold_in(key, 2**31 - 1), params)
    return params


@eqx.filter_jit
def _log_prob_chunk(summary, flow, times, values, mask, z):
    return flow_log_prob_batch(flow, z, jax.vmap(summary)(times, values, mask))


@jax.jit
def _scale(loc, scale, z):
    return loc + scale * z.astype(jnp.float64)


def _f32():
    """Networks are traced with 64-bit mode off, so that every constant is float32."""
    return jax.enable_x64(False)


def _chunks(n: int, size: int):
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pad axis 0 to `size` by repeating the first row (results for padding are dropped)."""
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.repeat(x[:1], size - x.shape[0], axis=0)])


class AmortizedPosterior(eqx.Module):
    """An amortized posterior q(φ | y) of an individual model, trained by [`train`][nlme_ppl.train]
    (the flowjax backend). It has the [`Posterior`][nlme_ppl.estimators.Posterior] interface.

    **Fields:**

    - `model`: the [`IndividualModel`][nlme_ppl.models.IndividualModel] it was trained for
      (`post.model.prior_log_prob`, `post.model.param_names`).
    - `summary`: the summary network (with its input standardisation).
    - `flow`: the flowjax conditional flow on standardised parameters.
    - `param_loc`, `param_scale`: the parameter standardisation, `φ = loc + scale · z`.
    - `config`: the [`TrainConfig`][nlme_ppl.TrainConfig] it was built and trained with.
    - `history`: the [`TrainingHistory`][nlme_ppl.estimators.TrainingHistory] (losses per epoch, best epoch, timings).
    - `design_record`: how its training designs were made, as JSON (the file's `designs` block:
      `{"kind": "builtin" | "like", ..., "envelope": {...}}`; see [`check_designs`][nlme_ppl.designs.check_designs]),
      or `""` (a file written before it was recorded).
    """

    model: IndividualModel
    summary: AbstractSummary
    flow: Transformed
    param_loc: Float[Array, " k"]
    param_scale: Float[Array, " k"]
    config: TrainConfig
    history: TrainingHistory
    design_record: str = eqx.field(static=True, default="")

    #: the archive registry's name of this backend
    backend = "flowjax"

    def __check_init__(self):
        k = self.model.num_params
        if self.flow.shape != (k,):
            raise ValueError(f"the flow has shape {self.flow.shape} but model {self.model.name!r} has {k} parameters.")
        if jnp.shape(self.param_loc) != (k,) or jnp.shape(self.param_scale) != (k,):
            raise ValueError(f"`param_loc` and `param_scale` must have shape ({k},).")

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.model.param_names

    @property
    def num_params(self) -> int:
        return self.model.num_params

    # ------------------------------------------------------------------ helpers
    def _inputs(self, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not isinstance(data, Dataset):
            raise TypeError(
                f"expected a nlme_ppl.Dataset; got {type(data).__name__}. Build one with "
                "nlp.Dataset.from_arrays(times, values, mask=...) or nlp.read_nonmem(path)."
            )
        return encode(self.model, data)

    @staticmethod
    def _chunk_size(chunk_size, n: int, per_individual: int) -> int:
        if chunk_size is None:
            return max(1, min(n, _DRAWS_PER_CHUNK // max(per_individual, 1)))
        return min(positive_int(chunk_size, name="chunk_size"), n)

    # ------------------------------------------------------------------ public API
    def sample(
        self, data: Dataset, key: PRNGKeyArray, *, num_draws: int, chunk_size: int | None = None
    ) -> Float[Array, "individuals draws k"]:
        """Draw `num_draws` parameter vectors from q(φ | y_i) for every individual of `data`.

        **Arguments:**

        - `data`: a [`Dataset`][nlme_ppl.Dataset] of `N` individuals (any number of
          observations; padding is ignored).
        - `key`: a JAX random key. Individual `i`'s draws depend only on `key` and `i`, so
          the result does not depend on `chunk_size` beyond float32 rounding (the flow's
          arithmetic differs with the batch shape: up to 5e-6 measured between chunks of 5
          and of all individuals).
        - `num_draws`: draws per individual, `M`.
        - `chunk_size`: individuals per compiled call (bounds memory). Default: about
          20,000 draws per call (measured fastest on this CPU).

        **Returns:** float64 array of shape `(N, M, k)`, last axis in `param_names` order.
        """
        check_keys(key)
        num_draws = positive_int(num_draws, name="num_draws")
        times, values, mask = self._inputs(data)
        n = times.shape[0]
        size = self._chunk_size(chunk_size, n, num_draws)
        index = np.arange(n, dtype=np.int32)

        def chunk(s, e):
            args = (_pad(a[s:e], size) for a in (times, values, mask, index))
            with _f32():
                return _sample_chunk(self.summary, self.flow, *args, key, num_draws)[: e - s]

        if self.model.exchangeable or n <= size:  # exchangeable: the groups are relabelled at random over all draws at once
            z = jnp.concatenate([chunk(s, e) for s, e in _chunks(n, size)])
            return _finish(self.model, self.param_loc, self.param_scale, z, key)
        # chunk by chunk into one float64 array allocated once (bit for bit the same as above): the
        # chunk list, its concatenation and the float64 copy held 2.5x the draws at once (N = 10^6)
        out = jnp.zeros((n, num_draws, self.num_params), jnp.float64)
        for s, e in _chunks(n, size):
            out = write_rows(out, _scale(self.param_loc, self.param_scale, chunk(s, e)), s)
        return out

    def log_prob(
        self, data: Dataset, params: Float[Array, "individuals draws k"], *, chunk_size: int | None = None
    ) -> Float[Array, "individuals draws"]:
        """log q(φ_ij | y_i) on the original parameter scale.

        **Arguments:**

        - `data`: a [`Dataset`][nlme_ppl.Dataset] of `N` individuals.
        - `params`: `(N, M, k)` parameter vectors (`M` per individual).
        - `chunk_size`: individuals per compiled call.

        **Returns:** float64 array of shape `(N, M)`.
        """
        times, values, mask = self._inputs(data)
        params = jnp.asarray(params, jnp.float64)
        n, k = times.shape[0], self.num_params
        if params.ndim != 3 or params.shape[0] != n or params.shape[2] != k:
            raise ValueError(
                f"`params` must have shape (individuals={n}, draws, k={k}) with the last axis in the order "
                f"{self.param_names}; got {params.shape}."
            )
        params = self.model.canonicalize(params)  # density of the symmetric posterior (see `sample`)
        z = np.asarray((params - self.param_loc) / self.param_scale, np.float32)
        size = self._chunk_size(chunk_size, n, params.shape[1])
        outs = []
        with _f32():
            for s, e in _chunks(n, size):
                args = [_pad(a[s:e], size) for a in (times, values, mask, z)]
                outs.append(_log_prob_chunk(self.summary, self.flow, *args)[: e - s])
            lq = jnp.concatenate(outs) if len(outs) > 1 else outs[0]
        return lq.astype(jnp.float64) - jnp.sum(jnp.log(self.param_scale)) - self.model.log_num_symmetries

    def summaries(self, data: Dataset, *, chunk_size: int | None = None) -> Float[Array, "individuals summary_dim"]:
        """The summary network's output for every individual, shape `(N, summary_dim)` (float32;
        never `None`: this estimator always has a summary network)."""
        times, values, mask = self._inputs(data)
        n = times.shape[0]
        size = self._chunk_size(chunk_size, n, 64)
        outs = []
        with _f32():
            for s, e in _chunks(n, size):
                args = [_pad(a[s:e], size) for a in (times, values, mask)]
                outs.append(_summaries_chunk(self.summary, *args)[: e - s])
            return jnp.concatenate(outs) if len(outs) > 1 else outs[0]

    def with_designs(self, model: IndividualModel, design_record: str) -> "AmortizedPosterior":
        """This estimator for `model` with `design_record` (what `nlp.train` records), sharing the networks."""
        return dataclasses.replace(self, model=model, design_record=design_record)

    def save(self, path: str | Path) -> None:
        """Write this estimator to one file (see [`save_posterior`][nlme_ppl.estimators.save_posterior])."""
        from ._archive import save_posterior

        save_posterior(self, path)

    # ------------------------------------------------------------------ the archive
    def _payload(self):
        """What `leaves.eqx` stores (arrays only; the model is not stored)."""
        return (self.summary, self.flow, self.param_loc, self.param_scale)

    def to_archive(self) -> tuple[dict[str, Any], bytes]:
        """The metadata of this estimator's file and its weights (`equinox.tree_serialise_leaves`)."""
        buf = io.BytesIO()
        eqx.tree_serialise_leaves(buf, self._payload())
        meta = {"config": self.config.to_dict(), "architecture": {"num_params": self.num_params}, "history": self.history.to_dict()}
        if self.design_record:
            meta["designs"] = json.loads(self.design_record)
        return meta, buf.getvalue()

    @classmethod
    def from_archive(cls, metadata: dict[str, Any], payload: bytes, model: IndividualModel) -> "AmortizedPosterior":
        """The estimator of a file's metadata and weights, for `model` (the archive registry's loader
        of the flowjax backend). Raises `ArchiveError` for metadata or weights that do not fit."""
        try:
            config = TrainConfig.from_dict(metadata["config"])
            num_params = int(metadata["architecture"]["num_params"])
            history = TrainingHistory.from_dict(metadata.get("history", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ArchiveError(f"its metadata is incomplete or invalid ({e}); the file is corrupt.") from None
        if num_params != model.num_params:
            raise ArchiveError(f"it stores {num_params} parameters but the model has {model.num_params}.")
        with _f32():
            summary, flow = build_networks(
                config, num_params=num_params, scaling=InputScaling(), key=jax.random.key(0), num_channels=num_channels(model)
            )
        like = (summary, flow, jnp.zeros(num_params, jnp.float64), jnp.zeros(num_params, jnp.float64))
        try:
            summary, flow, loc, scale = eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
        except Exception as e:  # noqa: BLE001 - any failure here means the leaves do not fit the skeleton
            raise ArchiveError(f"its weights do not fit the architecture in its metadata ({type(e).__name__}: {e}).") from None
        designs = metadata.get("designs")
        record = json.dumps(designs, sort_keys=True) if isinstance(designs, dict) else ""
        return cls(model=model, summary=summary, flow=flow, param_loc=loc, param_scale=scale, config=config, history=history,
                   design_record=record)

    def __repr__(self) -> str:
        h = self.history
        best = f", best val loss {h.best_val_loss:.4g} at epoch {h.best_epoch + 1}" if h.val_loss else ""
        return (
            f"AmortizedPosterior(model={self.model.name!r}, params={self.param_names}, "
            f"summary={self.config.summary}, flow={self.config.flow}×{self.config.flow_layers}{best})"
        )
