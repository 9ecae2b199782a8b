"""sbi's density estimator as nlme_ppl builds it, and the rows it reads."""

from __future__ import annotations

import contextlib
import warnings

import jax
import numpy as np

from ...data import Dataset
from ...estimators import encode
from ._config import SbiConfig
from ._embedding import EMBEDDINGS
from ._torch import torch

__all__ = ["build_estimator", "builder", "fit_rows", "quiet", "rows", "seed_from"]


def rows(model, data: Dataset) -> np.ndarray:
    """sbi's x for every individual: `(N, R, 3 + C)` float32 rows `[t, Δt, channels..., mask]`
    (the channels of `nlme_ppl.estimators.encode`), observed rows first in time order, padding
    zero (the mask is the last channel)."""
    times, values, mask = encode(model, data)
    if values.ndim == 2:
        values = values[..., None]
    order = np.argsort(~mask, axis=1, kind="stable")
    times = np.take_along_axis(times, order, axis=1)
    values = np.take_along_axis(values, order[..., None], axis=1)
    mask = np.take_along_axis(mask, order, axis=1)
    gaps = np.where(mask, times - np.concatenate([times[:, :1], times[:, :-1]], axis=1), 0.0)
    x = np.concatenate([times[..., None], gaps[..., None], values, mask[..., None]], axis=-1)
    return np.where(mask[..., None], x, 0.0).astype(np.float32)


def fit_rows(x: np.ndarray, num_rows: int, model_name: str) -> np.ndarray:
    """Pad `x` to the estimator's `num_rows`, or refuse data with more observed rows than it was built for."""
    r = x.shape[1]
    if r < num_rows:
        return np.concatenate([x, np.zeros((x.shape[0], num_rows - r, x.shape[2]), np.float32)], axis=1)
    if r > num_rows:
        longest = int(x[..., -1].sum(axis=1).max())
        if longest > num_rows:
            raise ValueError(
                f"an individual has {longest} rows (observations and doses), more than the {num_rows} this sbi estimator "
                f"of {model_name!r} was trained with (sbi fixes the input shape); retrain with a design prior that covers "
                "it, or use the flowjax backend (nlp.train), whose summary networks read any length."
            )
        return np.ascontiguousarray(x[:, :num_rows])
    return x


def builder(config: SbiConfig, num_channels: int):
    """sbi's `posterior_nn` builder of `config`'s estimator, and its (untrained) embedding network."""
    from sbi.neural_nets import posterior_nn

    embedding = EMBEDDINGS[config.embedding](num_channels - 1, hidden=config.embedding_hidden, out_dim=config.summary_dim)
    build = posterior_nn(
        model=config.flow,
        z_score_theta="independent",  # the flow's first layer standardises φ (buffers in the state dict)
        z_score_x="none",  # the embedding standardises rows; sbi's would scale the mask too
        hidden_features=config.hidden_features,
        num_transforms=config.num_transforms,
        num_bins=config.num_bins,
        embedding_net=embedding,
    )
    return build, embedding


def build_estimator(config: SbiConfig, *, num_params: int, num_rows: int, channels: int):
    """A fresh (untrained) sbi density estimator of this architecture; dummy batches set the shapes,
    and `load_state_dict` then sets every weight and standardisation."""
    build, _ = builder(config, channels)
    x = torch.zeros(8, num_rows, channels)
    x[:, :1, -1] = 1.0
    return build(torch.randn(8, num_params), x)


@contextlib.contextmanager
def quiet():
    """Silence what sbi and nflows warn about by design here: the mask channel is "constant" in
    some rows, and nflows' LU layers call torch's deprecated `triangular_solve`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*constant values.*")
        warnings.filterwarnings("ignore", message=".*triangular_solve.*")
        yield


def seed_from(key) -> int:
    """torch's seed from a JAX key."""
    return int(jax.random.randint(key, (), 0, 2**31 - 1))
