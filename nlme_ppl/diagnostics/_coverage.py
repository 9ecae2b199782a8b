"""Out-of-distribution check: do the data look like what the estimator was trained on?

An amortized estimator is only trustworthy on data resembling its training simulations. The
summary network maps each individual's data to a vector; for data from the training
distribution those vectors follow the distribution of the simulations' summaries. This
check simulates reference data sets from the training prior at the data's own designs (each
individual's times and mask, cycled over the reference), and scores each individual by the
squared Mahalanobis distance of its summary from the reference summaries.

The mean and covariance are fitted on `num_fit` simulations and the distances compared with
`num_reference` further ones, so that for data from the training distribution an
individual's distance is exchangeable with the reference distances: its tail probability
`(#{reference ≥ d} + 1) / (num_reference + 1)` is then uniform on the grid `k / (num_reference + 1)`.
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Float

from .._buffers import take_rows
from .._validate import check_keys, positive_int
from ..data import Dataset
from ..simulation import dataset_from_designs
from ._importance import SurrogateWarning, _name_ids

__all__ = ["OutlierDiagnostics", "summary_outliers"]


class OutlierDiagnostics(eqx.Module):
    """Per-individual distance of the data's summaries from the training distribution's.

    **Fields:**

    - `ids`: the `N` individual ids.
    - `distance`: `(N,)` squared Mahalanobis distance of each individual's summary from the
      reference summaries' mean.
    - `tail_prob`: `(N,)` `(#{reference distances ≥ distance} + 1) / (num_reference + 1)`: small
      means unusual; `1 / (num_reference + 1)` means farther than every reference data set.
    - `reference_distance`: `(num_reference,)` the reference data sets' distances, sorted.
    """

    ids: tuple[str, ...] = eqx.field(static=True)
    distance: Float[np.ndarray, " individuals"]
    tail_prob: Float[np.ndarray, " individuals"]
    reference_distance: Float[np.ndarray, " reference"]

    def __check_init__(self):
        n = len(self.ids)
        if np.shape(self.distance) != (n,) or np.shape(self.tail_prob) != (n,):
            raise ValueError(
                f"inconsistent OutlierDiagnostics: {n} ids, distance {np.shape(self.distance)}, "
                f"tail_prob {np.shape(self.tail_prob)}."
            )

    @property
    def num_reference(self) -> int:
        return int(np.shape(self.reference_distance)[0])

    @property
    def flag(self) -> np.ndarray:
        """`(N,)` booleans: the individual's distance exceeds every reference distance."""
        return self.flagged()

    def flagged(self, margin: float = 1.0) -> np.ndarray:
        """`(N,)` booleans: the individual's distance exceeds `margin` times the largest reference distance."""
        return np.asarray(self.distance) > margin * np.max(self.reference_distance)

    def bad(self, margin: float = 1.0) -> tuple[str, ...]:
        """Ids of the individuals farther from the training distribution than `margin` times the
        farthest reference data set (`margin=1`: farther than every reference data set)."""
        return tuple(i for i, f in zip(self.ids, self.flagged(margin)) if f)

    def table(self) -> pd.DataFrame:
        """One row per individual, indexed by id: `distance`, `tail_prob` and `flag`."""
        return pd.DataFrame(
            {
                "distance": np.asarray(self.distance, np.float64),
                "tail_prob": np.asarray(self.tail_prob, np.float64),
                "flag": self.flag,
            },
            index=pd.Index(self.ids, name="id"),
        )

    def warn(self, *, margin: float = 1.0, stacklevel: int = 2) -> None:
        """Issue one [`SurrogateWarning`][nlme_ppl.diagnostics.SurrogateWarning] naming the individuals
        flagged with `margin` (nothing when there are none). `fit_map` and `fit_nuts` use
        `margin=2`, which chance alone practically never reaches, so that large data sets do not
        warn about the ~N/num_reference individuals that are beyond every reference by chance."""
        bad = self.bad(margin)
        if not bad:
            return
        n = len(self.ids)
        chance = n / (self.num_reference + 1) if margin == 1.0 else 0.0
        far = "" if margin == 1.0 else f"{margin:g} times "
        warnings.warn(
            f"{len(bad)} of {n} individuals lie outside what the estimator was trained on (their summaries are "
            f"farther from the training simulations' than {far}the farthest of {self.num_reference} reference simulations): "
            f"{_name_ids(bad)}. By chance alone about {chance:.2g} would be. Its posteriors, and the surrogate, "
            "are unreliable there: check the data's units and scale (e.g. log vs natural values, time units) "
            "against the model's, or retrain the estimator with a broader training prior.",
            SurrogateWarning,
            stacklevel=stacklevel,
        )

    def __repr__(self) -> str:
        return (
            f"OutlierDiagnostics({len(self.ids)} individuals, {self.num_reference} reference simulations; "
            f"{len(self.bad())} flagged, min tail_prob={np.min(self.tail_prob):.3g})"
        )


@eqx.filter_jit
def _simulate_at(model, keys, designs):
    return jax.vmap(model.simulate_one)(keys, designs)


