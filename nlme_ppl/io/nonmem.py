"""NONMEM-format data sets: `read_nonmem` (CSV in) and `write_nonmem` (CSV out).

One row per event. Observation rows have EVID 0 and MDV 0; dose rows have EVID 1 (or 4, a
reset and dose) and an AMT; EVID 3 resets; EVID 2 (other events) carry nothing here. Standard
columns (case-insensitive): ID, TIME, DV, AMT, EVID, MDV, CMT, RATE, II, ADDL, SS, and for
censoring CENS or BLQ (1 = below the limit of quantification, DV holds the limit) with an
optional LIMIT column. Every other column is a covariate candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import CENTRAL, DEPOT, Dataset, Doses

__all__ = ["NonmemReport", "read_nonmem", "write_nonmem"]

STANDARD = ("ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS", "CENS", "BLQ", "LIMIT")


@dataclass(frozen=True)
class NonmemReport:
    """What [`read_nonmem`][nlme_ppl.io.read_nonmem] read and skipped (`with_report=True`), by row
    counts: `rows`, `individuals`, `observations` (EVID 0, MDV 0; `censored` of them below the
    limit), `dose_records` (EVID 1 and 4 rows), `doses` (with the `additional_doses` that ADDL
    implies), `steady_state_doses` (SS 1 or 2), `resets` (EVID 3), `reset_doses` (EVID 4), and the
    rows skipped: `other_events` (EVID 2) and `missing_observations` (EVID 0 with MDV 1)."""

    rows: int
    individuals: int
    observations: int
    censored: int
    dose_records: int
    doses: int
    additional_doses: int
    steady_state_doses: int
    resets: int
    reset_doses: int
    other_events: int
    missing_observations: int

    def __str__(self) -> str:
        return (
            f"read {self.rows} rows: {self.individuals} individuals, {self.observations} observations "
            f"({self.censored} censored), {self.dose_records} dose records giving {self.doses} doses "
            f"({self.additional_doses} from ADDL, {self.steady_state_doses} at steady state), {self.resets} resets "
            f"(EVID 3), {self.reset_doses} reset-and-dose records (EVID 4); skipped {self.other_events} other-event rows "
            f"(EVID 2) and {self.missing_observations} missing observations (MDV 1)"
        )


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
    occasion: str | None = None,
    with_report: bool = False,
) -> Dataset | tuple[Dataset, NonmemReport]:
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

    - `occasion`: the column numbering each individual's occasions (e.g. `"OCC"`), for
      inter-occasion variability. Each (ID, OCC) becomes one row of the `Dataset` with id
      `"ID/OCC"`, `Dataset.subjects` gives its ID, and it holds that occasion's observations
      and doses only, on a clock that starts at the occasion's first record: an occasion is a conditionally independent unit of the individual model,
      so the drug of an earlier occasion must be washed out (or the occasion must start at
      steady state, SS=1). The column is required on observation, dose and reset rows; other
      rows take their ID's previous value. Default `None`: occasions are not read.
    - `with_report`: also return a [`NonmemReport`][nlme_ppl.io.NonmemReport] of what was
      read and skipped (`print` it for one line).

    Rows: EVID 0 with MDV 0 is an observation; EVID 0 with MDV 1 is a missing observation and
    is skipped; EVID 1 is a dose (AMT > 0; CMT default 1, whose meaning is the model's: the depot
    for `pk_oral_*`, the central compartment for `pk_iv_*`; RATE > 0 a zero-order infusion; II
    with ADDL adds ADDL further doses every II; SS=1 with II > 0 makes it a steady-state dose,
    the last of an infinite series every II, and resets what came before; SS=2 likewise without
    the reset); EVID 3 is a reset (earlier doses stop acting); EVID 4 a reset and then a dose;
    EVID 2 (other event) carries nothing here and is skipped (counted in the report). When
    observation rows name more than one CMT (e.g. 2 = parent, 3 = metabolite), each
    observation's compartment is kept in `Dataset.obs_cmt`. An observation at the time of a
    dose or reset is taken before it.

    Refused with a `ValueError` naming the row and column: a missing column, a non-numeric
    DV on an observation row (or TIME, AMT on any row that needs it), a negative or zero AMT on
    a dose row, decreasing TIME within an ID, an ID with no observations, a covariate that
    changes within an ID, an EVID other than 0–4, SS other than 0–2 or on a row that is not a
    dose, SS without a positive II (a constant infusion at steady state), a steady-state
    infusion not shorter than II, and a reset while ADDL doses of an earlier record are pending.
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
    subject_of = ident
    if "AMT" in df.columns:
        amt_all = pd.to_numeric(df["AMT"].replace(".", np.nan), errors="coerce").to_numpy(float)
    else:
        amt_all = np.zeros(n_rows)
    if "EVID" in df.columns:
        evid = _numeric(df, "EVID", all_rows, what="an event row (EVID is required on every row)")
    else:
        evid = np.where(np.nan_to_num(amt_all) > 0, 1.0, 0.0)
    unknown = ~np.isin(evid, (0, 1, 2, 3, 4))
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise ValueError(
            f"column 'EVID' at {_where(i, ident.iloc[i])} is {evid[i]:g}; expected 0 (observation), 1 (dose), 2 (other), "
            "3 (reset) or 4 (reset and dose)."
        )
    mdv = _numeric(df, "MDV", all_rows, what="a row (MDV)") if "MDV" in df.columns else (evid != 0).astype(float)
    is_obs = (evid == 0) & (mdv == 0)
    is_dose = (evid == 1) | (evid == 4)
    is_reset = evid == 3
    time = _numeric(df, "TIME", is_obs | is_dose | is_reset, what="an observation, dose or reset row")
    dv = _numeric(df, "DV", is_obs, what="an observation row")
    if is_dose.any() and "AMT" not in df.columns:
        raise ValueError("the data has dose rows (EVID=1 or 4) but no AMT column; add AMT.")
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
    ss = _steady_state(df, ident, is_dose, ii, amt, rate)
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
    if occasion is not None:
        ident = _occasions(df, occasion, ident, is_obs | is_dose | is_reset)
    extra = [c for c in df.columns if c not in STANDARD and c != occasion]
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

    obs_t, obs_y, obs_c, obs_k, dose_lists, cov = [], [], [], [], [], {c: [] for c in covariates}
    timed = is_obs | is_dose | is_reset
    if occasion is not None:  # each occasion's clock starts at its first record
        origin = np.zeros(n_rows)
        for rows in groups.values():
            origin[rows] = np.min(time[rows][timed[rows]], initial=np.inf)
        time = time - np.where(np.isfinite(origin), origin, 0.0)
    for k, rows in groups.items():
        t = time[rows][timed[rows]]
        if np.any(np.diff(t) < 0):
            j = rows[timed[rows]][int(np.flatnonzero(np.diff(t) < 0)[0]) + 1]
            raise ValueError(f"times are not sorted for individual {k!r}: TIME decreases within ID {k} at {_where(j, k)} ({time[j]:g} after a larger time); sort each ID's rows by TIME.")
        o = rows[is_obs[rows]]
        if o.size == 0:
            raise ValueError(f"ID {k} has no observations (no row with EVID=0 and MDV=0); remove it from the file.")
        obs_t.append(time[o]), obs_y.append(dv[o]), obs_c.append(censored[o])
        if obs_cmt is not None:
            obs_k.append(obs_cmt[o].astype(np.int32))
        dose_lists.append(_doses_of(rows, ident, time, amt, rate, cmt, ii, addl, ss, is_dose, is_reset | (evid == 4) | (ss == 1)))
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
        cols = [[list(c) for c in zip(*dl)] if dl else [[] for _ in range(6)] for dl in dose_lists]
        d_t, d_a, d_r, d_c, d_ii, d_end = ([c[k] for c in cols] for k in range(6))
        doses = Doses.from_individuals(d_t, d_a, rates=d_r, cmt=d_c, ii=d_ii, end=d_end, ids=order)
    data = Dataset.from_individuals(
        obs_t, obs_y, ids=order, covariates=cov, doses=doses, censored=obs_c if censored.any() else None,
        obs_cmt=obs_k if obs_cmt is not None else None,
    )
    if occasion is not None:
        first = {k: int(rows[0]) for k, rows in groups.items()}
        data = data.with_subjects([subject_of.iloc[first[k]] for k in order])
    if not with_report:
        return data
    report = NonmemReport(
        rows=n_rows, individuals=len(order), observations=int(is_obs.sum()), censored=int(censored.sum()),
        dose_records=int(is_dose.sum()), doses=sum(len(dl) for dl in dose_lists), additional_doses=int(addl[is_dose].sum()),
        steady_state_doses=int((is_dose & (ss > 0)).sum()), resets=int(is_reset.sum()), reset_doses=int((evid == 4).sum()),
        other_events=int((evid == 2).sum()), missing_observations=int(((evid == 0) & (mdv != 0)).sum()),
    )
    return data, report


def _occasions(df: pd.DataFrame, column: str, ident: pd.Series, timed: np.ndarray) -> pd.Series:
    """The `"ID/OCC"` label of every row: OCC is required on `timed` rows (observations, doses,
    resets); other rows take their ID's previous (or next) value."""
    if column not in df.columns:
        raise ValueError(f"occasion column {column!r} is not in the file; its columns are {list(df.columns)}.")
    occ = pd.to_numeric(df[column].replace(".", np.nan), errors="coerce")
    bad = timed & ~np.isfinite(occ.to_numpy(float))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"column {column!r} at {_where(i, ident.iloc[i])} is {df[column].iloc[i]!r}; every observation and dose row needs a numeric occasion.")
    occ = occ.where(timed).groupby(ident.to_numpy()).transform(lambda c: c.ffill().bfill())
    label = occ.map(lambda v: f"{v:g}")
    return ident + "/" + label


