"""NONMEM-format data sets: `read_nonmem` (CSV in) and `write_nonmem` (CSV out).

One row per event. Observation rows have EVID 0 and MDV 0; dose rows have EVID 1 (or 4)
and an AMT. Standard columns (case-insensitive): ID, TIME, DV, AMT, EVID, MDV, CMT, RATE,
II, ADDL, and for censoring CENS or BLQ (1 = below the limit of quantification, DV holds the
limit) with an optional LIMIT column. Every other column is a covariate candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import CENTRAL, DEPOT, Dataset, Doses

__all__ = ["read_nonmem", "write_nonmem"]

STANDARD = ("ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS", "CENS", "BLQ", "LIMIT")


def _where(row: int, ident) -> str:
    return f"row {row} (file line {row + 2}, ID {ident})"


def _optional(df: pd.DataFrame, col: str) -> np.ndarray:
    """An optional numeric column as floats, empty or missing entries (and a missing column) as 0."""
    if col not in df.columns:
        return np.zeros(len(df))
    return np.nan_to_num(pd.to_numeric(df[col], errors="coerce").to_numpy(float))


def _numeric(df: pd.DataFrame, col: str, rows: np.ndarray, *, what: str) -> np.ndarray:
    """Column `col` as floats; a non-number on any of `rows` is refused, naming the row."""
    raw = df[col]
    num = pd.to_numeric(raw.replace(".", np.nan), errors="coerce").to_numpy(float)
    bad = rows & np.isnan(num) & raw.notna().to_numpy() & (raw.astype(str).str.strip() != ".").to_numpy()
    missing = rows & np.isnan(num)
    if bad.any() or missing.any():
        i = int(np.flatnonzero(bad if bad.any() else missing)[0])
        raise ValueError(
            f"column {col!r} at {_where(i, df['ID'].iloc[i])} is {raw.iloc[i]!r}, not a number, on {what}; "
            "fix the value, or mark the row MDV=1 if it is not an observation."
        )
    return num


def read_nonmem(
    path: str | Path | pd.DataFrame,
    *,
    covariates: Sequence[str] | None = None,
    blq: str = "keep",
) -> Dataset:
    """Read a NONMEM-format CSV into a [`Dataset`][nlme_ppl.Dataset] with its dosing events.

    A plain long table (ID, TIME, DV and covariate columns, no dose rows) is read as well: with
    no EVID, MDV or AMT column every row is an observation.

    **Arguments:**

    - `path`: the CSV file (or a pandas DataFrame with the same columns).
    - `covariates`: columns to keep as per-individual covariates (each must be constant
      within an ID). Default: every non-standard numeric column that is constant within
      each ID; other non-standard columns are reported in a warning and not kept.
    - `blq`: what to do with censored observations (CENS=1 or BLQ=1): `"keep"` (default: kept,
      flagged in `Dataset.censored`, with DV as the limit, or LIMIT where that column is
      given; a model that does not simulate censoring then refuses the data when fitting,
      and a censoring model such as `pk_oral_1cmt(censoring=True)` reads them by M3), or
      `"refuse"` (an error naming the first censored row).

    Rows: EVID 0 with MDV 0 is an observation; EVID 0 with MDV 1 is a missing observation and
    is skipped; EVID 1 is a dose (AMT > 0; CMT default 1 = depot; RATE > 0 a zero-order
    infusion; II with ADDL adds ADDL further doses every II); EVID 2 (other event) carries
    nothing here and is skipped. EVID 3 and 4 (resets) and SS (steady state) are refused.
    When observation rows name more than one CMT (e.g. 2 = parent, 3 = metabolite), each
    observation's compartment is kept in `Dataset.obs_cmt`.

    Refused with a `ValueError` naming the row and column: a missing column, a non-numeric
    DV on an observation row (or TIME, AMT on any row that needs it), a negative or zero AMT on
    a dose row, decreasing TIME within an ID, an ID with no observations, a covariate that
    changes within an ID.
    """
    import warnings

    if blq not in ("refuse", "keep"):
        raise ValueError(f"`blq` must be 'refuse' or 'keep'; got {blq!r}.")
    df = path.copy() if isinstance(path, pd.DataFrame) else pd.read_csv(path, skipinitialspace=True)
    df.columns = [str(c).strip() for c in df.columns]
    upper = {c.upper(): c for c in df.columns}
    df = df.rename(columns={orig: up for up, orig in upper.items() if up in STANDARD})
    missing = [c for c in ("ID", "TIME", "DV") if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; a NONMEM data set needs ID, TIME and DV. The file has {list(df.columns)}.")
    n_rows = len(df)
    if n_rows == 0:
        raise ValueError("the data set has no rows.")
    all_rows = np.ones(n_rows, bool)
    if df["ID"].isna().any():
        i = int(np.flatnonzero(df["ID"].isna().to_numpy())[0])
        raise ValueError(f"column 'ID' is empty at row {i} (file line {i + 2}); every row needs an ID.")
    ident = df["ID"].astype(str).str.strip()
    if "AMT" in df.columns:
        amt_all = pd.to_numeric(df["AMT"].replace(".", np.nan), errors="coerce").to_numpy(float)
    else:
        amt_all = np.zeros(n_rows)
    if "EVID" in df.columns:
        evid = _numeric(df, "EVID", all_rows, what="an event row (EVID is required on every row)")
    else:
        evid = np.where(np.nan_to_num(amt_all) > 0, 1.0, 0.0)
    for code in (3, 4):
        if (evid == code).any():
            i = int(np.flatnonzero(evid == code)[0])
            raise ValueError(f"EVID={code} (reset) at {_where(i, ident.iloc[i])} is not supported; split the record into separate IDs.")
    steady = _optional(df, "SS") != 0
    if steady.any():
        i = int(np.flatnonzero(steady)[0])
        raise ValueError(f"SS (steady state) at {_where(i, ident.iloc[i])} is not supported; write out the doses explicitly (II/ADDL).")
    unknown = ~np.isin(evid, (0, 1, 2))
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise ValueError(f"column 'EVID' at {_where(i, ident.iloc[i])} is {evid[i]:g}; expected 0 (observation), 1 (dose) or 2 (other).")
    mdv = _numeric(df, "MDV", all_rows, what="a row (MDV)") if "MDV" in df.columns else (evid != 0).astype(float)
    is_obs = (evid == 0) & (mdv == 0)
    is_dose = evid == 1
    time = _numeric(df, "TIME", is_obs | is_dose, what="an observation or dose row")
    dv = _numeric(df, "DV", is_obs, what="an observation row")
    if is_dose.any() and "AMT" not in df.columns:
        raise ValueError("the data has dose rows (EVID=1) but no AMT column; add AMT.")
    amt = _numeric(df, "AMT", is_dose, what="a dose row") if is_dose.any() else amt_all
    bad = is_dose & ~(amt > 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"column 'AMT' at {_where(i, ident.iloc[i])} is {amt[i]:g} on a dose row; dose amounts must be positive.")
    cmt = _numeric(df, "CMT", is_dose, what="a dose row") if "CMT" in df.columns and is_dose.any() else np.full(n_rows, DEPOT, float)
    obs_cmt = None  # the observed compartment per observation row, where there are several
    if "CMT" in df.columns:
        on_obs = pd.to_numeric(df["CMT"].replace(".", np.nan), errors="coerce").to_numpy(float)[is_obs]
        if np.unique(on_obs[np.isfinite(on_obs)]).size > 1:
            obs_cmt = _numeric(df, "CMT", is_obs, what="an observation row (the file observes several compartments)")
    rate = _optional(df, "RATE")
    if (is_dose & (rate < 0)).any():
        i = int(np.flatnonzero(is_dose & (rate < 0))[0])
        raise ValueError(f"column 'RATE' at {_where(i, ident.iloc[i])} is {rate[i]:g}; modelled rates/durations (RATE=-1/-2) are not supported, give the rate.")
    ii, addl = _optional(df, "II"), _optional(df, "ADDL")
    if (is_dose & (addl > 0) & ~(ii > 0)).any():
        i = int(np.flatnonzero(is_dose & (addl > 0) & ~(ii > 0))[0])
        raise ValueError(f"{_where(i, ident.iloc[i])} has ADDL={addl[i]:g} but II={ii[i]:g}; additional doses need a positive interval II.")
    cens_col = "CENS" if "CENS" in df.columns else ("BLQ" if "BLQ" in df.columns else None)
    censored = np.zeros(n_rows, bool)
    if cens_col is not None:
        censored = is_obs & (_optional(df, cens_col) != 0)
        if censored.any() and blq == "refuse":
            i = int(np.flatnonzero(censored)[0])
            raise ValueError(
                f"column {cens_col!r} marks {int(censored.sum())} observation(s) as below the limit of quantification, the "
                f"first at {_where(i, ident.iloc[i])}, and blq='refuse' was asked for. Remove those rows explicitly, "
                "or read with blq='keep' and fit a model that simulates censoring (e.g. pk_oral_1cmt_censored)."
            )
        if censored.any() and "LIMIT" in df.columns:
            dv = np.where(censored, _numeric(df, "LIMIT", censored, what="a censored row"), dv)
    extra = [c for c in df.columns if c not in STANDARD]
    order = list(dict.fromkeys(ident))  # IDs in order of first appearance
    groups = {k: np.flatnonzero((ident == k).to_numpy()) for k in order}
    if covariates is None:
        keep, skipped = [], []
        for c in extra:
            num = pd.to_numeric(df[c], errors="coerce")
            const = all(num.iloc[r].nunique(dropna=False) == 1 for r in groups.values())
            (keep if num.notna().all() and const else skipped).append(c)
        if skipped:
            warnings.warn(
                f"columns {skipped} are not kept as covariates (not numeric, or not constant within an ID); "
                "pass covariates=[...] to choose explicitly.",
                stacklevel=2,
            )
        covariates = keep
    for c in covariates:
        if c not in df.columns:
            raise ValueError(f"covariate column {c!r} is not in the file; its columns are {list(df.columns)}.")

    obs_t, obs_y, obs_c, obs_k, d_t, d_a, d_r, d_c, cov = [], [], [], [], [], [], [], [], {c: [] for c in covariates}
    for k, rows in groups.items():
        t = time[rows][(is_obs | is_dose)[rows]]
        if np.any(np.diff(t) < 0):
            j = rows[(is_obs | is_dose)[rows]][int(np.flatnonzero(np.diff(t) < 0)[0]) + 1]
            raise ValueError(f"times are not sorted for individual {k!r}: TIME decreases within ID {k} at {_where(j, k)} ({time[j]:g} after a larger time); sort each ID's rows by TIME.")
        o = rows[is_obs[rows]]
        if o.size == 0:
            raise ValueError(f"ID {k} has no observations (no row with EVID=0 and MDV=0); remove it from the file.")
        obs_t.append(time[o]), obs_y.append(dv[o]), obs_c.append(censored[o])
        if obs_cmt is not None:
            obs_k.append(obs_cmt[o].astype(np.int32))
        dt, da, dr, dc = [], [], [], []
        for r in rows[is_dose[rows]]:
            for extra_dose in range(int(addl[r]) + 1):
                dt.append(time[r] + extra_dose * ii[r]), da.append(amt[r]), dr.append(rate[r]), dc.append(cmt[r])
        d_t.append(dt), d_a.append(da), d_r.append(dr), d_c.append(dc)
        for c in covariates:
            vals = pd.to_numeric(df[c].iloc[rows], errors="coerce")
            if vals.isna().any():
                j = rows[int(np.flatnonzero(vals.isna().to_numpy())[0])]
                raise ValueError(f"covariate {c!r} at {_where(j, k)} is {df[c].iloc[j]!r}, not a number.")
            if vals.nunique() != 1:
                raise ValueError(f"covariate {c!r} changes within ID {k} ({sorted(vals.unique().tolist())}); it must be constant per individual.")
            cov[c].append(float(vals.iloc[0]))
    doses = None
    if is_dose.any():
        doses = Doses.from_individuals(d_t, d_a, rates=d_r, cmt=d_c, ids=order)
    return Dataset.from_individuals(
        obs_t, obs_y, ids=order, covariates=cov, doses=doses, censored=obs_c if censored.any() else None,
        obs_cmt=obs_k if obs_cmt is not None else None,
    )


def write_nonmem(data: Dataset, path: str | Path) -> pd.DataFrame:
    """Write `data` as a NONMEM-format CSV (ID, TIME, DV, AMT, EVID, MDV, CMT, RATE, CENS and
    the covariates): dose rows before observations at equal times. Returns the table written."""
    rows = []
    mask, times, values = np.asarray(data.mask), np.asarray(data.times), np.asarray(data.values)
    cens = np.zeros_like(mask) if data.censored is None else np.asarray(data.censored)
    obs_cmt = np.full(mask.shape, CENTRAL) if data.obs_cmt is None else np.asarray(data.obs_cmt)
    cov = {k: np.asarray(v) for k, v in data.covariates.items()}
    for i, ident in enumerate(data.ids):
        base = {c: v[i] for c, v in cov.items()}
        if data.doses is not None:
            d = data.doses
            for j in np.flatnonzero(np.asarray(d.mask[i])):
                rows.append({"ID": ident, "TIME": float(d.times[i, j]), "DV": 0.0, "AMT": float(d.amounts[i, j]), "EVID": 1,
                             "MDV": 1, "CMT": int(d.cmt[i, j]), "RATE": float(d.rates[i, j]), "CENS": 0, **base})
        for j in np.flatnonzero(mask[i]):
            rows.append({"ID": ident, "TIME": float(times[i, j]), "DV": float(values[i, j]), "AMT": 0.0, "EVID": 0,
                         "MDV": 0, "CMT": int(obs_cmt[i, j]), "RATE": 0.0, "CENS": int(cens[i, j]), **base})
    df = pd.DataFrame(rows)
    df = df.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable", key=lambda s: s if s.name != "ID" else s.map({k: n for n, k in enumerate(data.ids)}))
    df.to_csv(path, index=False)
    return df
