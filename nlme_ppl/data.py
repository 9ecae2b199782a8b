"""`Dataset`: padded per-individual observations with a mask, ids and covariates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Bool, Float

from ._validate import as_float_array, check_finite, check_sorted, individual_label

__all__ = ["Dataset"]


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
    """

    times: Float[Array, "individuals obs"]
    values: Float[Array, "individuals obs"]
    mask: Bool[Array, "individuals obs"]
    ids: tuple[str, ...] = eqx.field(static=True)
    covariates: dict[str, Float[Array, " individuals"]] = eqx.field(default_factory=dict)

    def __check_init__(self):
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
    ) -> "Dataset":
        """Build a dataset from rectangular arrays.

        **Arguments:**

        - `times`: `(T,)` times shared by all individuals, or `(N, T)`.
        - `values`: `(N, T)` observations (or `(T,)` for a single individual).
        - `mask`: optional `(N, T)` booleans; `False` marks padding. Without a mask every entry
          must be a finite observation.
        - `ids`: optional `N` ids (default `"1" … "N"`).
        - `covariates`: optional mapping of name to `N` values.

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
        ids = _normalise_ids(ids, n)
        check_finite(values, mask, name="values", ids=ids)
        check_finite(times, mask, name="times", ids=ids)
        check_sorted(times, mask, ids=ids)
        empty = np.flatnonzero(~mask.any(axis=1))
        if empty.size:
            raise ValueError(
                f"{individual_label(ids, int(empty[0]))} has no observations; remove it from the data."
            )
        cov = {}
        for name, c in (covariates or {}).items():
            c = as_float_array(c, name=f"covariates[{name!r}]")
            if c.shape != (n,):
                raise ValueError(f"covariate {name!r} must have {n} values, one per individual; got shape {c.shape}.")
            if not np.isfinite(c).all():
                i = int(np.flatnonzero(~np.isfinite(c))[0])
                raise ValueError(f"covariate {name!r} is not finite for {individual_label(ids, i)}; fill it in.")
            cov[name] = jnp.asarray(c)
        return cls(
            times=jnp.asarray(np.where(mask, times, 0.0)),
            values=jnp.asarray(np.where(mask, values, 0.0)),
            mask=jnp.asarray(mask),
            ids=ids,
            covariates=cov,
        )

    @classmethod
    def from_individuals(cls, times: Sequence, values: Sequence, *, ids=None, covariates=None) -> "Dataset":
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
        T, V, M = np.zeros((n, width)), np.zeros((n, width)), np.zeros((n, width), bool)
        for i, (t, v) in enumerate(zip(times, values)):
            T[i, : len(t)], V[i, : len(v)], M[i, : len(t)] = t, v, True
        return cls.from_arrays(T, V, mask=M, ids=ids, covariates=covariates)

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, *, id_col="ID", time_col="TIME", value_col="DV", covariates=()) -> "Dataset":
        """Build a dataset from a long table, one row per observation (columns ID, TIME, DV).

        Covariate columns named in `covariates` must be constant within each individual.
        Individuals keep the order of first appearance.
        """
        missing = [c for c in (id_col, time_col, value_col, *covariates) if c not in df.columns]
        if missing:
            raise ValueError(f"missing column(s) {missing}; the table has {list(df.columns)}.")
        for col in (time_col, value_col):
            num = pd.to_numeric(df[col], errors="coerce")
            bad = num.isna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise ValueError(
                    f"column {col!r} row {row} (file line {row + 2}, ID {df[id_col].iloc[row]}) is not a number: "
                    f"{df[col].iloc[row]!r}; fix or remove that row."
                )
        groups = df.groupby(id_col, sort=False)
        ids = [str(k) for k in groups.groups]
        cov = {c: [] for c in covariates}
        ts, vs = [], []
        for k, g in groups:
            ts.append(pd.to_numeric(g[time_col]).to_numpy(float))
            vs.append(pd.to_numeric(g[value_col]).to_numpy(float))
            for c in covariates:
                u = g[c].unique()
                if len(u) != 1:
                    raise ValueError(f"covariate {c!r} changes within ID {k} ({u.tolist()}); it must be constant per individual.")
                cov[c].append(float(u[0]))
        return cls.from_individuals(ts, vs, ids=ids, covariates=cov)

    @classmethod
    def from_csv(cls, path: str | Path, **kwargs) -> "Dataset":
        """Read a long CSV with columns ID, TIME, DV (see [`from_dataframe`][nlme_ppl.Dataset.from_dataframe])."""
        return cls.from_dataframe(pd.read_csv(path), **kwargs)

    # ------------------------------------------------------------------ views
    @property
    def num_individuals(self) -> int:
        return self.times.shape[0]

    @property
    def num_observations(self) -> np.ndarray:
        """Number of observations of each individual, shape `(N,)`."""
        return np.asarray(self.mask).sum(axis=1)

    def to_dataframe(self) -> pd.DataFrame:
        """Long table with columns ID, TIME, DV (one row per observation) and covariates."""
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
        new = dict(self.covariates)
        for name, c in covariates.items():
            c = as_float_array(c, name=f"covariates[{name!r}]")
            if c.shape != (self.num_individuals,):
                raise ValueError(
                    f"covariate {name!r} must have {self.num_individuals} values, one per individual; got shape {c.shape}."
                )
            if not np.isfinite(c).all():
                i = int(np.flatnonzero(~np.isfinite(c))[0])
                raise ValueError(f"covariate {name!r} is not finite for {individual_label(self.ids, i)}; fill it in.")
            new[name] = jnp.asarray(c)
        return eqx.tree_at(lambda d: d.covariates, self, new)

    def subset(self, index) -> "Dataset":
        """The individuals at `index` (an int array, slice or boolean mask)."""
        idx = np.arange(self.num_individuals)[index]
        idx = np.atleast_1d(idx)
        return Dataset(
            times=self.times[idx],
            values=self.values[idx],
            mask=self.mask[idx],
            ids=tuple(self.ids[i] for i in idx),
            covariates={k: v[idx] for k, v in self.covariates.items()},
        )

    def __repr__(self) -> str:
        n_obs = self.num_observations
        return (
            f"Dataset({self.num_individuals} individuals, {int(n_obs.sum())} observations "
            f"({n_obs.min()}–{n_obs.max()} each), covariates={list(self.covariates)})"
        )


def _normalise_ids(ids, n: int) -> tuple[str, ...]:
    if ids is None:
        return tuple(str(i + 1) for i in range(n))
    ids = tuple(str(i) for i in ids)
    if len(ids) != n:
        raise ValueError(f"expected {n} ids, one per individual; got {len(ids)}.")
    if len(set(ids)) != n:
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"individual ids must be unique; {dup!r} appears more than once.")
    return ids
