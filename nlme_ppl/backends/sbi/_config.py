"""`SbiConfig`: the sbi estimator's architecture, on the optimisation settings both backends share."""

from __future__ import annotations

from typing import ClassVar

from ...estimators import TrainingSettings
from ._embedding import EMBEDDINGS

__all__ = ["SbiConfig"]


class SbiConfig(TrainingSettings):
    """Architecture and training of an sbi estimator.

    **Architecture:**

    - `flow`: sbi's density estimator (`"nsf"` neural spline flow, `"maf"`, or a `"zuko_*"` one).
    - `hidden_features`, `num_transforms`, `num_bins`: the flow's width, depth and spline bins.
    - `embedding`: `"deepset"` (masked mean of a row MLP) or `"gru"` (over the rows in time order).
    - `embedding_hidden`, `summary_dim`: the embedding's width and output size.

    **Optimisation:** those of [`TrainingSettings`][nlme_ppl.estimators.TrainingSettings]
    (`batch_size`, `learning_rate`, `max_epochs` (50 here), `patience`, `validation_fraction`,
    `clip_norm`, `final_lr_fraction`), with `lr_schedule` `"cosine"` (as the flowjax recipes)
    or `"constant"` (what sbi's `NPE.train` does).

    The loss is sbi's NPE loss, −log q(φ | x) of the density estimator on prior-predictive pairs
    (`ConditionalDensityEstimator.loss`). The loop is nlme_ppl's because `NPE.train` has no
    learning-rate schedule: at a constant rate the last weights stay noisy, and in the
    cross-backend benchmark that left CL biased (docs/guide/sbi.md).
    """

    LR_SCHEDULES: ClassVar[tuple[str, ...]] = ("cosine", "constant")
    POSITIVE_INTS: ClassVar[tuple[str, ...]] = ("hidden_features", "num_transforms", "num_bins", "embedding_hidden", "summary_dim")

    flow: str = "nsf"
    hidden_features: int = 64
    num_transforms: int = 5
    num_bins: int = 10
    embedding: str = "deepset"
    embedding_hidden: int = 128
    summary_dim: int = 32
    max_epochs: int = 50

    def __check_init__(self):
        if self.embedding not in EMBEDDINGS:
            self._fail("embedding", f"must be one of {sorted(EMBEDDINGS)}")
