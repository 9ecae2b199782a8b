"""`lr_schedule`: the learning rate per step, shared by the flowjax and the sbi trainers."""

from __future__ import annotations

import optax

from ._config import TrainingSettings

__all__ = ["lr_schedule"]


def lr_schedule(config: TrainingSettings, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate per optimiser step that `config` describes.

    **Arguments:**

    - `config`: a [`TrainConfig`][nlme_ppl.TrainConfig] or
      [`SbiConfig`][nlme_ppl.backends.sbi.SbiConfig] (its `learning_rate`, `lr_schedule`,
      `final_lr_fraction` and `max_epochs`).
    - `steps_per_epoch`: optimiser steps per epoch.

    **Returns:** an optax schedule, step -> rate. For `"cosine"`, a linear warm-up from a tenth
    over one epoch (at most a tenth of the run), then cosine decay to `final_lr_fraction` ×
    `learning_rate`; for `"exponential"`, decay to the same end point; else constant.
    """
    lr, total = config.learning_rate, config.max_epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        warmup = min(steps_per_epoch, max(total // 10, 1))
        return optax.warmup_cosine_decay_schedule(
            lr * 0.1, lr, warmup, max(total, warmup + 1), end_value=lr * config.final_lr_fraction
        )
    if config.lr_schedule == "exponential":
        return optax.exponential_decay(lr, max(total, 1), config.final_lr_fraction)
    return optax.constant_schedule(lr)
