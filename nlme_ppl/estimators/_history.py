"""`TrainingHistory`: what happened in training, the same record for every backend."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import numpy as np

__all__ = ["EpochLog", "TrainingHistory", "plot_losses"]


class TrainingHistory(eqx.Module):
    """What happened in training: per-epoch losses (mean −log q(φ | y) on the original
    parameter scale, or the backend's own loss for sbi), the epoch whose weights were kept, the
    sizes of the training and validation splits, and timings. Both backends record it.

    **Fields:** `train_loss`, `val_loss` (one per epoch), `best_epoch` (0-based), `num_train`,
    `num_val`, `train_seconds`, `simulate_seconds`. **Properties:** `epochs`, `best_val_loss`,
    `num_simulations`.
    """

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

    @property
    def num_simulations(self) -> int:
        return self.num_train + self.num_val

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainingHistory":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(float(x) for x in v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)

    #: the keys of the sbi backend's former history dict, and the fields they now are
    _DICT_KEYS = {
        "training_loss": "train_loss", "validation_loss": "val_loss", "best_validation_loss": "best_val_loss",
        "epochs": "epochs", "num_simulations": "num_simulations", "simulate_seconds": "simulate_seconds",
        "train_seconds": "train_seconds",
    }

    def __getitem__(self, key: str):
        """Deprecated: the sbi backend's history was a dict; read the attributes instead."""
        if key not in self._DICT_KEYS:
            raise KeyError(key)
        name = self._DICT_KEYS[key]
        warnings.warn(f"history[{key!r}] is deprecated; use history.{name}.", DeprecationWarning, stacklevel=2)
        value = getattr(self, name)
        return list(value) if isinstance(value, tuple) else value


def plot_losses(history: TrainingHistory, path: str | Path, title: str) -> None:
    """Write a PNG of the training and validation losses per epoch to `path`."""
    import textwrap

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
    ax.set_title("\n".join(textwrap.wrap(title, 60)))  # a long title would run off the figure
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class EpochLog:
    """The losses of a training run, epoch by epoch, with early stopping: `record` says whether
    an epoch's validation loss is the best so far (a NaN never is), and `stop` turns true after
    `patience` epochs without a better one. Both backends' training loops keep one."""

    def __init__(self, patience: int):
        self.patience = patience
        self.train_loss: list[float] = []
        self.val_loss: list[float] = []
        self.best, self.best_epoch, self._since = float("inf"), -1, 0

    def record(self, train_loss: float, val_loss: float) -> bool:
        self.train_loss.append(float(train_loss))
        self.val_loss.append(float(val_loss))
        if val_loss < self.best:
            self.best, self.best_epoch, self._since = float(val_loss), len(self.val_loss) - 1, 0
            return True
        self._since += 1
        return False

    @property
    def stop(self) -> bool:
        return self._since >= self.patience

    def history(self, *, num_train: int, num_val: int, train_seconds: float, simulate_seconds: float) -> TrainingHistory:
        return TrainingHistory(
            train_loss=tuple(self.train_loss), val_loss=tuple(self.val_loss), best_epoch=self.best_epoch,
            num_train=int(num_train), num_val=int(num_val), train_seconds=float(train_seconds),
            simulate_seconds=float(simulate_seconds),
        )
