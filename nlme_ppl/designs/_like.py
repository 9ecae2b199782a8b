"""`like(data)`: a design prior that resamples the individuals' own designs from a `Dataset`.

The paper's pharmacokinetic application trained its estimator on the cohort's own medication
times and quantities; `nlp.train(model, key, designs=data, ...)` does that in one call.
"""

from __future__ import annotations

import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray, PyTree

from ..data import Dataset
from ..models import IndividualModel

__all__ = ["DataDesigns", "like"]

#: Design entries with one value per observation (they follow the observations when resampled).
_PER_OBSERVATION = ("times", "mask", "lloq", "obs_cmt")
#: Jitter factors exp(σ z) use z ~ N(0, 1) clipped to ±this, so every factor lies in exp(±2σ).
CLIP = 2.0
CLIP_BOUND = CLIP


class DataDesigns:
    """A design prior `(key, num) -> batched designs` that resamples individuals of a `Dataset`
    (see [`like`][nlme_ppl.designs.like]). Hashable by identity, so a model can hold it as its
    `design_prior`. `for_model(model)` gives the designs in the entries `model` reads."""

    def __init__(self, data: Dataset, *, model=None, time_jitter=0.0, amount_jitter=0.0, samples=None, source=None):
        self.data, self.model = data, model
        self.time_jitter, self.amount_jitter, self.samples, self.source = time_jitter, amount_jitter, samples, source
        arrays = _per_individual(data, model)
        if "lloq" in arrays:  # an assay has one limit: the individual's applies to all its samples
            lim = np.max(np.where(np.isfinite(arrays["lloq"]), arrays["lloq"], -np.inf), axis=1, keepdims=True)
            arrays["lloq"] = np.broadcast_to(lim, arrays["lloq"].shape).copy()
        self.width = int(arrays["times"].shape[1])  # the data's padded observations
        self.padded_observations = self.width if samples is None else max(1, math.ceil(self.width * samples[1]))
        self._arrays = _observed_first(arrays)

    def for_model(self, model: IndividualModel) -> "DataDesigns":
        """These designs in the entries `model` reads (checked: `model.check_data(data)`)."""
        return DataDesigns(self.data, model=model, time_jitter=self.time_jitter, amount_jitter=self.amount_jitter,
                           samples=self.samples, source=self.source)  # fmt: skip

    def __call__(self, key: PRNGKeyArray, num: int) -> PyTree:
        return self.sample_with_index(key, num)[0]

    def sample_with_index(self, key: PRNGKeyArray, num: int) -> tuple[PyTree, Array]:
        """`num` designs and, for each, the row of the data it was resampled from, `(num,)`."""
        k_pick, k_dt, k_amt, k_t, k_n, k_pri, k_src, k_ext = jax.random.split(key, 8)
        idx = jax.random.randint(k_pick, (num,), 0, self.data.num_individuals)
        g = {k: jnp.asarray(v)[idx] for k, v in self._arrays.items()}
        if "dose_times" in g:
            ft, fa = _factor(k_dt, (num, 1), self.time_jitter), _factor(k_amt, (num, 1), self.amount_jitter)
            g["dose_times"] = g["dose_times"] * ft
            g["dose_amounts"] = g["dose_amounts"] * fa
            g["dose_rates"] = g["dose_rates"] * fa / ft  # infusions stretch with the schedule
            if "dose_ii" in g:
                g["dose_ii"] = g["dose_ii"] * ft
            if "dose_end" in g:
                g["dose_end"] = jnp.where(jnp.isfinite(g["dose_end"]), g["dose_end"] * ft, jnp.inf)
        mask = g["mask"].astype(bool)
        g["times"] = jnp.where(mask, g["times"] * _factor(k_t, mask.shape, self.time_jitter), g["times"])
        obs = {k: g[k] for k in _PER_OBSERVATION if k in g}
        if self.samples is not None:
            obs = self._rescale(obs, k_n, k_pri, k_src, k_ext)
        mask = obs["mask"].astype(bool)
        order = jnp.argsort(jnp.where(mask, obs["times"], jnp.inf), axis=1, stable=True)  # observed first, in time order
        obs = {k: jnp.take_along_axis(v, order, axis=1) for k, v in obs.items()}
        mask = obs["mask"].astype(bool)
        obs["times"] = jnp.where(mask, obs["times"], 0.0)
        if "obs_cmt" in obs:
            obs["obs_cmt"] = jnp.where(mask, obs["obs_cmt"], 0)
        return {**g, **obs, "mask": mask}, idx

    def _rescale(self, obs, k_n, k_pri, k_src, k_ext):
        """Each individual's number of samples times a factor uniform in `samples`: a random subset
        of its own samples, or all of them and copies of random ones at times uniform over its span."""
        lo, hi = self.samples
        mask = obs["mask"].astype(bool)
        num, width, tp = mask.shape[0], mask.shape[1], self.padded_observations
        count = jnp.sum(mask, axis=1)
        target = jnp.clip(jnp.round(count * jax.random.uniform(k_n, (num,), minval=lo, maxval=hi)), 1, tp).astype(jnp.int32)
        src = jnp.minimum(jnp.floor(jax.random.uniform(k_src, (num, tp)) * count[:, None]).astype(jnp.int32), width - 1)
        extra = {k: jnp.take_along_axis(v, src, axis=1) for k, v in obs.items()}
        t_obs = jnp.where(mask, obs["times"], jnp.nan)
        t_lo, t_hi = jnp.nanmin(t_obs, axis=1, keepdims=True), jnp.nanmax(t_obs, axis=1, keepdims=True)
        extra["times"] = t_lo + jax.random.uniform(k_ext, (num, tp)) * (t_hi - t_lo)
        both = {k: jnp.concatenate([obs[k], extra[k]], axis=1) for k in obs}
        u = jax.random.uniform(k_pri, (num, width + tp))
        priority = jnp.concatenate([jnp.where(mask, u[:, :width], 3.0), 1.0 + u[:, width:]], axis=1)
        pick = jnp.argsort(priority, axis=1)[:, :tp]
        out = {k: jnp.take_along_axis(v, pick, axis=1) for k, v in both.items()}
        out["mask"] = jnp.arange(tp)[None, :] < target[:, None]
        return out

    def record(self) -> dict:
        """How these designs are made, for the estimator file's `designs` block (JSON)."""
        return {
            "kind": "like",
            "source": self.source or {},
            "data_sha256": data_hash(self.data),
            "num_individuals": int(self.data.num_individuals),
            "time_jitter": float(self.time_jitter),
            "amount_jitter": float(self.amount_jitter),
            "samples": None if self.samples is None else [float(s) for s in self.samples],
            "padded_observations": int(self.padded_observations),
            "padded_doses": None if self.data.doses is None else int(self.data.doses.mask.shape[1]),
        }

    def __repr__(self) -> str:
        return (f"DataDesigns({self.data.num_individuals} individuals, time_jitter={self.time_jitter}, "
                f"amount_jitter={self.amount_jitter}, samples={self.samples})")  # fmt: skip