def _steady_state(df, ident, is_dose, ii, amt, rate) -> np.ndarray:
    """The SS column (0 where absent), checked: 0, 1 or 2, only on dose rows, with II > 0 and an
    infusion shorter than II."""
    ss = _optional(df, "SS")
    checks = (
        (~np.isin(ss, (0, 1, 2)), lambda i: f"column 'SS' at {_where(i, ident.iloc[i])} is {ss[i]:g}; expected 0, 1 (steady state, "
         "resetting what came before) or 2 (steady state, added to what came before)."),
        ((ss != 0) & ~is_dose, lambda i: f"column 'SS' at {_where(i, ident.iloc[i])} is {ss[i]:g} on a row that is not a dose "
         "(EVID 1 or 4); set SS=0 there."),
        ((ss != 0) & ~(ii > 0), lambda i: f"{_where(i, ident.iloc[i])} has SS={ss[i]:g} but II={ii[i]:g}; a steady-state dose "
         "needs its interval II > 0 (a constant infusion at steady state, II=0 with RATE>0, is not supported: give it "
         "as an infusion started long enough before)."),
        ((ss != 0) & (rate > 0) & ~(amt / np.where(rate > 0, rate, 1.0) < ii), lambda i: f"{_where(i, ident.iloc[i])} is a "
         f"steady-state infusion lasting AMT/RATE={amt[i] / rate[i]:g}, not shorter than II={ii[i]:g}; overlapping "
         "steady-state infusions are not supported (split the dose, or write the doses out with ADDL)."),
    )
    for bad, message in checks:
        if bad.any():
            raise ValueError(message(int(np.flatnonzero(bad)[0])))
    return ss


