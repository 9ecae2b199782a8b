"""Amortized estimators q(φ | y): summary networks, flows, training, and trained posteriors."""

from ._config import TrainConfig as TrainConfig, TrainingHistory as TrainingHistory
from ._flow import build_flow as build_flow
from ._posterior import AmortizedPosterior as AmortizedPosterior
from ._pretrained import PRETRAINED_CONFIGS as PRETRAINED_CONFIGS
from ._summary import (
    AbstractSummary as AbstractSummary,
    DeepSetSummary as DeepSetSummary,
    GRUSummary as GRUSummary,
    InputScaling as InputScaling,
)
from ._train import train as train
from ..io.serialization import load_posterior as load_posterior, pretrained as pretrained, save_posterior as save_posterior

__all__ = [
    "AbstractSummary",
    "AmortizedPosterior",
    "DeepSetSummary",
    "GRUSummary",
    "InputScaling",
    "PRETRAINED_CONFIGS",
    "TrainConfig",
    "TrainingHistory",
    "build_flow",
    "load_posterior",
    "pretrained",
    "save_posterior",
    "train",
]
