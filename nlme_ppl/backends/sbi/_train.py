"""Training sbi's NPE: prior-predictive pairs from the torch simulators, and nlme_ppl's loop
around sbi's density estimator and its loss."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ..._validate import check_keys, positive_int
from ...estimators import EpochLog, lr_schedule
from ...simulation import Simulations, dataset_from_designs, simulate
from ._config import SbiConfig
from ._estimator import builder, quiet, rows, seed_from
from ._posterior import SbiPosterior
from ._torch import torch
from .simulators import TORCH_SIMULATORS

__all__ = ["simulate_torch", "train_sbi"]


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
    generator = torch.Generator().manual_seed(seed_from(k_noise))
    obs = []
    with torch.no_grad():
        for s in range(0, n, chunk_size):
            e = min(s + chunk_size, n)
            design = {k: torch.tensor(v[s:e]) for k, v in designs.items()}
            obs.append(sim(torch.tensor(params[s:e]), design, generator).numpy())
    obs = np.concatenate(obs)
    ok = np.isfinite(params).all(1) & np.where(designs["mask"].astype(bool), np.isfinite(obs), True).all(1)
    data = dataset_from_designs(model, designs, obs, keep=ok)
    return Simulations(jnp.asarray(params[ok]), data, model.param_names, int((~ok).sum()))


def _lr_factor(config: SbiConfig, steps_per_epoch: int):
    """The learning-rate multiplier of step `s` for torch's `LambdaLR`: the flowjax recipes'
    schedule ([`lr_schedule`][nlme_ppl.estimators.lr_schedule]), tabulated once over the run."""
    total = steps_per_epoch * config.max_epochs
    steps = np.arange(total + 1)  # optax's constant schedule ignores the shape of its input: broadcast
    factors = np.broadcast_to(np.asarray(lr_schedule(config, steps_per_epoch)(steps)), steps.shape) / config.learning_rate
    return lambda s: float(factors[min(s, total)])


def _fit(config: SbiConfig, theta, x, *, progress: bool):
    """Train a fresh sbi density estimator on `(theta, x)` by its NPE loss: Adam, the schedule of
    `config`, gradient clipping, and the weights of the best validation loss kept.

    **Returns:** the estimator, the `EpochLog` and the sizes of the training and validation splits."""
    n = theta.shape[0]
    num_val = max(1, int(round(config.validation_fraction * n)))
    if n - num_val < 2:
        raise ValueError(f"{n} simulations are too few to train on with validation_fraction={config.validation_fraction}.")
    perm = torch.randperm(n)
    train_idx, val_idx = perm[num_val:], perm[:num_val]
    build, embedding = builder(config, x.shape[-1])
    embedding.std.fit(x[train_idx])
    estimator = build(theta[train_idx], x[train_idx[:8]])  # z-scores φ on the training split
    steps_per_epoch = -(-len(train_idx) // config.batch_size)
    optimizer = torch.optim.Adam(estimator.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, steps_per_epoch))
    log, best_state = EpochLog(config.patience), None
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
        if not np.isfinite(val):
            raise FloatingPointError(
                f"the validation loss is {val} after epoch {len(log.val_loss) + 1}; lower `learning_rate` "
                f"(now {config.learning_rate}) or `clip_norm`, or check the simulations for extreme values."
            )
        if log.record(total / len(train_idx), val):
            best_state = {k: v.detach().clone() for k, v in estimator.state_dict().items()}
        if log.stop:
            break
    estimator.load_state_dict(best_state)
    return estimator.eval(), log, (len(train_idx), num_val)


def train_sbi(
    model,
    key: PRNGKeyArray,
    *,
    simulations: Simulations | None = None,
    num_simulations: int | None = None,
    simulator: str = "auto",
    config: SbiConfig | None = None,
    progress: bool = True,
) -> SbiPosterior:
    """Train sbi's NPE for `model` on prior-predictive simulations.

    **Arguments:**

    - `model`: the [`IndividualModel`][nlme_ppl.IndividualModel].
    - `key`: a JAX random key (simulation and torch's seed).
    - `simulations`: training pairs (from `nlp.simulate` or `simulate_torch`); or
    - `num_simulations`: simulate this many first, with
    - `simulator`: `"torch"` (the model's torch simulator), `"jax"` (`nlp.simulate`), or `"auto"`
      (torch where the model has one).
    - `config`: an [`SbiConfig`][nlme_ppl.backends.sbi.SbiConfig] (default `SbiConfig()`).
    - `progress`: show a progress bar over epochs.

    **Returns:** an [`SbiPosterior`][nlme_ppl.backends.sbi.SbiPosterior].
    """
    check_keys(key)
    config = SbiConfig() if config is None else config
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
    x = torch.tensor(rows(model, simulations.data))
    theta = torch.tensor(np.asarray(model.canonicalize(simulations.params), np.float32))
    t1 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), quiet():
        torch.manual_seed(seed_from(k_train))
        estimator, log, (num_train, num_val) = _fit(config, theta, x, progress=progress)
    history = log.history(num_train=num_train, num_val=num_val, train_seconds=time.perf_counter() - t1,
                          simulate_seconds=simulate_seconds)
    return SbiPosterior(model=model, estimator=estimator, config=config, rows=x.shape[1], history=history)
