"""Long tables, one row per observation (ID, TIME, DV and covariate columns): `read_table`.

A table with dosing events (AMT, EVID, ...) is a NONMEM data set: read it with
[`read_nonmem`][nlme_ppl.read_nonmem], which also reads a plain ID/TIME/DV table. Write a
`Dataset` back with `Dataset.to_csv` (or `write_nonmem` when it has doses).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import Dataset

__all__ = ["read_table"]


def read_table(
    source: str | Path | pd.DataFrame,
    *,
    id_col: str = "ID",
    time_col: str = "TIME",
    value_col: str = "DV",
    covariates: Sequence[str] = (),
) -> Dataset:
    """Read a long table, one row per observation, into a [`Dataset`][nlme_ppl.Dataset].

    **Arguments:**

    - `source`: a CSV file, or a pandas DataFrame.
    - `id_col`, `time_col`, `value_col`: the columns of the individual id, the observation
      time and the observed value.
    - `covariates`: columns kept as per-individual covariates; each must be constant within
      an individual.

    Individuals keep the order of their first appearance. Refused with a `ValueError`
    naming the row: a missing column, a time or value that is not a number, a covariate that
    changes within an individual (and, as in `Dataset.from_arrays`, unsorted times).

    **Returns:** the `Dataset`.
    """
    df = source if isinstance(source, pd.DataFrame) else pd.read_csv(source)
    missing = [c for c in (id_col, time_col, value_col, *covariates) if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; the table has {list(df.columns)}.")
    for col in (time_col, value_col):
        bad = pd.to_numeric(df[col], errors="coerce").isna()
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
    return Dataset.from_individuals(ts, vs, ids=ids, covariates=cov)
