"""`train`: fit a summary network and a conditional flow jointly by maximum likelihood."""

from __future__ import annotations

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
from ..models import IndividualModel
from ..simulation import Simulations, simulate
from ._config import TrainConfig, TrainingHistory
from ._flow import flow_log_prob
from ._posterior import AmortizedPosterior, _f32, build_networks
from ._encoding import encode, num_channels
from ._summary import InputScaling

__all__ = ["train"]

_EVAL_BATCH = 1024


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


def lr_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate per step of `config` (`learning_rate`, `lr_schedule`, `final_lr_fraction`,
    `max_epochs`): for `"cosine"`, a linear warm-up from a tenth over one epoch (at most a tenth
    of the run), then cosine decay to `final_lr_fraction`. The sbi backend's loop uses it too."""
    lr, total = config.learning_rate, config.max_epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        warmup = min(steps_per_epoch, max(total // 10, 1))
        return optax.warmup_cosine_decay_schedule(
            lr * 0.1, lr, warmup, max(total, warmup + 1), end_value=lr * config.final_lr_fraction
        )
    if config.lr_schedule == "exponential":
        return optax.exponential_decay(lr, max(total, 1), config.final_lr_fraction)
    return optax.constant_schedule(lr)


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(lr_schedule(config, steps_per_epoch)))


def _plot_losses(history: TrainingHistory, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, history.epochs + 1)
    ax.plot(epochs, history.train_loss, label="train")
    ax.plot(epochs, history.val_loss, label="validation")
    ax.axvline(history.best_epoch + 1, color="grey", ls=":", label=f"best (epoch {history.best_epoch + 1})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean −log q(φ | y)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _check_simulations(model: IndividualModel, sims) -> None:
    if not isinstance(sims, Simulations):
        raise TypeError(f"`simulations` must be a nlme_ppl.Simulations (from nlp.simulate); got {type(sims).__name__}.")
    if tuple(sims.param_names) != tuple(model.param_names):
        raise ValueError(
            f"the simulations have parameters {sims.param_names} but model {model.name!r} has "
            f"{model.param_names}; simulate from this model."
        )


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
) -> AmortizedPosterior:
    """Train an amortized posterior q(φ | y) for `model` by maximum likelihood.

    The summary network and the flow are trained jointly on pairs (φ, y): the loss is the
    mean of −log q(φ | y), with the parameter standardisation's log-determinant included,
    so it is on the original parameter scale. Adam with gradient clipping and a learning-rate
    schedule; each epoch is one jitted `lax.scan` over minibatches. A share
    `config.validation_fraction` of the simulations is held out; training stops after
    `config.patience` epochs without a better validation loss, and the best weights are kept.

    **Arguments:**

    - `model`: the [`IndividualModel`][nlme_ppl.models.IndividualModel].
    - `key`: a JAX random key (simulation, split, initialisation and minibatches).
    - `simulations`: training pairs from [`simulate`][nlme_ppl.simulate]; or
    - `num_simulations`: simulate this many first (with a key split from `key`).
    - `config`: a [`TrainConfig`][nlme_ppl.TrainConfig] (default `TrainConfig()`), or for the sbi
      backend an [`SbiConfig`][nlme_ppl.backends.sbi.SbiConfig].
    - `progress`: show progress bars.
    - `loss_plot`: if a path, write a PNG of the training and validation losses there.
    - `backend`: `"flowjax"` (this function), or `"sbi"`: sbi's neural posterior estimation
      ([`train_sbi`][nlme_ppl.backends.sbi.train_sbi]; needs the `[sbi]` extra), simulating with
      the model's torch simulator where it has one.

    **Returns:** an [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior] (an
    [`SbiPosterior`][nlme_ppl.backends.sbi.SbiPosterior] for the sbi backend; both serve
    `fit_map`, `fit_nuts` and the diagnostics).
    """
    if backend == "sbi":
        from ..backends.sbi import SbiConfig, train_sbi

        if loss_plot is not None:
            raise ValueError("`loss_plot` is for the flowjax backend; the sbi estimator's losses are in post.history.")
        return train_sbi(model, key, simulations=simulations, num_simulations=num_simulations,
                         config=SbiConfig() if config is None else config, progress=progress)
    if backend != "flowjax":
        raise ValueError(f"`backend` must be 'flowjax' or 'sbi'; got {backend!r}.")
    config = TrainConfig() if config is None else config
    if not isinstance(model, IndividualModel):
        raise TypeError(f"`model` must be an IndividualModel (e.g. nlp.models.frohlich_simple()); got {type(model).__name__}.")
    check_keys(key)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig; got {type(config).__name__}.")
    k_sim, k_split, k_init, k_epochs = jax.random.split(key, 4)
    sim_seconds = 0.0
    if simulations is None:
        if num_simulations is None:
            raise ValueError("pass either `simulations` (from nlp.simulate) or `num_simulations` to simulate.")
        t0 = time.perf_counter()
        simulations = simulate(model, k_sim, num_simulations=positive_int(num_simulations, name="num_simulations"),
                               progress=progress)
        sim_seconds = time.perf_counter() - t0
    elif num_simulations is not None:
        raise ValueError("pass `simulations` or `num_simulations`, not both.")
    _check_simulations(model, simulations)
    if config.summary_regression and config.summary_dim < model.num_params:
        raise ValueError(
            f"TrainConfig.summary_dim={config.summary_dim} is smaller than the {model.num_params} parameters "
            f"of {model.name!r}, so the summary cannot regress them; raise summary_dim or set summary_regression=0."
        )

    n = len(simulations)
    n_val = max(1, int(round(n * config.validation_fraction)))
    n_train = n - n_val
    if n_train < config.batch_size:
        raise ValueError(
            f"only {n_train} training simulations for batch_size={config.batch_size}; simulate more "
            "or lower TrainConfig.batch_size."
        )
    perm = np.asarray(jax.random.permutation(k_split, n))
    tr, va = perm[:n_train], perm[n_train:]
    times, values, mask = encode(model, simulations.data)
    # exchangeable groups are learned in canonical (sorted) form; `sample` restores the symmetry
    params = np.asarray(model.canonicalize(simulations.params), np.float64)

    loc, scale = params[tr].mean(0), params[tr].std(0)
    scale = np.where(scale > 0, scale, 1.0)
    z = ((params - loc) / scale).astype(np.float32)
    log_det = float(np.sum(np.log(scale)))  # loss on the original scale: -log q(φ) = -log q(z) + Σ log scale
    obs = simulations.data  # the measurements alone set the input standardisation
    scaling = InputScaling.fit(*(np.asarray(a)[tr] for a in (obs.times, obs.values, obs.mask)))

    steps = n_train // config.batch_size
    optimizer = _optimizer(config, steps)
    train_losses, val_losses = [], []
    best, best_epoch, best_nets, bad = math.inf, -1, None, 0
    t0 = time.perf_counter()
    with _f32():
        summary, flow = build_networks(
            config, num_params=model.num_params, scaling=scaling, key=k_init, num_channels=num_channels(model)
        )
        nets = _Nets(summary, flow)
        opt_state = optimizer.init(eqx.filter(nets, eqx.is_inexact_array))
        train_arrays = tuple(jnp.asarray(a[tr]) for a in (times, values, mask, z))
        val_arrays = tuple(jnp.asarray(a) for a in _pad_to_multiple([a[va] for a in (times, values, mask, z)], _EVAL_BATCH))
        bar = tqdm(range(config.max_epochs), desc=f"train {model.name}", disable=not progress, unit="epoch")
        for epoch in bar:
            nets, opt_state, loss = _train_epoch(
                nets, opt_state, optimizer, *train_arrays, jax.random.fold_in(k_epochs, epoch), config.batch_size,
                config.summary_regression,
            )
            val = float(_eval_loss(nets, *val_arrays)) + log_det
            loss = float(loss) + log_det
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {loss} at epoch {epoch + 1}; lower TrainConfig.learning_rate "
                    "or clip_norm, or check the simulations for extreme values."
                )
            train_losses.append(loss)
            val_losses.append(val)
            if val < best:
                best, best_epoch, best_nets, bad = val, epoch, nets, 0
            else:
                bad += 1
            bar.set_postfix(train=f"{loss:.4f}", val=f"{val:.4f}", best=f"{best:.4f}")
            if bad >= config.patience:
                break
        bar.close()
    if best_nets is None:
        raise FloatingPointError(
            "the validation loss was never finite; check the simulations for extreme values or lower "
            "TrainConfig.learning_rate."
        )
    history = TrainingHistory(
        train_loss=tuple(train_losses),
        val_loss=tuple(val_losses),
        best_epoch=best_epoch,
        num_train=n_train,
        num_val=n_val,
        train_seconds=time.perf_counter() - t0,
        simulate_seconds=sim_seconds,
    )
    post = AmortizedPosterior(
        model=model,
        summary=best_nets.summary,
        flow=best_nets.flow,
        param_loc=jnp.asarray(loc, jnp.float64),
        param_scale=jnp.asarray(scale, jnp.float64),
        config=config,
        history=history,
    )
    if loss_plot is not None:
        _plot_losses(history, loss_plot, f"{model.name}: {n_train} training simulations")
    return post