def like(
    data: Dataset,
    *,
    model: IndividualModel | None = None,
    time_jitter: float = 0.0,
    amount_jitter: float = 0.0,
    samples: tuple[float, float] | None = None,
    source: dict | None = None,
) -> DataDesigns:
    """A design prior that resamples the individuals' own designs from `data`.

    Each design is one individual of `data`, drawn uniformly: its dose times, amounts, routes
    (CMT, as the model maps it) and rates, steady-state intervals and resets, sampling times,
    the covariates the simulator reads, limits of quantification and observed compartments.
    Without options every design equals one individual's.

    **Arguments:**

    - `data`: a [`Dataset`][nlme_ppl.Dataset] (e.g. `nlp.read_nonmem("study.csv")`).
    - `model`: the model the designs are for (its design entries; `model.check_data(data)`
      refuses what it cannot simulate). Default: every entry the data has; `nlp.train` binds
      the model it trains.
    - `time_jitter`: relative SD σ of the times: each sample time is multiplied by its own
      factor exp(σ z), and an individual's whole dose schedule (times, infusion durations,
      steady-state intervals, resets) by one factor, z ~ N(0, 1) clipped to ±2, so every time
      stays within exp(±2σ) of its value.
    - `amount_jitter`: relative SD σ of the amounts: all of an individual's doses are
      multiplied by one factor exp(σ z), z clipped to ±2 (within exp(±2σ)).
    - `samples`: `(lo, hi)`: each individual's number of samples is multiplied by a factor
      uniform in `[lo, hi]` (rounded, at least 1): fewer keeps a random subset of its samples,
      more adds copies of random ones at times uniform over its sampling span. The padded
      number of observations is `ceil(T · hi)`, `T` the data's.
    - `source`: optional JSON-able description of where `data` came from (the CLI records the
      file name and its SHA-256), kept in `record()`.

    **Returns:** a [`DataDesigns`][nlme_ppl.designs.DataDesigns], a callable `(key, num) ->`
    batched designs like the built-in models' `design_prior`.
    """
    if not isinstance(data, Dataset):
        raise TypeError(f"`data` must be a nlme_ppl.Dataset (e.g. nlp.read_nonmem('study.csv')); got {type(data).__name__}.")
    for name, v in (("time_jitter", time_jitter), ("amount_jitter", amount_jitter)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
            raise ValueError(f"`{name}` is a relative SD between 0 and 1 (e.g. 0.1 for 10%); got {v!r}.")
    if samples is not None:
        try:
            lo, hi = (float(s) for s in samples)
        except (TypeError, ValueError):
            raise ValueError(f"`samples` must be a pair (lo, hi) of factors, e.g. (0.5, 1.5); got {samples!r}.") from None
        if not (0 < lo <= hi <= 10):
            raise ValueError(f"`samples` = ({lo}, {hi}): need 0 < lo <= hi <= 10.")
        samples = (lo, hi)
    if model is not None and not isinstance(model, IndividualModel):
        raise TypeError(f"`model` must be an IndividualModel; got {type(model).__name__}.")
    return DataDesigns(data, model=model, time_jitter=float(time_jitter), amount_jitter=float(amount_jitter),
                       samples=samples, source=source)  # fmt: skip


def data_hash(data: Dataset) -> str:
    """A SHA-256 (16 hex digits) of a data set's designs and values."""
    h = hashlib.sha256()
    leaves = [data.times, data.values, data.mask, *(data.covariates[k] for k in sorted(data.covariates))]
    if data.doses is not None:
        leaves += [x for x in jax.tree.leaves(data.doses)]
    for x in leaves:
        h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
    h.update(repr(data.ids).encode())
    return h.hexdigest()[:16]


def _factor(key, shape, sd: float):
    if not sd:
        return jnp.ones(shape)
    return jnp.exp(sd * jnp.clip(jax.random.normal(key, shape), -CLIP, CLIP))


def _per_individual(data: Dataset, model) -> dict[str, np.ndarray]:
    """Each individual's design as `(N, ...)` arrays: the model's entries, or every entry the data has."""
    if model is not None:
        return {k: np.asarray(v) for k, v in model.designs_from_data(data).items()}
    out = {"times": np.asarray(data.times), "mask": np.asarray(data.mask, bool)}
    if data.doses is not None:
        out.update({k: np.asarray(v) for k, v in data.doses.design().items()})
    out.update({k: np.asarray(v, float) for k, v in data.covariates.items()})
    if data.censored is not None:
        out["lloq"] = np.where(np.asarray(data.censored) & out["mask"], np.asarray(data.values), -np.inf)
    if data.obs_cmt is not None:
        out["obs_cmt"] = np.asarray(data.obs_cmt)
    return out


def _observed_first(arrays: dict) -> dict:
    """The per-observation entries of every individual reordered: observed first, in time order."""
    mask = arrays["mask"].astype(bool)
    order = np.lexsort((np.where(mask, arrays["times"], np.inf), ~mask), axis=1)
    out = dict(arrays)
    for k in _PER_OBSERVATION:
        if k in out and np.shape(out[k]) == mask.shape:
            out[k] = np.take_along_axis(out[k], order, axis=1)
    return out
