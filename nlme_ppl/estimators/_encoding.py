"""What a summary network reads: one row per observation and, for dosing models, per dose.

Models without doses or censoring give the plain `(times, values, mask)`. Dosing models give
event rows, as in the PK encoding of Arruda et al. (2024): observations and doses merged in
time order, each row `(time, channels)` with the channels

    0  the measurement (0 on dose rows)
    1  1 on dose rows, 0 on observation rows
    2  log10(amount) - 2 (amount in the data's unit, mg for the built-in models; 0 on observations)
    3  infusion duration / 24 h (0 for a bolus)
    4  1 for a dose into the central compartment (IV), 0 for the depot (oral), by the
       model's `dose_compartments` (the data's CMT numbers mean what the model says)

Models that simulate steady-state doses (design entry `dose_ii`) add a channel after these: the
steady-state interval / 24 h (0 for an ordinary dose). Models that simulate resets (`dose_end`)
add two: 1 on a dose that a later reset ends, and the time from the dose to that reset / 24 h
(0 where none).
Models with several analytes (`analytes`, e.g. parent and metabolite) add one indicator
channel per analyte, 1 on that analyte's observation rows. Models whose simulator reads
covariates (`covariates`, e.g. body weight) add one channel per covariate, its standardised
value `(x - centre) / scale` on every row. Censoring models (design entry `lloq`) add a last
channel: 1 on a censored observation (its measurement channel then holds the limit), 0
elsewhere. That is how the estimator learns the M3 posterior: it sees which values are limits
rather than measurements.

Padded rows (mask False) are zero in every channel and sort last. At equal times an
observation comes before a dose (a pre-dose sample).
"""

from __future__ import annotations

import numpy as np

from ..data import Dataset
from ..models._dose_records import central_doses

__all__ = ["DOSE_CHANNELS", "encode", "num_channels"]

#: Event channels after the measurement in a dosing model's rows.
DOSE_CHANNELS = 4


def num_channels(model) -> int:
    """Channels per row the summary network of `model` reads: 1 (the measurement only) for a
    model without doses, covariates, analytes or censoring; else the channels listed in
    [`encode`][nlme_ppl.estimators.encode]."""
    return (1 + (DOSE_CHANNELS + _record_channels(model) if model.uses_doses else 0) + len(model.analytes)
            + len(model.covariates) + (1 if model.uses_censoring else 0))


def _record_channels(model) -> int:
    """Dose-row channels for steady state (1, where the design has `dose_ii`) and resets (2, `dose_end`)."""
    return ("dose_ii" in model.design) + 2 * ("dose_end" in model.design)


def encode(model, data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows an estimator of `model` reads for every individual of `data` (the encoding
    both backends share; the sbi backend adds the gap to the previous row and the mask).

    Models without doses or censoring give the plain `(times, values, mask)`. Dosing models
    give event rows: observations and doses merged in time order (at equal times an
    observation comes first), each row with the channels `0` the measurement (0 on dose rows),
    `1` a dose flag, `2` log10(amount) − 2, `3` infusion duration / 24 h, `4` 1 for a dose into
    the central compartment; then one indicator per analyte (`model.analytes`), one
    standardised value per simulator covariate (`model.covariates`), and for censoring models
    a last flag, 1 on a censored observation (whose measurement channel holds the limit).
    Padded rows are zero in every channel and sort last.

    **Arguments:**

    - `model`: the [`IndividualModel`][nlme_ppl.IndividualModel] (checked against `data`).
    - `data`: a [`Dataset`][nlme_ppl.Dataset] of `N` individuals.

    **Returns:** `times (N, R)` float32, `values` `(N, R)` (one channel) or `(N, R, C)` float32
    with `C = num_channels(model)`, and `mask (N, R)` bool.
    """
    model.check_data(data)
    times = np.asarray(data.times, np.float32)
    values = np.asarray(data.values, np.float32)
    mask = np.asarray(data.mask, bool)
    if num_channels(model) == 1:
        return times, values, mask
    n, t_obs = times.shape
    d = data.doses if model.uses_doses else None
    num_doses = 0 if d is None else d.mask.shape[1]
    ch = np.zeros((n, t_obs + num_doses, num_channels(model)), np.float32)
    ch[:, :t_obs, 0] = np.where(mask, values, 0.0)
    c = 1 + (DOSE_CHANNELS + _record_channels(model) if d is not None else 0)
    for a in model.analytes:
        ch[:, :t_obs, c] = mask & (np.asarray(data.obs_cmt) == a)
        c += 1
    rows = np.concatenate([mask, np.asarray(d.mask, bool)], axis=1) if d is not None else mask
    for name, centre, scale in model.covariates:
        x = (np.asarray(data.covariates[name], np.float64) - centre) / scale
        ch[:, :, c] = np.where(rows, x[:, None], 0.0)
        c += 1
    if model.uses_censoring and data.censored is not None:
        ch[:, :t_obs, -1] = np.asarray(data.censored, bool) & mask
    if d is None:
        return times, ch, mask
    dm = np.asarray(d.mask, bool)
    amounts, rates = np.asarray(d.amounts, np.float64), np.asarray(d.rates, np.float64)
    ch[:, t_obs:, 1] = dm
    ch[:, t_obs:, 2] = np.where(dm, np.log10(np.where(dm, amounts, 1.0)) - 2.0, 0.0)
    ch[:, t_obs:, 3] = np.where(dm & (rates > 0), amounts / np.where(rates > 0, rates, 1.0) / 24.0, 0.0)
    ch[:, t_obs:, 4] = dm & central_doses(model, d.cmt)
    c = 1 + DOSE_CHANNELS
    if "dose_ii" in model.design:
        ch[:, t_obs:, c] = np.where(d.steady_state, np.asarray(d.ii if d.ii is not None else 0.0, np.float64), 0.0) / 24.0
        c += 1
    if "dose_end" in model.design:
        ended = d.reset
        ch[:, t_obs:, c] = ended
        span = np.asarray(d.end, np.float64) - np.asarray(d.times, np.float64) if d.end is not None else 0.0
        ch[:, t_obs:, c + 1] = np.where(ended, span, 0.0) / 24.0
    all_t = np.concatenate([times, np.asarray(d.times, np.float32)], axis=1)
    is_dose = np.concatenate([np.zeros_like(mask), np.ones_like(dm)], axis=1)
    order = np.lexsort((is_dose, np.where(rows, all_t, np.inf), ~rows), axis=1)
    take = lambda a: np.take_along_axis(a, order if a.ndim == 2 else order[..., None], axis=1)  # noqa: E731
    all_t, rows, ch = take(all_t), take(rows), take(ch)
    return np.where(rows, all_t, 0.0).astype(np.float32), ch, rows
