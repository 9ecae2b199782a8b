"""sbi's neural posterior estimation (NPE) as an amortized posterior q(φ | y), with the interface
of the flowjax [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior]: `sample`, `log_prob`,
`summaries`, `save`, so that `fit_map`, `fit_nuts` and the diagnostics take it unchanged."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..._validate import check_keys, positive_int
from ...data import Dataset
from ...estimators._encoding import encode
from ...estimators._train import lr_schedule
from ...simulation import Simulations, simulate
from ._embedding import EMBEDDINGS
from ._torch import torch
from .simulators import TORCH_SIMULATORS

__all__ = ["SbiConfig", "SbiPosterior", "simulate_torch", "train_sbi"]

_DRAWS_PER_CHUNK = 50_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class SbiConfig:
    """Architecture and training of an sbi estimator.

    - `flow`: sbi's density estimator (`"nsf"` neural spline flow, `"maf"`, or a `"zuko_*"` one).
    - `hidden_features`, `num_transforms`, `num_bins`: the flow's width, depth and spline bins.
    - `embedding`: `"deepset"` (masked mean of a row MLP) or `"gru"` (over the rows in time order).
    - `embedding_hidden`, `summary_dim`: the embedding's width and output size.
    - `batch_size`, `learning_rate`, `max_epochs`, `patience` (epochs without a better
      validation loss before stopping; the best weights are kept), `validation_fraction`.
    - `lr_schedule`: `"cosine"` (one warm-up epoch from a tenth of `learning_rate`, then cosine
      decay to `final_lr_fraction` × `learning_rate`, as the flowjax recipes) or `"constant"`
      (what sbi's `NPE.train` does). `clip_norm`: global gradient-norm clipping.

    The loss is sbi's NPE loss, −log q(φ | x) of the density estimator on prior-predictive pairs
    (`ConditionalDensityEstimator.loss`). The loop is nlme_ppl's because `NPE.train` has no
    learning-rate schedule: at a constant rate the last weights stay noisy, and in the
    cross-backend benchmark that left CL biased (docs/guide/sbi.md).
    """

    flow: str = "nsf"
    hidden_features: int = 64
    num_transforms: int = 5
    num_bins: int = 10
    embedding: str = "deepset"
    embedding_hidden: int = 128
    summary_dim: int = 32
    batch_size: int = 256
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    final_lr_fraction: float = 0.02
    clip_norm: float = 5.0
    max_epochs: int = 50
    patience: int = 10
    validation_fraction: float = 0.1

    def __post_init__(self):
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"`embedding` must be one of {sorted(EMBEDDINGS)}; got {self.embedding!r}.")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"`lr_schedule` must be 'cosine' or 'constant'; got {self.lr_schedule!r}.")
        for name in ("learning_rate", "clip_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive; got {getattr(self, name)!r}.")
        if not 0 < self.final_lr_fraction <= 1:
            raise ValueError(f"`final_lr_fraction` must be in (0, 1]; got {self.final_lr_fraction!r}.")
        for name in ("hidden_features", "num_transforms", "num_bins", "embedding_hidden", "summary_dim", "batch_size", "max_epochs", "patience"):
            positive_int(getattr(self, name), name=name)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"`validation_fraction` must be in (0, 1); got {self.validation_fraction}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SbiConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SbiConfig field(s) {unknown}.")
        return cls(**d)


# ---------------------------------------------------------------- inputs


def _rows(model, data: Dataset) -> np.ndarray:
    """sbi's x for every individual: `(N, R, 3 + C)` float32 rows `[t, Δt, channels..., mask]`,
    observed rows first in time order, padding zero (the mask is the last channel)."""
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


def _fit_rows(x: np.ndarray, rows: int, model_name: str) -> np.ndarray:
    """Pad `x` to the estimator's `rows`, or refuse data with more observed rows than it was built for."""
    r = x.shape[1]
    if r < rows:
        return np.concatenate([x, np.zeros((x.shape[0], rows - r, x.shape[2]), np.float32)], axis=1)
    if r > rows:
        longest = int(x[..., -1].sum(axis=1).max())
        if longest > rows:
            raise ValueError(
                f"an individual has {longest} rows (observations and doses), more than the {rows} this sbi estimator of "
                f"{model_name!r} was trained with (sbi fixes the input shape); retrain with a design prior that covers it, "
                "or use the flowjax backend (nlp.train), whose summary networks read any length."
            )
        return np.ascontiguousarray(x[:, :rows])
    return x


def _builder(config: SbiConfig, num_channels: int):
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


@contextlib.contextmanager
def _quiet():
    """Silence what sbi and nflows warn about by design here: the mask channel is "constant" in
    some rows, and nflows' LU layers call torch's deprecated `triangular_solve`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*constant values.*")
        warnings.filterwarnings("ignore", message=".*triangular_solve.*")
        yield


def _seed(key) -> int:
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


# ---------------------------------------------------------------- the posterior


class SbiPosterior:
    """An sbi-trained amortized posterior q(φ | y) of an individual model.

    Made by `nlp.train(model, key, backend="sbi", ...)` (or
    [`train_sbi`][nlme_ppl.backends.sbi.train_sbi]) and loaded by `nlp.load_posterior`. It
    reads data through the same encoding as the flowjax estimators, and has their interface.

    **Fields:** `model`, `estimator` (sbi's density estimator, a torch module), `config`
    ([`SbiConfig`][nlme_ppl.backends.sbi.SbiConfig]), `rows` (the fixed number of input rows),
    `history` (sbi's training summary: losses per epoch, epochs, seconds).
    """

    backend = "sbi"

    def __init__(self, *, model, estimator, config: SbiConfig, rows: int, history: dict):
        self.model, self.estimator, self.config, self.rows, self.history = model, estimator.eval(), config, int(rows), dict(history)

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.model.param_names

    @property
    def num_params(self) -> int:
        return self.model.num_params

    def _x(self, data):
        if not isinstance(data, Dataset):
            raise TypeError(f"expected a nlme_ppl.Dataset; got {type(data).__name__}.")
        return torch.tensor(_fit_rows(_rows(self.model, data), self.rows, self.model.name))

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
        with torch.no_grad(), torch.random.fork_rng(devices=[]), _quiet():
            torch.manual_seed(_seed(key))
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
        with torch.no_grad(), _quiet():
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
        from ...io.serialization import save_posterior

        save_posterior(self, path)

    def _weights(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.estimator.state_dict(), buf)
        return buf.getvalue()

    def _architecture(self) -> dict:
        return {"num_params": self.num_params, "rows": self.rows, "channels": int(self.estimator.condition_shape[-1])}

    def __repr__(self) -> str:
        best = self.history.get("best_validation_loss")
        return (f"SbiPosterior(model={self.model.name!r}, params={self.param_names}, flow={self.config.flow}×"
                f"{self.config.num_transforms}, embedding={self.config.embedding}"
                + (f", best val loss {best:.4g}" if best is not None else "") + ")")


def build_estimator(config: SbiConfig, *, num_params: int, rows: int, channels: int):
    """A fresh (untrained) sbi density estimator of this architecture; dummy batches set the shapes,
    and `load_state_dict` then sets every weight and standardisation."""
    build, _ = _builder(config, channels)
    x = torch.zeros(8, rows, channels)
    x[:, :1, -1] = 1.0
    return build(torch.randn(8, num_params), x)


def load_weights(meta: dict, weights: bytes, model):
    """The `SbiPosterior` of an estimator file's metadata and weights (`torch.load(weights_only=True)`)."""
    config = SbiConfig.from_dict(meta["config"])
    arch = meta["architecture"]
    est = build_estimator(config, num_params=int(arch["num_params"]), rows=int(arch["rows"]), channels=int(arch["channels"]))
    state = torch.load(io.BytesIO(weights), weights_only=True)
    est.load_state_dict(state)
    return SbiPosterior(model=model, estimator=est, config=config, rows=int(arch["rows"]), history=meta.get("history", {}))


# ---------------------------------------------------------------- simulation and training


def simulate_torch(model, key: PRNGKeyArray, *, num_simulations: int, simulator=None, chunk_size: int = 10_000) -> Simulations:
    """Prior-predictive pairs (φ, y) of `model` from its torch simulator (`TORCH_SIMULATORS[model.name]`
    unless `simulator` is given): φ from the training prior and designs from the model's design
    prior (as `nlp.simulate`), observations in torch. Non-finite simulations are dropped and counted."""
    check_keys(key)
    n = positive_int(num_simulations, name="num_simulations")
    sim = simulator if simulator is not None else TORCH_SIMULATORS.get(model.name)
    if sim is None:
        raise ValueError(f"no torch simulator for model {model.name!r}; built-in ones: {sorted(TORCH_SIMULATORS)}. Pass `simulator=`.")
    k_design, k_params, k_noise = jax.random.split(key, 3)
    designs = {k: np.asarray(v) for k, v in model.sample_designs(k_design, n).items()}
    params = np.asarray(model.prior_sample(k_params, (n,)), np.float64)
    generator = torch.Generator().manual_seed(_seed(k_noise))
    obs = []
    with torch.no_grad():
        for s in range(0, n, chunk_size):
            e = min(s + chunk_size, n)
            design = {k: torch.tensor(v[s:e]) for k, v in designs.items()}
            obs.append(sim(torch.tensor(params[s:e]), design, generator).numpy())
    obs = np.concatenate(obs)
    ok = np.isfinite(params).all(1) & np.where(designs["mask"].astype(bool), np.isfinite(obs), True).all(1)
    data = Dataset._from_designs(designs, obs, ok, covariates=[c for c, *_ in model.covariates])
    return Simulations(jnp.asarray(params[ok]), data, model.param_names, int((~ok).sum()))


def _lr_factor(config: SbiConfig, steps_per_epoch: int):
    """The learning-rate multiplier of step `s` for torch's `LambdaLR`: the flowjax recipes'
    schedule (`estimators._train.lr_schedule`), tabulated once over the run."""
    total = steps_per_epoch * config.max_epochs
    steps = np.arange(total + 1)  # optax's constant schedule ignores the shape of its input: broadcast
    factors = np.broadcast_to(np.asarray(lr_schedule(config, steps_per_epoch)(steps)), steps.shape) / config.learning_rate
    return lambda s: float(factors[min(s, total)])


def _fit(config: SbiConfig, theta, x, *, progress: bool):
    """Train a fresh sbi density estimator on `(theta, x)` by its NPE loss: Adam, the schedule of
    `config`, gradient clipping, and the weights of the best validation loss kept."""
    n = theta.shape[0]
    num_val = max(1, int(round(config.validation_fraction * n)))
    if n - num_val < 2:
        raise ValueError(f"{n} simulations are too few to train on with validation_fraction={config.validation_fraction}.")
    perm = torch.randperm(n)
    train_idx, val_idx = perm[num_val:], perm[:num_val]
    build, embedding = _builder(config, x.shape[-1])
    embedding.std.fit(x[train_idx])
    estimator = build(theta[train_idx], x[train_idx[:8]])  # z-scores φ on the training split
    steps_per_epoch = -(-len(train_idx) // config.batch_size)
    optimizer = torch.optim.Adam(estimator.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, steps_per_epoch))
    history = {"training_loss": [], "validation_loss": []}
    best, best_state, since = float("inf"), None, 0
    epochs = range(config.max_epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="sbi NPE", unit="epoch")
    for _ in epochs:
        estimator.train()
        total = 0.0
        for b in torch.randperm(len(train_idx)).split(config.batch_size):
            idx = train_idx[b]
            loss = estimator.loss(theta[idx], condition=x[idx]).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(estimator.parameters(), max_norm=config.clip_norm)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
        estimator.eval()
        with torch.no_grad():
            val = sum(float(estimator.loss(theta[i], condition=x[i]).sum()) for i in val_idx.split(4 * config.batch_size)) / num_val
        history["training_loss"].append(total / len(train_idx))
        history["validation_loss"].append(val)
        if not np.isfinite(val):
            raise FloatingPointError(
                f"the validation loss is {val} after epoch {len(history['validation_loss'])}; lower `learning_rate` "
                f"(now {config.learning_rate}) or `clip_norm`, or check the simulations for extreme values."
            )
        if val < best:
            best, since = val, 0
            best_state = {k: v.detach().clone() for k, v in estimator.state_dict().items()}
        else:
            since += 1
            if since >= config.patience:
                break
    estimator.load_state_dict(best_state)
    history.update(best_validation_loss=best, epochs=len(history["validation_loss"]))
    return estimator.eval(), history


def train_sbi(
    model,
    key: PRNGKeyArray,
    *,
    simulations: Simulations | None = None,
    num_simulations: int | None = None,
    simulator: str = "auto",
    config: SbiConfig = SbiConfig(),
    progress: bool = True,
) -> SbiPosterior:
    """Train sbi's NPE for `model` on prior-predictive simulations.

    **Arguments:**

    - `model`: the [`IndividualModel`][nlme_ppl.models.IndividualModel].
    - `key`: a JAX random key (simulation and torch's seed).
    - `simulations`: training pairs (from `nlp.simulate` or `simulate_torch`); or
    - `num_simulations`: simulate this many first, with
    - `simulator`: `"torch"` (the model's torch simulator), `"jax"` (`nlp.simulate`), or `"auto"`
      (torch where the model has one).
    - `config`: an [`SbiConfig`][nlme_ppl.backends.sbi.SbiConfig].
    - `progress`: show a progress bar over epochs.

    **Returns:** an [`SbiPosterior`][nlme_ppl.backends.sbi.SbiPosterior].
    """
    check_keys(key)
    if not isinstance(config, SbiConfig):
        raise TypeError(f"`config` must be an SbiConfig; got {type(config).__name__}.")
    k_sim, k_train = jax.random.split(key)
    t0 = time.perf_counter()
    if simulations is None:
        if num_simulations is None:
            raise ValueError("pass either `simulations` or `num_simulations` to simulate.")
        if simulator not in ("auto", "torch", "jax"):
            raise ValueError(f"`simulator` must be 'auto', 'torch' or 'jax'; got {simulator!r}.")
        use_torch = simulator == "torch" or (simulator == "auto" and model.name in TORCH_SIMULATORS)
        simulations = (simulate_torch(model, k_sim, num_simulations=num_simulations) if use_torch
                       else simulate(model, k_sim, num_simulations=num_simulations, progress=progress))
    simulate_seconds = time.perf_counter() - t0
    x = torch.tensor(_rows(model, simulations.data))
    theta = torch.tensor(np.asarray(model.canonicalize(simulations.params), np.float32))
    t1 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(_seed(k_train))
        estimator, history = _fit(config, theta, x, progress=progress)
    history.update(num_simulations=len(simulations), simulate_seconds=simulate_seconds, train_seconds=time.perf_counter() - t1)
    return SbiPosterior(model=model, estimator=estimator, config=config, rows=x.shape[1], history=history)
