"""Amortized estimators q(φ | y): the posterior protocol, summary networks, flows, training,
trained posteriors and their files.

- [`Posterior`][nlme_ppl.estimators.Posterior]: the interface of every estimator, whatever
  backend trained it.
- [`encode`][nlme_ppl.estimators.encode] / [`num_channels`][nlme_ppl.estimators.num_channels]:
  the rows a summary network reads (observations, and for dosing models doses); the sbi
  backend reads the same.
- [`lr_schedule`][nlme_ppl.estimators.lr_schedule]: the learning rate per step of a
  configuration, for both backends' trainers.

Importing this package registers the flowjax backend in the archive registry
(`nlme_ppl.io.serialization`).
"""

from ..io.serialization import register_backend as _register_backend
from ._archive import load_posterior as load_posterior, save_posterior as save_posterior
from ._config import TrainConfig as TrainConfig, TrainingSettings as TrainingSettings
from ._encoding import DOSE_CHANNELS as DOSE_CHANNELS, encode as encode, num_channels as num_channels
from ._attention import AttentionSummary as AttentionSummary
from ._flow import build_flow as build_flow
from ._history import EpochLog as EpochLog, TrainingHistory as TrainingHistory
from ._posterior import AmortizedPosterior as AmortizedPosterior
from ._pretrained import PRETRAINED_CONFIGS as PRETRAINED_CONFIGS, pretrained as pretrained
from ._protocol import Posterior as Posterior
from ._schedule import lr_schedule as lr_schedule
from ._summary import (
    AbstractSummary as AbstractSummary,
    DeepSetSummary as DeepSetSummary,
    GRUSummary as GRUSummary,
    InputScaling as InputScaling,
)
from ._train import train as train, train_flowjax as _train_flowjax

_register_backend("flowjax", loader=AmortizedPosterior.from_archive, trainer=_train_flowjax)

__all__ = [
    "AbstractSummary",
    "AmortizedPosterior",
    "AttentionSummary",
    "DOSE_CHANNELS",
    "EpochLog",
    "DeepSetSummary",
    "GRUSummary",
    "InputScaling",
    "PRETRAINED_CONFIGS",
    "Posterior",
    "TrainConfig",
    "TrainingHistory",
    "TrainingSettings",
    "build_flow",
    "encode",
    "load_posterior",
    "lr_schedule",
    "num_channels",
    "pretrained",
    "save_posterior",
    "train",
]