def _doses_of(rows, ident, time, amt, rate, cmt, ii, addl, ss, is_dose, resets) -> list[tuple]:
    """One individual's doses `(time, amount, rate, cmt, ii, end)` from its rows in file order.
    A reset (EVID 3, EVID 4 or SS=1) ends every earlier dose at its time; an ADDL dose of an
    earlier record still pending then (at or after the reset) is refused, naming the row."""
    doses, pending_from = [], []
    for r in rows:
        if resets[r]:
            late = [row for (t, *_), row in zip(doses, pending_from) if row is not None and t >= time[r]]
            if late:
                raise ValueError(
                    f"the reset at {_where(r, ident.iloc[r])} (EVID 3/4 or SS=1) falls while ADDL doses of "
                    f"{_where(late[0], ident.iloc[late[0]])} are pending; whether they continue is ambiguous, so write "
                    "that record's doses out up to the reset (smaller ADDL)."
                )
            doses = [(*d[:5], min(d[5], time[r])) for d in doses]
        if is_dose[r]:
            for n in range(int(addl[r]) + 1):
                steady = ii[r] if (n == 0 and ss[r] != 0) else 0.0
                doses.append((time[r] + n * ii[r], amt[r], rate[r], cmt[r], steady, np.inf))
                pending_from.append(r if n > 0 else None)
    return doses


