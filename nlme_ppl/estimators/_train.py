"""`train`: fit an amortized posterior for a model, with the backend it names.

The flowjax backend (this module) fits a summary network and a conditional flow jointly by
maximum likelihood. Other backends (`backend="sbi"`) are reached through the archive registry
(`nlme_ppl.io.serialization.get_backend`), which imports them on first use.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax
from jaxtyping import PRNGKeyArray
from tqdm.auto import tqdm

from .._validate import check_keys, positive_int
from ..io.serialization import backend_names, get_backend
from ..data import Dataset
from ..designs import DataDesigns, builtin_record, envelope_of, like, merge_envelopes, record_of
from ..models import IndividualModel
from ..models._prior import with_design_prior
from ..simulation import Simulations, simulate
from ._config import TrainConfig
from ._encoding import encode, num_channels
from ._flow import flow_log_prob
from ._history import EpochLog, plot_losses
from ._posterior import AmortizedPosterior, _f32, build_networks
from ._protocol import Posterior
from ._schedule import lr_schedule
from ._summary import InputScaling

__all__ = ["train", "train_flowjax"]

_EVAL_BATCH = 1024


def train(
    model: IndividualModel,
    key: PRNGKeyArray,
    *,
    simulations: Simulations | None = None,
    num_simulations: int | None = None,
    config=None,
    progress: bool = True,
    loss_plot: str | Path | None = None,
    backend: str = "flowjax",
    designs=None,
) -> Posterior:
    """Train an amortized posterior q(φ | y) for `model`.

    With the flowjax backend, the summary network and the flow are trained jointly on pairs
    (φ, y) by maximum likelihood: the loss is the mean of −log q(φ | y), with the parameter
    standardisation's log-determinant included, so it is on the original parameter scale. Adam
    with gradient clipping and a learning-rate schedule; each epoch is one jitted `lax.scan`
    over minibatches. A share `config.validation_fraction` of the simulations is held out;
    training stops after `config.patience` epochs without a better validation loss, and the
    best weights are kept.

    **Arguments:**

    - `model`: the [`IndividualModel`][nlme_ppl.IndividualModel].
    - `key`: a JAX random key (simulation, split, initialisation and minibatches).
    - `simulations`: training pairs from [`simulate`][nlme_ppl.simulate]; or
    - `num_simulations`: simulate this many first (with a key split from `key`).
    - `config`: a [`TrainConfig`][nlme_ppl.TrainConfig] (default: sized to the model and the
      number of simulations by [`TrainConfig.sized`][nlme_ppl.TrainConfig.sized]), or for the sbi
      backend an [`SbiConfig`][nlme_ppl.backends.sbi.SbiConfig] (default `SbiConfig()`).
    - `progress`: show progress bars.
    - `loss_plot`: if a path, write a PNG of the training and validation losses there.
    - `backend`: `"flowjax"`, or `"sbi"`: sbi's neural posterior estimation
      ([`train_sbi`][nlme_ppl.backends.sbi.train_sbi]; needs the `[sbi]` extra), simulating with
      the model's torch simulator where it has one. Any backend in the archive registry.
    - `designs`: the training designs: `None` (the model's own design prior), a
      [`Dataset`][nlme_ppl.Dataset] whose individuals' designs are resampled
      ([`nlp.designs.like(data)`][nlme_ppl.designs.like]), or such a design prior with options
      (`nlp.designs.like(data, time_jitter=0.1, samples=(0.5, 1.5))`). The estimator records
      how its designs were made (`design_record`, the file's `designs` block), and `fit_map` /
      `fit_nuts` warn ([`DesignWarning`][nlme_ppl.designs.DesignWarning]) for data outside them.

    **Returns:** a [`Posterior`][nlme_ppl.estimators.Posterior]: an
    [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior] (an
    [`SbiPosterior`][nlme_ppl.backends.sbi.SbiPosterior] for the sbi backend; both serve
    `fit_map`, `fit_nuts` and the diagnostics).
    """
    try:
        trainer = get_backend(backend).trainer
    except (ValueError, TypeError):
        raise ValueError(f"`backend` must be one of {backend_names()}; got {backend!r}.") from None
    if trainer is None:
        raise ValueError(f"backend {backend!r} loads estimators but cannot train them.")
    trained, record = _with_designs(model, designs, simulations)
    post = trainer(trained, key, simulations=simulations, num_simulations=num_simulations, config=config, progress=progress)
    if hasattr(post, "with_designs"):  # the user's model, and how its training designs were made
        post = post.with_designs(model, json.dumps(record, sort_keys=True))
    if loss_plot is not None:
        fresh = ", fresh ones each epoch" if getattr(post.config, "online", False) else ""
        plot_losses(post.history, loss_plot, f"{model.name}: {post.history.num_train} training simulations{fresh}")
    return post


def train_flowjax(
    model: IndividualModel,
    key: PRNGKeyArray,
    *,
    simulations: Simulations | None = None,
    num_simulations: int | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
) -> AmortizedPosterior:
    """The flowjax backend's trainer (`train(..., backend="flowjax")`, the registry's entry)."""
    config = _check_arguments(model, key, config)
    k_sim, k_split, k_init, k_epochs = jax.random.split(key, 4)
    simulations, sim_seconds = _simulations(model, k_sim, simulations, num_simulations, progress=progress)
    _check_simulations(model, simulations)
    times, values, mask = encode(model, simulations.data)
    if config is None:  # sized to the problem (TrainConfig.sized)
        config = TrainConfig.sized(num_params=model.num_params, num_rows=int(np.max(np.sum(mask, axis=1), initial=1)),
                                   num_simulations=len(simulations), num_channels=num_channels(model))
    _check_config(model, config)
    tr, va = _split(len(simulations), config, k_split)
    z, loc, scale, scaling = _standardise(model, simulations, tr)
    log_det = float(np.sum(np.log(scale)))  # loss on the original scale: -log q(φ) = -log q(z) + Σ log scale
    if config.summary == "attention" and config.max_rows is None:  # recorded in the file with the config
        config = dataclasses.replace(config, max_rows=int(np.max(np.sum(mask, axis=1))))
    optimizer = optax.chain(  # built outside `_f32`, as the shipped estimators were
        optax.clip_by_global_norm(config.clip_norm), optax.adam(lr_schedule(config, len(tr) // config.batch_size))
    )
    t0 = time.perf_counter()
    with _f32():
        summary, flow = build_networks(
            config, num_params=model.num_params, scaling=scaling, key=k_init, num_channels=num_channels(model)
        )
        train_arrays = tuple(jnp.asarray(a[tr]) for a in (times, values, mask, z))
        val_arrays = tuple(jnp.asarray(a) for a in _pad_to_multiple([a[va] for a in (times, values, mask, z)], _EVAL_BATCH))
        fresh = None
        if config.online:
            rows = len(tr) // config.batch_size * config.batch_size  # every epoch's arrays the same shape
            fresh = _Fresh(model, jax.random.split(k_sim)[1], rows, loc, scale, times.shape[1])
            train_arrays = tuple(a[:rows] for a in train_arrays)
        nets, log = _fit(_Nets(summary, flow), optimizer, config, train_arrays, val_arrays, log_det, k_epochs,
                         desc=f"train {model.name}", progress=progress, fresh=fresh)
    history = log.history(num_train=len(tr), num_val=len(va), train_seconds=time.perf_counter() - t0, simulate_seconds=sim_seconds)
    return AmortizedPosterior(
        model=model,
        summary=nets.summary,
        flow=nets.flow,
        param_loc=jnp.asarray(loc, jnp.float64),
        param_scale=jnp.asarray(scale, jnp.float64),
        config=config,
        history=history,
    )


# ---------------------------------------------------------------------- the steps


def _with_designs(model, designs, simulations) -> tuple[IndividualModel, dict]:
    """The model to simulate from (its design prior replaced by `designs`' where given) and the
    record of its designs (`kind`, options, and the `envelope` they cover)."""
    if not isinstance(model, IndividualModel):
        raise TypeError(f"`model` must be an IndividualModel (e.g. nlp.models.frohlich_simple()); got {type(model).__name__}.")
    if designs is None:
        kind = "simulations" if simulations is not None else "builtin"
        record = builtin_record(model) if simulations is None else record_of(kind, simulations.data)
        return model, {**record, "kind": kind}
    if simulations is not None:
        raise ValueError("pass `designs` with `num_simulations` (the designs are simulated), not with `simulations`.")
    if isinstance(designs, Dataset):
        designs = like(designs)
    if not isinstance(designs, DataDesigns):
        raise TypeError(f"`designs` must be a nlme_ppl.Dataset or nlp.designs.like(data, ...); got {type(designs).__name__}.")
    prior = designs.for_model(model)
    trained = with_design_prior(model, prior)
    sampled = builtin_record(trained)
    envelope = merge_envelopes(sampled["envelope"], envelope_of(prior.data))
    return trained, {**prior.record(), "sampled": sampled["sampled"], "envelope": envelope}



def _check_arguments(model, key, config) -> TrainConfig | None:
    if not isinstance(model, IndividualModel):
        raise TypeError(f"`model` must be an IndividualModel (e.g. nlp.models.frohlich_simple()); got {type(model).__name__}.")
    check_keys(key)
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig (or None: sized to the model, TrainConfig.sized); got {type(config).__name__}.")
    return config


def _simulations(model, key, simulations, num_simulations, *, progress: bool) -> tuple[Simulations, float]:
    """The training pairs: `simulations`, or `num_simulations` new ones; and the seconds simulating took."""
    if simulations is not None:
        if num_simulations is not None:
            raise ValueError("pass `simulations` or `num_simulations`, not both.")
        return simulations, 0.0
    if num_simulations is None:
        raise ValueError("pass either `simulations` (from nlp.simulate) or `num_simulations` to simulate.")
    t0 = time.perf_counter()
    sims = simulate(model, key, num_simulations=positive_int(num_simulations, name="num_simulations"), progress=progress)
    return sims, time.perf_counter() - t0


def _check_simulations(model: IndividualModel, sims) -> None:
    if not isinstance(sims, Simulations):
        raise TypeError(f"`simulations` must be a nlme_ppl.Simulations (from nlp.simulate); got {type(sims).__name__}.")
    if tuple(sims.param_names) != tuple(model.param_names):
        raise ValueError(
            f"the simulations have parameters {sims.param_names} but model {model.name!r} has "
            f"{model.param_names}; simulate from this model."
        )


def _check_config(model: IndividualModel, config: TrainConfig) -> None:
    if config.summary_regression and config.summary_dim < model.num_params:
        raise ValueError(
            f"TrainConfig.summary_dim={config.summary_dim} is smaller than the {model.num_params} parameters "
            f"of {model.name!r}, so the summary cannot regress them; raise summary_dim or set summary_regression=0."
        )


def _split(n: int, config: TrainConfig, key) -> tuple[np.ndarray, np.ndarray]:
    """Random training and validation rows (a share `validation_fraction`, at least one)."""
    n_val = max(1, int(round(n * config.validation_fraction)))
    n_train = n - n_val
    if n_train < config.batch_size:
        raise ValueError(
            f"only {n_train} training simulations for batch_size={config.batch_size}; simulate more "
            "or lower TrainConfig.batch_size."
        )
    perm = np.asarray(jax.random.permutation(key, n))
    return perm[:n_train], perm[n_train:]


def _standardise(model, sims: Simulations, tr):
    """Standardised parameters `z` (float32), their `loc` and `scale`, and the input scaling,
    all fitted on the training rows `tr`. Exchangeable groups are learned in canonical (sorted)
    form; `sample` restores the symmetry."""
    params = np.asarray(model.canonicalize(sims.params), np.float64)
    loc, scale = params[tr].mean(0), params[tr].std(0)
    scale = np.where(scale > 0, scale, 1.0)
    z = ((params - loc) / scale).astype(np.float32)
    obs = sims.data  # the measurements alone set the input standardisation
    scaling = InputScaling.fit(*(np.asarray(a)[tr] for a in (obs.times, obs.values, obs.mask)))
    return z, loc, scale, scaling


class _Fresh:
    """Online training's arrays for an epoch: `rows` new simulations of `model` from
    `fold_in(key, epoch)`, standardised with the first set's `loc`, `scale` and padded to its
    `width` rows."""

    def __init__(self, model, key, rows: int, loc, scale, width: int):
        self.model, self.key, self.rows, self.loc, self.scale, self.width = model, key, rows, loc, scale, width

    def __call__(self, epoch: int):
        with jax.enable_x64(True):  # simulated as the first set was, outside the networks' float32 mode
            sims = simulate(self.model, jax.random.fold_in(self.key, epoch), num_simulations=self.rows + self.rows // 50 + 1,
                            progress=False)  # fmt: skip
        params = np.asarray(self.model.canonicalize(sims.params), np.float64)[: self.rows]
        z = ((params - self.loc) / self.scale).astype(np.float32)
        arrays = [a[: self.rows] for a in encode(self.model, sims.data)]
        extra = self.width - arrays[0].shape[1]
        if extra > 0:
            arrays = [np.concatenate([a, np.zeros((a.shape[0], extra, *a.shape[2:]), a.dtype)], axis=1) for a in arrays]
        return tuple(jnp.asarray(a) for a in (*arrays, z))


def _fit(nets: _Nets, optimizer, config: TrainConfig, train_arrays, val_arrays, log_det: float, key, *, desc: str,
         progress: bool, fresh=None):
    """The epochs, until `max_epochs` or early stopping (under `_f32`); with `fresh`, each epoch
    after the first trains on `fresh(epoch)`. **Returns:** the networks of the best validation
    loss, and the `EpochLog` of the run."""
    opt_state = optimizer.init(eqx.filter(nets, eqx.is_inexact_array))
    log, best = EpochLog(config.patience), None
    bar = tqdm(range(config.max_epochs), desc=desc, disable=not progress, unit="epoch")
    for epoch in bar:
        if fresh is not None and epoch > 0:
            train_arrays = fresh(epoch)
        nets, opt_state, loss = _train_epoch(
            nets, opt_state, optimizer, *train_arrays, jax.random.fold_in(key, epoch), config.batch_size,
            config.summary_regression,
        )
        val = float(_eval_loss(nets, *val_arrays)) + log_det
        loss = float(loss) + log_det
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss} at epoch {epoch + 1}; lower TrainConfig.learning_rate "
                "or clip_norm, or check the simulations for extreme values."
            )
        if log.record(loss, val):
            best = nets
        bar.set_postfix(train=f"{loss:.4f}", val=f"{val:.4f}", best=f"{log.best:.4f}")
        if log.stop:
            break
    bar.close()
    if best is None:
        raise FloatingPointError(
            "the validation loss was never finite; check the simulations for extreme values or lower "
            "TrainConfig.learning_rate."
        )
    return best, log


# ---------------------------------------------------------------------- compiled kernels


class _Nets(eqx.Module):
    summary: eqx.Module
    flow: eqx.Module


def _batch_nll(nets: _Nets, t, y, m, z, regression: float = 0.0):
    """Mean -log q(z | s(y)) over a batch (standardised parameter scale), and the training loss.

    With `regression > 0`, the training loss adds `regression` × the mean squared error of the
    summary's first k entries as a point estimate of z: an auxiliary target that makes the
    summary network carry every parameter's information early (weakly identified parameters
    otherwise lag far behind in NPE training). It is not part of the reported loss.
    """
    flow = paramax.unwrap(nets.flow)
    s = jax.vmap(nets.summary)(t, y, m)
    lp = jax.vmap(flow_log_prob, in_axes=(None, 0, 0))(flow, z, s)
    nll = -jnp.mean(lp)
    if regression:
        aux = jnp.mean(jnp.sum((s[:, : z.shape[1]] - z) ** 2, axis=1))
        return nll + regression * aux, nll
    return nll, nll


@eqx.filter_jit
def _train_epoch(nets, opt_state, optimizer, t, y, m, z, key, batch_size: int, regression: float = 0.0):
    """One epoch: a `lax.scan` over shuffled minibatches (the remainder is dropped)."""
    n = t.shape[0]
    num_batches = n // batch_size
    idx = jax.random.permutation(key, n)[: num_batches * batch_size].reshape(num_batches, batch_size)
    params, static = eqx.partition(nets, eqx.is_inexact_array)

    def step(carry, batch_idx):
        params, opt_state = carry
        (_, loss), grads = eqx.filter_value_and_grad(
            lambda p: _batch_nll(eqx.combine(p, static), t[batch_idx], y[batch_idx], m[batch_idx], z[batch_idx], regression),
            has_aux=True,
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = eqx.apply_updates(params, updates)
        return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), idx)
    return eqx.combine(params, static), opt_state, jnp.mean(losses)


@eqx.filter_jit
def _eval_loss(nets, t, y, m, z, w):
    """Weighted mean -log q over batches of `_EVAL_BATCH` (arrays pre-padded, padding has w=0)."""
    shape = lambda a: a.reshape(-1, _EVAL_BATCH, *a.shape[1:])  # noqa: E731

    def body(acc, batch):
        bt, by, bm, bz, bw = batch
        flow = paramax.unwrap(nets.flow)
        s = jax.vmap(nets.summary)(bt, by, bm)
        lp = jax.vmap(flow_log_prob, in_axes=(None, 0, 0))(flow, bz, s)
        return acc + jnp.sum(jnp.where(bw > 0, -lp, 0.0)), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), tuple(map(shape, (t, y, m, z, w))))
    return total / jnp.sum(w)


def _pad_to_multiple(arrays, multiple):
    n = arrays[0].shape[0]
    extra = (-n) % multiple
    w = np.concatenate([np.ones(n, np.float32), np.zeros(extra, np.float32)])
    out = [np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]) for a in arrays]
    return (*out, w)
