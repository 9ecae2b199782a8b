"""Training configurations: `TrainingSettings`, the optimisation settings both backends share,
and `TrainConfig`, the flowjax backend's (its architecture plus those settings). The sbi
backend's `SbiConfig` is the same base with sbi's architecture."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import equinox as eqx

from .._validate import positive_int

__all__ = ["SUMMARY_KINDS", "TrainConfig", "TrainingSettings"]

#: Summary networks `TrainConfig.summary` can name.
SUMMARY_KINDS = ("deepset", "gru", "attention")
_FLOW_KINDS = ("coupling", "maf")


def _plain(v):
    """A JSON-able Python scalar for NumPy scalars (`positive_int` accepts NumPy integers)."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, tuple, dict)) else v


class TrainingSettings(eqx.Module):
    """The optimisation settings every backend's configuration has (the base of
    [`TrainConfig`][nlme_ppl.TrainConfig] and [`SbiConfig`][nlme_ppl.backends.sbi.SbiConfig]).

    - `batch_size`, `learning_rate`, `max_epochs`, `patience` (epochs without a better
      validation loss before stopping; the best weights are kept).
    - `lr_schedule`: `"cosine"` (one warm-up epoch from a tenth of `learning_rate`, then cosine
      decay to `final_lr_fraction` × `learning_rate` over `max_epochs`), `"exponential"` (same
      end point), `"constant"`; see [`lr_schedule`][nlme_ppl.estimators.lr_schedule].
    - `clip_norm`: global gradient-norm clipping.
    - `validation_fraction`: share of the simulations held out for early stopping.
    """

    #: the schedules a configuration of this class may name
    LR_SCHEDULES: ClassVar[tuple[str, ...]] = ("cosine", "exponential", "constant")
    #: the integer fields that must be positive (each subclass lists its own)
    POSITIVE_INTS: ClassVar[tuple[str, ...]] = ()

    batch_size: int = 256
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    final_lr_fraction: float = 0.02
    clip_norm: float = 5.0
    max_epochs: int = 100
    patience: int = 10
    validation_fraction: float = 0.1

    def _fail(self, name: str, what: str):
        raise ValueError(f"{type(self).__name__}.{name} {what}; got {getattr(self, name)!r}.")

    def _check_positive(self, *names: str) -> None:
        for name in names:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                self._fail(name, "must be a positive number")

    def __check_init__(self):
        cls = type(self).__name__
        if self.lr_schedule not in self.LR_SCHEDULES:
            self._fail("lr_schedule", f"must be one of {self.LR_SCHEDULES}")
        for name in ("batch_size", "max_epochs", "patience", *self.POSITIVE_INTS):
            positive_int(getattr(self, name), name=f"{cls}.{name}")
        self._check_positive("learning_rate", "clip_norm", "final_lr_fraction")
        if self.final_lr_fraction > 1:
            self._fail("final_lr_fraction", "must be in (0, 1]")
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 < vf < 1:
            self._fail("validation_fraction", "must be in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-able dict."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of `to_dict`; unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} setting(s) {unknown}; known: {sorted(names)}.")
        return cls(**d)