def write_nonmem(data: Dataset, path: str | Path) -> pd.DataFrame:
    """Write `data` as a NONMEM-format CSV (ID, TIME, DV, AMT, EVID, MDV, CMT, RATE, CENS, the
    covariates, and SS and II where some dose is at steady state): dose rows before observations
    at equal times. Resets are written as SS=1 on a steady-state dose at the reset's time, else
    as EVID=4 on a dose at that time, else as an EVID=3 row. Returns the table written."""
    rows = []
    mask, times, values = np.asarray(data.mask), np.asarray(data.times), np.asarray(data.values)
    cens = np.zeros_like(mask) if data.censored is None else np.asarray(data.censored)
    obs_cmt = np.full(mask.shape, CENTRAL) if data.obs_cmt is None else np.asarray(data.obs_cmt)
    cov = {k: np.asarray(v) for k, v in data.covariates.items()}
    steady = data.doses is not None and data.doses.ii is not None
    for i, ident in enumerate(data.ids):
        base = {c: v[i] for c, v in cov.items()}
        ss_cols = {"SS": 0, "II": 0.0} if steady else {}
        if data.doses is not None:
            rows.extend({"ID": ident, **r, "CENS": 0, **base} for r in _dose_rows(data.doses, i, steady))
        for j in np.flatnonzero(mask[i]):
            rows.append({"ID": ident, "TIME": float(times[i, j]), "DV": float(values[i, j]), "AMT": 0.0, "EVID": 0,
                         "MDV": 0, "CMT": int(obs_cmt[i, j]), "RATE": 0.0, **ss_cols, "CENS": int(cens[i, j]), **base})
    df = pd.DataFrame(rows)
    df = df.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable", key=lambda s: s if s.name != "ID" else s.map({k: n for n, k in enumerate(data.ids)}))
    df.to_csv(path, index=False)
    return df


def _dose_rows(d, i: int, steady: bool) -> list[dict]:
    """Individual `i`'s dose rows (and EVID=3 rows for resets no dose carries), in time order."""
    js = np.flatnonzero(np.asarray(d.mask[i]))
    t, ii = np.asarray(d.times[i]), np.zeros(len(d.mask[i])) if d.ii is None else np.asarray(d.ii[i])
    end = np.full(len(t), np.inf) if d.end is None else np.asarray(d.end[i])
    evid = {j: 1 for j in js}
    # SS=1 where no earlier dose acts on past it (the same as SS=2 then), else SS=2
    ss = {j: 0 if ii[j] == 0 else 1 if all(end[k] <= t[j] for k in js if t[k] < t[j]) else 2 for j in js}
    resets = []
    for t_r in sorted(set(end[js][np.isfinite(end[js])].tolist())):
        after = [j for j in js if t[j] == t_r and end[j] > t_r]  # doses given at the reset, after it
        carrier = next((j for j in after if ii[j] > 0), after[0] if after else None)
        if carrier is None:
            resets.append(t_r)
        elif ii[carrier] > 0:
            ss[carrier] = 1
        else:
            evid[carrier] = 4
    order = sorted(js, key=lambda j: (t[j], evid[j] == 1 and ss[j] != 1))  # a dose that resets comes first at its time
    out = [{"TIME": float(t_r), "DV": 0.0, "AMT": 0.0, "EVID": 3, "MDV": 1, "CMT": 1, "RATE": 0.0, **({"SS": 0, "II": 0.0} if steady else {})}
           for t_r in resets]
    for j in order:
        extra = {"SS": ss[j], "II": float(ii[j])} if steady else {}
        out.append({"TIME": float(t[j]), "DV": 0.0, "AMT": float(d.amounts[i, j]), "EVID": evid[j], "MDV": 1, "CMT": int(d.cmt[i, j]),
                    "RATE": float(d.rates[i, j]), **extra})
    return out
