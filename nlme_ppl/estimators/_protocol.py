"""`Posterior`: the interface every amortized posterior q(φ | y) has, whatever trained it.

`fit_map`, `fit_nuts`, `amortize` and the diagnostics take any object with this interface: the
flowjax [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior], the sbi backend's
[`SbiPosterior`][nlme_ppl.backends.sbi.SbiPosterior], and estimators built on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from jaxtyping import Array, Float, PRNGKeyArray

from ..data import Dataset
from ..models import IndividualModel

__all__ = ["Posterior"]


@runtime_checkable
class Posterior(Protocol):
    """An amortized posterior q(φ | y) of an individual model.

    `isinstance(obj, nlp.estimators.Posterior)` checks that `obj` has every member below.

    **Attributes:**

    - `model`: the [`IndividualModel`][nlme_ppl.IndividualModel] it was trained for.
    - `param_names`: the model's parameter names, the order of the last axis of every draw.
    - `backend`: the name of the backend that made it, the key of the archive registry
      (`"flowjax"`, `"sbi"`). A posterior that is exact already (`"exact"`, `"importance"`,
      `"refined"`) is used by `fit_map` and `fit_nuts` as it is, without
      [refinement][nlme_ppl.refine].

    **Methods:**

    - `sample(data, key, *, num_draws, ...)`: `num_draws` draws from q(φ | y_i) for every
      individual of `data`, float64 `(N, M, k)`. A posterior held for one data set (an exact
      one) must also serve a subset of its individuals (`data.subset(rows)`): the fits ask
      for extra draws of some individuals that way (`max_draws`).
    - `log_prob(data, params, ...)`: log q(φ_ij | y_i) of `(N, M, k)` parameters, `(N, M)`.
    - `summaries(data, ...)`: the summary network's output `(N, d)` for every individual, or
      `None` for an estimator without a summary network.
    - `save(path)`: write one estimator file ([`save_posterior`][nlme_ppl.estimators.save_posterior]).
    - `to_archive()`: the metadata (JSON-able dict) and the weights (bytes) of the file;
      `from_archive(metadata, payload, model)` (a classmethod) is its inverse, the backend's
      loader in the archive registry.
    """

    model: IndividualModel
    param_names: tuple[str, ...]
    backend: str

    def sample(self, data: Dataset, key: PRNGKeyArray, *, num_draws: int, **options: Any) -> Float[Array, "individuals draws k"]:
        ...

    def log_prob(self, data: Dataset, params: Float[Array, "individuals draws k"], **options: Any) -> Float[Array, "individuals draws"]:
        ...

    def summaries(self, data: Dataset, **options: Any) -> Float[Array, "individuals summary_dim"] | None:
        ...

    def save(self, path: str | Path) -> None:
        ...

    def to_archive(self) -> tuple[dict[str, Any], bytes]:
        ...

    @classmethod
    def from_archive(cls, metadata: dict[str, Any], payload: bytes, model: IndividualModel) -> Posterior:
        ...
