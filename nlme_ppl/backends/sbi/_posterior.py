"""`SbiPosterior`: sbi's neural posterior estimation (NPE) as an amortized posterior q(φ | y), with
the [`Posterior`][nlme_ppl.estimators.Posterior] interface of the flowjax estimators: `sample`,
`log_prob`, `summaries`, `save`, so that `fit_map`, `fit_nuts` and the diagnostics take it unchanged."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..._validate import check_keys, positive_int
from ...data import Dataset
from ...estimators import TrainingHistory, save_posterior
from ...io.serialization import ArchiveError
from ._config import SbiConfig
from ._estimator import build_estimator, fit_rows, quiet, rows, seed_from
from ._torch import torch

__all__ = ["SbiPosterior"]

_DRAWS_PER_CHUNK = 50_000


class SbiPosterior:
    """An sbi-trained amortized posterior q(φ | y) of an individual model.

    Made by `nlp.train(model, key, backend="sbi", ...)` (or
    [`train_sbi`][nlme_ppl.backends.sbi.train_sbi]) and loaded by `nlp.load_posterior`. It
    reads data through the same encoding as the flowjax estimators
    ([`encode`][nlme_ppl.estimators.encode]), and has their interface.

    **Fields:** `model`, `estimator` (sbi's density estimator, a torch module), `config`
    ([`SbiConfig`][nlme_ppl.backends.sbi.SbiConfig]), `rows` (the fixed number of input rows),
    `history` (a [`TrainingHistory`][nlme_ppl.estimators.TrainingHistory]: losses per epoch,
    the best epoch, the split, seconds), `design_record` (how its training designs were made, as
    JSON: the file's `designs` block, which `fit_map` / `fit_nuts` check data against; `""` for a
    file without one).
    """

    #: the archive registry's name of this backend
    backend = "sbi"

    def __init__(self, *, model, estimator, config: SbiConfig, rows: int, history: TrainingHistory, design_record: str = ""):
        if not isinstance(history, TrainingHistory):
            raise TypeError(f"`history` must be a TrainingHistory; got {type(history).__name__}.")
        self.model, self.estimator, self.config, self.rows, self.history = model, estimator.eval(), config, int(rows), history
        self.design_record = str(design_record)

    def with_designs(self, model, design_record: str) -> "SbiPosterior":
        """This estimator for `model` with `design_record` (what `nlp.train` records), sharing the network."""
        return type(self)(model=model, estimator=self.estimator, config=self.config, rows=self.rows, history=self.history, design_record=design_record)

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.model.param_names

    @property
    def num_params(self) -> int:
        return self.model.num_params

    def _x(self, data):
        if not isinstance(data, Dataset):
            raise TypeError(f"expected a nlme_ppl.Dataset; got {type(data).__name__}.")
        return torch.tensor(fit_rows(rows(self.model, data), self.rows, self.model.name))

    def _chunks(self, n: int, per_individual: int):
        size = max(1, _DRAWS_PER_CHUNK // max(per_individual, 1))
        return [(s, min(s + size, n)) for s in range(0, n, size)]

    def sample(self, data: Dataset, key: PRNGKeyArray, *, num_draws: int) -> Float[Array, "individuals draws k"]:
        """Draw `num_draws` parameter vectors from q(φ | y_i) for every individual of `data`.

        `key` seeds torch's generator (the draws are reproducible from it; sbi draws in chunks of
        individuals from one stream). **Returns:** float64 `(N, M, k)`, last axis in `param_names` order.
        """
        check_keys(key)
        num_draws = positive_int(num_draws, name="num_draws")
        x = self._x(data)
        outs = []
        with torch.no_grad(), torch.random.fork_rng(devices=[]), quiet():
            torch.manual_seed(seed_from(key))
            for s, e in self._chunks(x.shape[0], num_draws):
                outs.append(self.estimator.sample((num_draws,), condition=x[s:e]).transpose(0, 1).double().numpy())
        params = jnp.asarray(np.concatenate(outs), jnp.float64)
        if self.model.exchangeable:  # trained on the canonical form, as the flowjax estimators
            params = self.model.symmetrize(jax.random.fold_in(key, 2**31 - 1), params)
        return params

    def log_prob(self, data: Dataset, params: Float[Array, "individuals draws k"]) -> Float[Array, "individuals draws"]:
        """log q(φ_ij | y_i), shape `(N, M)` (float64)."""
        x = self._x(data)
        params = jnp.asarray(params, jnp.float64)
        n, k = x.shape[0], self.num_params
        if params.ndim != 3 or params.shape[0] != n or params.shape[2] != k:
            raise ValueError(f"`params` must have shape (individuals={n}, draws, k={k}); got {params.shape}.")
        theta = torch.tensor(np.asarray(self.model.canonicalize(params), np.float32))
        outs = []
        with torch.no_grad(), quiet():
            for s, e in self._chunks(n, params.shape[1]):
                outs.append(self.estimator.log_prob(theta[s:e].transpose(0, 1), condition=x[s:e]).transpose(0, 1).double().numpy())
        return jnp.asarray(np.concatenate(outs)) - self.model.log_num_symmetries

    def summaries(self, data: Dataset) -> Float[Array, "individuals summary_dim"]:
        """The embedding network's output for every individual, `(N, summary_dim)`."""
        x = self._x(data)
        with torch.no_grad():
            return jnp.asarray(self.estimator.net._embedding_net(x).numpy())

    def save(self, path: str | Path) -> None:
        """Write this estimator to one file: JSON metadata and `torch.save` of the state dict (no pickle)."""
        save_posterior(self, path)

    # ------------------------------------------------------------------ the archive
    def to_archive(self) -> tuple[dict[str, Any], bytes]:
        """The metadata of this estimator's file and its weights (`torch.save` of the state dict)."""
        buf = io.BytesIO()
        torch.save(self.estimator.state_dict(), buf)
        architecture = {"num_params": self.num_params, "rows": self.rows, "channels": int(self.estimator.condition_shape[-1])}
        meta = {"config": self.config.to_dict(), "architecture": architecture, "history": self.history.to_dict()}
        if self.design_record:
            meta["designs"] = json.loads(self.design_record)
        return meta, buf.getvalue()

    @classmethod
    def from_archive(cls, metadata: dict[str, Any], payload: bytes, model) -> "SbiPosterior":
        """The estimator of a file's metadata and weights (`torch.load(weights_only=True)`), for
        `model`: the archive registry's loader of the sbi backend. Raises `ArchiveError` for
        metadata or weights that do not fit."""
        try:
            config = SbiConfig.from_dict(metadata["config"])
            arch = metadata["architecture"]
            est = build_estimator(config, num_params=int(arch["num_params"]), num_rows=int(arch["rows"]),
                                  channels=int(arch["channels"]))
            est.load_state_dict(torch.load(io.BytesIO(payload), weights_only=True))
            history = _history(metadata.get("history", {}), config)
        except Exception as e:  # noqa: BLE001 - any failure here means the weights do not fit the architecture
            raise ArchiveError(f"its weights do not fit the architecture in its metadata ({type(e).__name__}: {e}).") from None
        designs = metadata.get("designs")
        record = json.dumps(designs, sort_keys=True) if isinstance(designs, dict) else ""
        return cls(model=model, estimator=est, config=config, rows=int(arch["rows"]), history=history, design_record=record)

    def __repr__(self) -> str:
        best = f", best val loss {self.history.best_val_loss:.4g}" if self.history.val_loss else ""
        return (f"SbiPosterior(model={self.model.name!r}, params={self.param_names}, flow={self.config.flow}×"
                f"{self.config.num_transforms}, embedding={self.config.embedding}{best})")


def _history(d: dict[str, Any], config: SbiConfig) -> TrainingHistory:
    """The `TrainingHistory` of a file's metadata. Files written before the backends shared the
    type hold sbi's dict (`training_loss`, `validation_loss`, `num_simulations`, ...); its split
    is the one training made (`validation_fraction` of the simulations, at least one), and its
    best epoch the first with the least validation loss, as training kept."""
    if "validation_loss" not in d and "training_loss" not in d:
        return TrainingHistory.from_dict(d)
    val = tuple(float(v) for v in d.get("validation_loss", ()))
    n = int(d.get("num_simulations", 0))
    num_val = max(1, int(round(config.validation_fraction * n))) if n else 0
    return TrainingHistory(
        train_loss=tuple(float(v) for v in d.get("training_loss", ())), val_loss=val,
        best_epoch=int(np.argmin(val)) if val else -1, num_train=n - num_val, num_val=num_val,
        train_seconds=float(d.get("train_seconds", 0.0)), simulate_seconds=float(d.get("simulate_seconds", 0.0)),
    )
