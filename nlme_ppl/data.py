"""`Dataset`: padded per-individual observations with a mask, ids and covariates.

The container only: tables and NONMEM files are read in `nlme_ppl.io`, and simulator
designs become a `Dataset` in `nlme_ppl.simulation` (`dataset_from_designs`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Bool, Float, Int

from ._buffers import take_rows
from ._doses import CENTRAL as CENTRAL, DEPOT as DEPOT, Doses as Doses
from ._validate import as_float_array, check_covariates, check_observations, individual_label, normalise_ids

__all__ = ["Dataset", "Doses"]

class Dataset(eqx.Module):
    """Observations of `N` individuals, padded to a common length `T`.

    Padded entries have `mask == False`; their times and values are zero and are never read
    as data. Times need not be shared or regular across individuals.

    **Fields:**

    - `times`: `(N, T)` observation times.
    - `values`: `(N, T)` observed values.
    - `mask`: `(N, T)` `True` where an observation exists.
    - `ids`: `N` individual ids (strings).
    - `covariates`: mapping from covariate name to an `(N,)` array.
    - `doses`: the dosing events ([`Doses`][nlme_ppl.Doses]), or `None` (no doses).
    - `censored`: `(N, T)` `True` where an observation is below the limit of quantification
      (its value is then the limit, as in NONMEM's M3 method), or `None` (none censored).
    - `obs_cmt`: `(N, T)` the compartment each observation measures (NONMEM's CMT on
      observation rows), for data with several analytes such as a parent drug and its
      metabolite; `None` when there is one.
    - `subjects`: with inter-occasion variability, each row is one occasion of an individual
      (a conditionally independent unit of the individual model) and `subjects` gives, per
      row, the individual it belongs to (NONMEM's ID; `ids` are then `"ID/OCC"`). `None`
      (the default): every row is its own individual. See
      [`with_subjects`][nlme_ppl.Dataset.with_subjects].
    """

    times: Float[Array, "individuals obs"]
    values: Float[Array, "individuals obs"]
    mask: Bool[Array, "individuals obs"]
    ids: tuple[str, ...] = eqx.field(static=True)
    covariates: dict[str, Float[Array, " individuals"]] = eqx.field(default_factory=dict)
    doses: Doses | None = None
    censored: Bool[Array, "individuals obs"] | None = None
    obs_cmt: Int[Array, "individuals obs"] | None = None
    subjects: tuple[str, ...] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.subjects is not None and len(self.subjects) != len(self.ids):
            raise ValueError(f"`subjects` must name the individual of each of the {len(self.ids)} rows; got {len(self.subjects)}.")
        if self.times.ndim != 2 or self.times.shape != self.values.shape or self.mask.shape != self.times.shape:
            raise ValueError(
                "`times`, `values` and `mask` must all have shape (individuals, observations); got "
                f"{self.times.shape}, {self.values.shape}, {self.mask.shape}."
            )
        if len(self.ids) != self.times.shape[0]:
            raise ValueError(f"expected {self.times.shape[0]} ids, one per individual; got {len(self.ids)}.")
        for name, c in self.covariates.items():
            if jnp.shape(c) != (self.times.shape[0],):
                raise ValueError(
                    f"covariate {name!r} must have one value per individual, shape "
                    f"({self.times.shape[0]},); got {jnp.shape(c)}."
                )
        if self.doses is not None and self.doses.num_individuals != self.times.shape[0]:
            raise ValueError(f"`doses` covers {self.doses.num_individuals} individuals but the data has {self.times.shape[0]}.")
        if self.censored is not None and jnp.shape(self.censored) != self.times.shape:
            raise ValueError(f"`censored` must have shape {self.times.shape} like `values`; got {jnp.shape(self.censored)}.")
        if self.obs_cmt is not None and jnp.shape(self.obs_cmt) != self.times.shape:
            raise ValueError(f"`obs_cmt` must have shape {self.times.shape} like `values`; got {jnp.shape(self.obs_cmt)}.")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        times,
        values,
        *,
        mask=None,
        ids: Sequence | None = None,
        covariates: Mapping[str, Sequence[float]] | None = None,
        doses: Doses | None = None,
        censored=None,
        obs_cmt=None,
    ) -> "Dataset":
        """Build a dataset from rectangular arrays.

        **Arguments:**

        - `times`: `(T,)` times shared by all individuals, or `(N, T)`.
        - `values`: `(N, T)` observations (or `(T,)` for a single individual).
        - `mask`: optional `(N, T)` booleans; `False` marks padding. Without a mask every entry
          must be a finite observation.
        - `ids`: optional `N` ids (default `"1" … "N"`).
        - `covariates`: optional mapping of name to `N` values.
        - `doses`: optional [`Doses`][nlme_ppl.Doses] of the same `N` individuals.
        - `censored`: optional `(N, T)` booleans, `True` where the value is a censoring limit.
        - `obs_cmt`: optional `(N, T)` integers, the compartment each observation measures
          (several analytes, e.g. 2 = parent and 3 = metabolite).

        Ragged inputs (lists of different lengths) are refused: pad them and pass a `mask`, or
        use [`Dataset.from_individuals`][nlme_ppl.Dataset.from_individuals].
        """
        values = as_float_array(values, name="values")
        if values.ndim == 1:
            values = values[None]
        if values.ndim != 2:
            raise ValueError(f"`values` must have shape (individuals, observations); got {values.shape}.")
        times = as_float_array(times, name="times")
        if times.ndim == 1 and times.shape[0] == values.shape[1]:
            times = np.broadcast_to(times, values.shape)
        if times.shape != values.shape:
            raise ValueError(
                f"`times` has shape {times.shape} but `values` has shape {values.shape}; pass "
                "times as (observations,) shared by everyone, or one row per individual."
            )
        if mask is None:
            mask = np.ones(values.shape, bool)
        else:
            mask = np.asarray(mask)
            if mask.dtype != bool:
                raise TypeError(f"`mask` must be boolean (True = observed); got dtype {mask.dtype}.")
            if mask.shape != values.shape:
                raise ValueError(f"`mask` has shape {mask.shape} but `values` has shape {values.shape}.")
        n = values.shape[0]
        ids = normalise_ids(ids, n)
        check_observations(times, values, mask, ids=ids)
        cov = {k: jnp.asarray(c) for k, c in check_covariates(covariates, n, ids=ids).items()}
        if doses is not None and not isinstance(doses, Doses):
            raise TypeError(f"`doses` must be a nlme_ppl.Doses; got {type(doses).__name__}.")
        if censored is not None:
            censored = np.asarray(censored)
            if censored.dtype != bool or censored.shape != values.shape:
                raise ValueError(f"`censored` must be booleans of shape {values.shape}; got {censored.dtype} {censored.shape}.")
            censored = jnp.asarray(censored & mask) if (censored & mask).any() else None
        if obs_cmt is not None:
            obs_cmt = np.asarray(obs_cmt)
            if not np.issubdtype(obs_cmt.dtype, np.integer) or obs_cmt.shape != values.shape:
                raise ValueError(f"`obs_cmt` must be integers of shape {values.shape}; got {obs_cmt.dtype} {obs_cmt.shape}.")
            obs_cmt = jnp.asarray(np.where(mask, obs_cmt, 0).astype(np.int32))
        return cls(
            times=jnp.asarray(np.where(mask, times, 0.0)),
            values=jnp.asarray(np.where(mask, values, 0.0)),
            mask=jnp.asarray(mask),
            ids=ids,
            covariates=cov,
            doses=doses,
            censored=censored,
            obs_cmt=obs_cmt,
        )

    @classmethod
    def from_individuals(
        cls, times: Sequence, values: Sequence, *, ids=None, covariates=None, doses=None, censored=None, obs_cmt=None
    ) -> "Dataset":
        """Build a dataset from one array of times and one of values per individual (any lengths)."""
        if len(times) != len(values):
            raise ValueError(f"got times for {len(times)} individuals but values for {len(values)}.")
        lengths = []
        for i, (t, v) in enumerate(zip(times, values)):
            if np.shape(t) != np.shape(v) or np.ndim(t) != 1:
                raise ValueError(
                    f"{individual_label(ids, i)}: times {np.shape(t)} and values {np.shape(v)} must be "
                    "1-D arrays of the same length."
                )
            lengths.append(len(t))
        n, width = len(times), max(lengths, default=0)
        T, V, M, C = np.zeros((n, width)), np.zeros((n, width)), np.zeros((n, width), bool), np.zeros((n, width), bool)
        K = np.zeros((n, width), np.int32)
        for i, (t, v) in enumerate(zip(times, values)):
            T[i, : len(t)], V[i, : len(v)], M[i, : len(t)] = t, v, True
            if censored is not None:
                C[i, : len(t)] = np.asarray(censored[i], bool)
            if obs_cmt is not None:
                K[i, : len(t)] = np.asarray(obs_cmt[i], np.int32)
        return cls.from_arrays(T, V, mask=M, ids=ids, covariates=covariates, doses=doses, censored=C if censored is not None else None,
                               obs_cmt=K if obs_cmt is not None else None)

    # ------------------------------------------------------------------ views
    @property
    def num_individuals(self) -> int:
        return self.times.shape[0]

    @property
    def num_observations(self) -> np.ndarray:
        """Number of observations of each individual, shape `(N,)`."""
        return np.asarray(self.mask).sum(axis=1)

    def to_dataframe(self) -> pd.DataFrame:
        """Long table with columns ID, TIME, DV (one row per observation) and covariates.

        Data with dosing events or censoring are refused (the table has no place for them):
        write those with [`write_nonmem`][nlme_ppl.write_nonmem]."""
        if self.doses is not None or self.censored is not None or self.obs_cmt is not None:
            raise ValueError(
                "this dataset has dosing events, censored observations or several analytes (obs_cmt), which a "
                "long ID/TIME/DV table would drop; write it with nlp.write_nonmem(data, path) instead."
            )
        mask = np.asarray(self.mask)
        rows, cols = np.nonzero(mask)
        df = pd.DataFrame(
            {
                "ID": np.asarray(self.ids, dtype=object)[rows],
                "TIME": np.asarray(self.times)[rows, cols],
                "DV": np.asarray(self.values)[rows, cols],
            }
        )
        for name, c in self.covariates.items():
            df[name] = np.asarray(c)[rows]
        return df

    def to_csv(self, path: str | Path) -> None:
        self.to_dataframe().to_csv(path, index=False)

    def with_covariates(self, **covariates) -> "Dataset":
        """This dataset with covariates added or replaced, one value per individual each.

        For example `data.with_covariates(log_wt70=np.log(data.covariates["WT"] / 70))`.
        """
        checked = check_covariates(covariates, self.num_individuals, ids=self.ids)
        new = {**self.covariates, **{k: jnp.asarray(c) for k, c in checked.items()}}
        return eqx.tree_at(lambda d: d.covariates, self, new)

    def with_obs_cmt(self, obs_cmt) -> "Dataset":
        """This dataset with the observed compartment of each observation: one CMT number for
        all, or an `(N, T)` integer array (see `obs_cmt`)."""
        k = np.broadcast_to(np.asarray(obs_cmt), self.times.shape)
        if not np.issubdtype(k.dtype, np.integer):
            raise ValueError(f"`obs_cmt` must be integers (NONMEM CMT numbers); got dtype {k.dtype}.")
        k = jnp.asarray(np.where(np.asarray(self.mask), k, 0).astype(np.int32))
        return eqx.tree_at(lambda d: d.obs_cmt, self, k, is_leaf=lambda x: x is None)

    def with_doses(self, doses: "Doses | None") -> "Dataset":
        """This dataset with its dosing events replaced."""
        if doses is not None and (not isinstance(doses, Doses) or doses.num_individuals != self.num_individuals):
            raise ValueError(f"`doses` must be a nlme_ppl.Doses of {self.num_individuals} individuals.")
        return eqx.tree_at(lambda d: d.doses, self, doses, is_leaf=lambda x: x is None)

    def rows_of(self, data) -> np.ndarray | None:
        """The rows of these individuals that `data` holds (all of them, or some, e.g.
        `self.subset(...)`), matched by id and checked value for value; `None` where `data`
        is not such a selection of these data."""
        if data is self:
            return np.arange(self.num_individuals)
        index = {i: r for r, i in enumerate(self.ids)}
        rows = np.array([index.get(i, -1) for i in getattr(data, "ids", ())], dtype=int)
        same = (
            isinstance(data, Dataset)
            and rows.size > 0
            and np.all(rows >= 0)
            and np.asarray(data.values).shape[1:] == np.asarray(self.values).shape[1:]
            and np.array_equal(np.asarray(data.values), np.asarray(self.values)[rows], equal_nan=True)
            and np.array_equal(np.asarray(data.times), np.asarray(self.times)[rows])
        )
        return rows if same else None

    def subset(self, index) -> "Dataset":
        """The individuals at `index` (an int array, slice or boolean mask)."""
        idx = np.arange(self.num_individuals)[index]
        idx = np.atleast_1d(idx)
        arrays = (self.times, self.values, self.mask, self.covariates, self.doses, self.censored, self.obs_cmt)
        times, values, mask, covariates, doses, censored, obs_cmt = take_rows(arrays, jnp.asarray(idx))
        return Dataset(
            times=times, values=values, mask=mask, ids=tuple(self.ids[i] for i in idx), covariates=covariates,
            doses=doses, censored=censored, obs_cmt=obs_cmt,
            subjects=None if self.subjects is None else tuple(self.subjects[i] for i in idx),
        )

    def with_subjects(self, subjects: Sequence) -> "Dataset":
        """The same rows, each marked as one occasion of the individual `subjects[row]` (for
        inter-occasion variability, see [`populations.gaussian`][nlme_ppl.populations.gaussian]'s
        `occasions`). An individual's occasions need not be adjacent rows."""
        subjects = tuple(str(s) for s in subjects)
        if len(subjects) != self.num_individuals:
            raise ValueError(f"`subjects` must name the individual of each of the {self.num_individuals} rows; got {len(subjects)}.")
        return dataclasses.replace(self, subjects=subjects)

    def __repr__(self) -> str:
        n_obs = self.num_observations
        extra = ""
        if self.doses is not None:
            extra += f", {int(np.asarray(self.doses.mask).sum())} doses"
        if self.censored is not None:
            extra += f", {int(np.asarray(self.censored).sum())} censored"
        if self.obs_cmt is not None:
            extra += f", analytes (CMT) {sorted(set(np.asarray(self.obs_cmt)[np.asarray(self.mask)].tolist()))}"
        rows = f"{self.num_individuals} individuals" if self.subjects is None else (
            f"{self.num_individuals} occasions of {len(set(self.subjects))} individuals")
        return (
            f"Dataset({rows}, {int(n_obs.sum())} observations "
            f"({n_obs.min()}–{n_obs.max()} each){extra}, covariates={list(self.covariates)})"
        )


def subject_index(data) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each row's individual `(N,)` and the individuals in order of first appearance, for data
    whose rows are occasions (`data.subjects`); every row its own individual otherwise."""
    subjects = getattr(data, "subjects", None)
    if subjects is None:
        return np.arange(data.num_individuals, dtype=np.int32), tuple(getattr(data, "ids", map(str, range(data.num_individuals))))
    order = tuple(dict.fromkeys(subjects))
    where = {s: n for n, s in enumerate(order)}
    return np.array([where[s] for s in subjects], dtype=np.int32), order