def _reference_data(model, data: Dataset, key, num: int) -> tuple[Dataset, int]:
    """`num` prior-predictive data sets at `data`'s designs, cycled over its individuals.

    Simulations with non-finite observations are dropped. **Returns:** the data set and the
    number dropped.
    """
    designs = model.designs_from_data(data)
    designs = take_rows(designs, jnp.arange(num) % data.num_individuals)
    _, obs = _simulate_at(model, jax.random.split(key, num), designs)
    obs, designs = jax.device_get((obs, designs))
    ok = np.where(np.asarray(designs["mask"], bool), np.isfinite(obs), True).all(axis=1)
    ref = dataset_from_designs(model, designs, obs, keep=ok)
    return ref, int(num - ok.sum())


def _mahalanobis2(x: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    import scipy.linalg

    z = scipy.linalg.solve_triangular(chol, (x - mean).T, lower=True)
    return np.sum(z * z, axis=0)


def summary_outliers(
    posterior,
    data: Dataset,
    key,
    *,
    num_reference: int = 2000,
    num_fit: int | None = None,
    ridge: float = 1e-6,
) -> OutlierDiagnostics | None:
    """Flag individuals whose data lie outside what `posterior` was trained on.

    Simulates `num_fit + num_reference` data sets from the training prior of `posterior.model`
    at `data`'s designs (individual `i mod N`'s times and mask for the `i`-th simulation),
    embeds them and `data` with `posterior.summaries`, fits the mean and covariance of the first
    `num_fit` embeddings, and compares each individual's squared Mahalanobis distance with the
    other `num_reference` ones' (see [`OutlierDiagnostics`][nlme_ppl.diagnostics.OutlierDiagnostics]).

    For data from the training distribution each individual is flagged with probability about
    `1 / (num_reference + 1)`, so a few flags among many thousand individuals are expected.

    **Arguments:**

    - `posterior`: an [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior] (with `model` and
      `summaries(data)`).
    - `data`: the [`Dataset`][nlme_ppl.Dataset] to check.
    - `key`: a JAX random key for the reference simulations.
    - `num_reference`: reference simulations the distances are compared with.
    - `num_fit`: simulations the mean and covariance are fitted on (default `num_reference`).
    - `ridge`: added to the covariance's diagonal, relative to its mean variance, so that the
      covariance stays invertible when a summary coordinate barely varies.

    **Returns:** an [`OutlierDiagnostics`][nlme_ppl.diagnostics.OutlierDiagnostics], or `None`
    for an estimator without a summary network (its `summaries(data)` gives `None`).
    """
    check_keys(key)
    if not isinstance(data, Dataset):
        raise TypeError(f"expected a nlme_ppl.Dataset; got {type(data).__name__}.")
    if not (hasattr(posterior, "summaries") and hasattr(posterior, "model")):
        raise TypeError(
            f"`posterior` must be an AmortizedPosterior or another estimator (nlp.estimators.Posterior, with .model and "
            f".summaries(data)); got "
            f"{type(posterior).__name__}. A posterior without a summary network returns None from summaries(data)."
        )
    obs = posterior.summaries(data)
    if obs is None:  # an estimator without a summary network: there is no summary space to check
        return None
    num_reference = positive_int(num_reference, name="num_reference")
    num_fit = num_reference if num_fit is None else positive_int(num_fit, name="num_fit")
    if num_reference < 100:
        raise ValueError(f"`num_reference` must be at least 100 to resolve tail probabilities; got {num_reference}.")
    if not ridge >= 0:
        raise ValueError(f"`ridge` must be non-negative; got {ridge!r}.")
    total = num_fit + num_reference
    ref, dropped = _reference_data(posterior.model, data, key, total)
    if dropped > 0.01 * total:
        raise RuntimeError(
            f"{dropped} of {total} reference simulations of {posterior.model.name!r} were not finite; check the "
            "simulator at the data's observation times."
        )
    emb = np.asarray(posterior.summaries(ref), np.float64)
    num_fit = min(num_fit, emb.shape[0] - num_reference)
    fit, reference = emb[:num_fit], emb[num_fit : num_fit + num_reference]
    dim = emb.shape[1]
    if num_fit <= dim:
        raise ValueError(
            f"`num_fit` ({num_fit}) must exceed the summary dimension ({dim}) to fit a covariance; raise it."
        )
    mean = fit.mean(axis=0)
    cov = np.cov(fit, rowvar=False).reshape(dim, dim)
    cov += (ridge * np.trace(cov) / dim + np.finfo(np.float64).tiny) * np.eye(dim)
    chol = np.linalg.cholesky(cov)
    ref_d = np.sort(_mahalanobis2(reference, mean, chol))
    d = _mahalanobis2(np.asarray(obs, np.float64), mean, chol)
    d = np.where(np.isfinite(d), d, np.inf)
    count = len(ref_d) - np.searchsorted(ref_d, d, side="left")  # reference distances >= d
    tail = (count + 1) / (len(ref_d) + 1)
    return OutlierDiagnostics(ids=data.ids, distance=d, tail_prob=tail, reference_distance=ref_d)