class TrainConfig(TrainingSettings):
    """Architecture and optimisation settings of [`train`][nlme_ppl.train]. Holds no seed:
    the random key is the argument of `train`.

    **Architecture:**

    - `summary`: summary network, `"deepset"` ([`DeepSetSummary`][nlme_ppl.estimators.DeepSetSummary]), `"gru"` ([`GRUSummary`][nlme_ppl.estimators.GRUSummary])
      or `"attention"` ([`AttentionSummary`][nlme_ppl.estimators.AttentionSummary], 4 heads).
    - `summary_dim`: size of the summary (the flow's condition).
    - `hidden_size`: width of the summary network.
    - `summary_depth`: hidden layers of the DeepSet's per-observation MLP; attention blocks of the attention summary.
    - `patch_size`: consecutive observations read together (per DeepSet element or GRU step).
    - `max_rows`: the attention summary's canonical length, the most observed rows an
      individual may have (`None`: the longest training sequence, which `train` records).
    - `flow`: `"coupling"` (fast sampling) or `"maf"`.
    - `flow_layers`, `knots`, `interval`: number of spline layers, knots per spline, and the
      half-width of the spline interval on the standardised scale.
    - `nn_width`, `nn_depth`: the flow conditioners' MLP width and hidden layers.

    **Optimisation:** those of [`TrainingSettings`][nlme_ppl.estimators.TrainingSettings]
    (`batch_size`, `learning_rate`, `lr_schedule`, `final_lr_fraction`, `clip_norm`,
    `max_epochs`, `patience`, `validation_fraction`), and

    - `summary_regression`: weight of an auxiliary loss that asks the summary's first k
      entries to regress the standardised parameters (0 turns it off). It speeds up learning
      of weakly identified parameters markedly; the reported losses are −log q only.
    - `online`: train each epoch after the first on fresh simulations from the model, as many
      as the training split (the validation split and the standardisations stay those of the
      first set). Costs one simulation run per epoch, and removes the gap between training and
      validation loss that a fixed set opens.
    """

    POSITIVE_INTS: ClassVar[tuple[str, ...]] = (
        "summary_dim", "hidden_size", "summary_depth", "patch_size", "flow_layers", "knots", "nn_width", "nn_depth",
    )

    summary: str = "deepset"
    summary_dim: int = 32
    hidden_size: int = 64
    summary_depth: int = 2
    patch_size: int = 4
    max_rows: int | None = None
    flow: str = "coupling"
    flow_layers: int = 6
    knots: int = 10
    interval: float = 6.0
    nn_width: int = 128
    nn_depth: int = 1
    summary_regression: float = 1.0
    online: bool = False

    def __check_init__(self):
        if not isinstance(self.online, bool):
            self._fail("online", "must be True or False")
        if self.summary not in SUMMARY_KINDS:
            self._fail("summary", f"must be one of {SUMMARY_KINDS}")
        if self.flow not in _FLOW_KINDS:
            self._fail("flow", f"must be one of {_FLOW_KINDS}")
        if not (self.summary_regression >= 0):
            self._fail("summary_regression", "must be >= 0")
        self._check_positive("interval")
        if self.max_rows is not None:
            positive_int(self.max_rows, name="TrainConfig.max_rows")
        if self.interval < 3:
            raise ValueError(
                f"TrainConfig.interval is {self.interval}; the splines act on standardised parameters, so "
                "use at least 3 (5–8 covers the tails), or the flow is the identity where the mass is."
            )

    @classmethod
    def sized(cls, *, num_params: int, num_rows: int, num_simulations: int, num_channels: int = 1, **overrides) -> TrainConfig:
        """The configuration [`train`][nlme_ppl.train] uses when it is given none: sized to the
        problem, so that a small model does not pay for a large one.

        - `num_params` (k), `num_rows` (observed rows of the longest individual, T),
          `num_channels` (inputs per row, C), `num_simulations` (all of them, validation included).
        - Summary: a DeepSet over patches of `patch_size` = clip(⌈T / 4⌉, 1, 4) rows (at least four
          patches where T allows), `summary_dim` = clip(2k + 6, 16, 48), width `hidden_size` =
          clip(8k + 24 + 8(C − 1), 48, 128); widths are rounded up to a multiple of 16.
        - Flow: `flow_layers` = clip(k + 1, 4, 8) spline couplings, conditioners of width
          `nn_width` = clip(16k + 32, 64, 192).
        - Optimisation: Adam at `learning_rate` 2e-3 (as the shipped estimators' recipes) with a
          cosine schedule over about 20,000 optimiser steps: `max_epochs` =
          clip(⌈20,000 / steps per epoch⌉, 20, 100), and `patience` = clip(max_epochs / 5, 5, 10).
          `batch_size` 256, or for fewer than 2,048 training simulations the power of two
          nearest below an eighth of them (at least 8), so a small set still trains.
        - `overrides`: fields to set on top (`TrainConfig.sized(..., summary="attention")`).

        The former fixed defaults, `TrainConfig()`, ran 100 epochs at any size: 643 s for a
        five-parameter model on 100,000 simulations. Measured against them in
        `benchmarks/train_defaults.py` (time, validation loss, SD ratios against the exact posteriors).
        """
        k = positive_int(num_params, name="num_params")
        t = positive_int(num_rows, name="num_rows")
        c = positive_int(num_channels, name="num_channels")
        n = positive_int(num_simulations, name="num_simulations")
        base = cls()

        def _multiple_of_16(x: float) -> int:
            return int(16 * math.ceil(x / 16))

        n_train = n - max(1, int(round(n * base.validation_fraction)))
        batch = base.batch_size if n_train >= 8 * base.batch_size else max(8, 2 ** int(math.log2(max(1, n_train // 8))))
        steps_per_epoch = max(1, n_train // batch)
        max_epochs = int(min(100, max(20, math.ceil(_TARGET_STEPS / steps_per_epoch))))
        sized = dict(
            summary="deepset",
            summary_dim=int(min(48, max(16, 2 * k + 6))),
            hidden_size=_multiple_of_16(min(128, max(48, 8 * k + 24 + 8 * (c - 1)))),
            summary_depth=2,
            patch_size=int(min(4, max(1, math.ceil(t / 4)))),
            flow_layers=int(min(8, max(4, k + 1))),
            nn_width=_multiple_of_16(min(192, max(64, 16 * k + 32))),
            nn_depth=1,
            batch_size=batch,
            learning_rate=2e-3,
            max_epochs=max_epochs,
            patience=int(min(10, max(5, max_epochs // 5))),
        )
        return cls(**{**sized, **overrides})


#: Optimiser steps `TrainConfig.sized` plans for (the shipped PK recipes took about 16,000 at
#: 100,000 simulations; their SBC passed).
_TARGET_STEPS = 20_000
