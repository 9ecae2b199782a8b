"""`TrainConfig` (architecture and optimisation settings) and `TrainingHistory`."""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx

__all__ = ["SUMMARY_KINDS", "TrainConfig", "TrainingHistory"]

#: Summary networks `TrainConfig.summary` can name.
SUMMARY_KINDS = ("deepset", "gru")
_FLOW_KINDS = ("coupling", "maf")
_LR_SCHEDULES = ("cosine", "exponential", "constant")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"TrainConfig.{name} must be a positive integer; got {value!r}.")


def _positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"TrainConfig.{name} must be a positive number; got {value!r}.")


class TrainConfig(eqx.Module):
    """Architecture and optimisation settings of [`train`][nlme_ppl.train]. Holds no seed:
    the random key is the argument of `train`.

    **Architecture:**

    - `summary`: summary network, `"deepset"` ([`DeepSetSummary`][nlme_ppl.estimators.DeepSetSummary]) or `"gru"` ([`GRUSummary`][nlme_ppl.estimators.GRUSummary]).
    - `summary_dim`: size of the summary (the flow's condition).
    - `hidden_size`: width of the summary network.
    - `summary_depth`: hidden layers of the DeepSet's per-observation MLP.
    - `patch_size`: consecutive observations read together (per DeepSet element or GRU step).
    - `flow`: `"coupling"` (fast sampling) or `"maf"`.
    - `flow_layers`, `knots`, `interval`: number of spline layers, knots per spline, and the
      half-width of the spline interval on the standardised scale.
    - `nn_width`, `nn_depth`: the flow conditioners' MLP width and hidden layers.

    **Optimisation:**

    - `batch_size`, `learning_rate`, `max_epochs`, `patience` (epochs without a better
      validation loss before stopping; the best weights are restored).
    - `lr_schedule`: `"cosine"` (decay to `final_lr_fraction` × `learning_rate` over
      `max_epochs`, after one warm-up epoch), `"exponential"` (same end point), `"constant"`.
    - `clip_norm`: global gradient-norm clipping.
    - `validation_fraction`: share of the simulations held out for early stopping.
    - `summary_regression`: weight of an auxiliary loss that asks the summary's first k
      entries to regress the standardised parameters (0 turns it off). It speeds up learning
      of weakly identified parameters markedly; the reported losses are −log q only.
    """

    summary: str = "deepset"
    summary_dim: int = 32
    hidden_size: int = 64
    summary_depth: int = 2
    patch_size: int = 4
    flow: str = "coupling"
    flow_layers: int = 6
    knots: int = 10
    interval: float = 6.0
    nn_width: int = 128
    nn_depth: int = 1
    batch_size: int = 256
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    final_lr_fraction: float = 0.02
    clip_norm: float = 5.0
    max_epochs: int = 100
    patience: int = 10
    validation_fraction: float = 0.1
    summary_regression: float = 1.0

    def __check_init__(self):
        if self.summary not in SUMMARY_KINDS:
            raise ValueError(f"TrainConfig.summary must be one of {SUMMARY_KINDS}; got {self.summary!r}.")
        if self.flow not in _FLOW_KINDS:
            raise ValueError(f"TrainConfig.flow must be one of {_FLOW_KINDS}; got {self.flow!r}.")
        if self.lr_schedule not in _LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {_LR_SCHEDULES}; got {self.lr_schedule!r}.")
        for name in ("summary_dim", "hidden_size", "summary_depth", "patch_size", "flow_layers", "knots", "nn_width",
                     "nn_depth", "batch_size", "max_epochs", "patience"):
            _positive_int(name, getattr(self, name))
        if not (self.summary_regression >= 0):
            raise ValueError(f"TrainConfig.summary_regression must be >= 0; got {self.summary_regression!r}.")
        for name in ("interval", "learning_rate", "clip_norm", "final_lr_fraction"):
            _positive_float(name, getattr(self, name))
        if self.final_lr_fraction > 1:
            raise ValueError(f"TrainConfig.final_lr_fraction must be in (0, 1]; got {self.final_lr_fraction!r}.")
        if self.interval < 3:
            raise ValueError(
                f"TrainConfig.interval is {self.interval}; the splines act on standardised parameters, so "
                "use at least 3 (5–8 covers the tails), or the flow is the identity where the mass is."
            )
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 < vf < 1:
            raise ValueError(f"TrainConfig.validation_fraction must be in (0, 1); got {vf!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-able dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig setting(s) {unknown}; known: {sorted(names)}.")
        return cls(**d)


class TrainingHistory(eqx.Module):
    """What happened in training: per-epoch losses (mean negative log q(φ | y), original
    parameter scale), the epoch whose weights were kept, and timings."""

    train_loss: tuple[float, ...] = eqx.field(static=True, default=())
    val_loss: tuple[float, ...] = eqx.field(static=True, default=())
    best_epoch: int = eqx.field(static=True, default=-1)
    num_train: int = eqx.field(static=True, default=0)
    num_val: int = eqx.field(static=True, default=0)
    train_seconds: float = eqx.field(static=True, default=0.0)
    simulate_seconds: float = eqx.field(static=True, default=0.0)

    @property
    def best_val_loss(self) -> float:
        return self.val_loss[self.best_epoch] if self.val_loss else float("nan")

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainingHistory":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(float(x) for x in v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)
