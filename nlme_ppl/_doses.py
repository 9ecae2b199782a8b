"""`Doses`: the dosing events of `N` individuals, padded to a common number `D`.

The container only (re-exported by `nlme_ppl.data`); NONMEM files are read in `nlme_ppl.io`.
`cmt` holds the data's compartment numbers as NONMEM's CMT gives them: what they mean is the
model's (`IndividualModel.dose_compartments`; for `pk_oral_*` 1 = depot, 2 = central, for
`pk_iv_*` 1 = central, as in NONMEM's ADVAN2/4 and ADVAN1/3)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ._buffers import take_rows
from ._validate import as_float_array, check_finite, individual_label

__all__ = ["CENTRAL", "DEPOT", "Doses"]

#: Dose compartments of the oral PK models (NONMEM ADVAN2/ADVAN4): 1 = depot (oral, absorbed
#: first-order), 2 = central (IV). The IV models number the central compartment 1 (ADVAN1/ADVAN3).
DEPOT, CENTRAL = 1, 2


class Doses(eqx.Module):
    """Dosing events of `N` individuals, padded to a common number `D`.

    **Fields** (each `(N, D)`; padded entries have `mask == False` and amount 0):

    - `times`: dose times (same clock as the observations).
    - `amounts`: dose amounts (> 0).
    - `rates`: zero-order infusion rates (amount per time unit); 0 for a bolus.
    - `cmt`: the dose compartment, NONMEM's CMT number (1 or 2); the model reads it through
      its `dose_compartments` (for `pk_oral_*` 1 = depot, 2 = central; for `pk_iv_*` 1 = central).
    - `mask`: `True` where a dose exists.
    - `ii`: steady-state interval, or `None` (no steady-state dose). A dose with `ii > 0` is
      the last of an infinite series of the same dose every `ii` before it (NONMEM `SS=1` or
      `SS=2` with `II`); 0 for an ordinary dose. An infusion's duration must be shorter than `ii`.
    - `end`: the time from which a dose no longer contributes (a reset: NONMEM `EVID=3`, `EVID=4`,
      or an `SS=1` dose, which reset the compartments), `+inf` for none; or `None` (no resets).
      An observation at a reset's time is taken before it, as an observation at a dose's time
      is taken before that dose.
    """

    times: Float[Array, "individuals doses"]
    amounts: Float[Array, "individuals doses"]
    rates: Float[Array, "individuals doses"]
    cmt: Array
    mask: Bool[Array, "individuals doses"]
    ii: Float[Array, "individuals doses"] | None = None
    end: Float[Array, "individuals doses"] | None = None

    @classmethod
    def from_individuals(cls, times, amounts, *, rates=None, cmt=None, ii=None, end=None, ids=None) -> "Doses":
        """One sequence of dose times and amounts per individual (any lengths, zero included);
        `rates`, `cmt`, `ii` and `end` likewise (default: a bolus into CMT 1, no steady state,
        no reset)."""
        n = len(times)
        if len(amounts) != n:
            raise ValueError(f"got dose times for {n} individuals but amounts for {len(amounts)}.")
        fill = lambda x, v: [np.full(len(t), v) for t in times] if x is None else x  # noqa: E731
        rates, cmt, ii_, end_ = fill(rates, 0.0), fill(cmt, DEPOT), fill(ii, 0.0), fill(end, np.inf)
        width = max((len(t) for t in times), default=0)
        T, A, R, II = (np.zeros((n, width)) for _ in range(4))
        E, C, M = np.full((n, width), np.inf), np.full((n, width), DEPOT, np.int32), np.zeros((n, width), bool)
        for i in range(n):
            parts = [np.asarray(x, float).ravel() for x in (times[i], amounts[i], rates[i], cmt[i], ii_[i], end_[i])]
            if len({len(x) for x in parts}) != 1:
                raise ValueError(f"{individual_label(ids, i)}: dose times, amounts, rates, cmt, ii and end differ in length.")
            k = len(parts[0])
            T[i, :k], A[i, :k], R[i, :k], C[i, :k], M[i, :k] = *parts[:3], parts[3].astype(np.int32), True
            II[i, :k], E[i, :k] = parts[4], parts[5]
        return cls.from_arrays(T, A, rates=R, cmt=C, mask=M, ii=None if ii is None else II, end=None if end is None else E, ids=ids)

    @classmethod
    def from_arrays(cls, times, amounts, *, rates=None, cmt=None, mask=None, ii=None, end=None, ids=None) -> "Doses":
        """Padded `(N, D)` arrays; checked: finite, amounts > 0, rates >= 0, cmt in {1, 2},
        `ii` >= 0 (longer than an infusion's duration where > 0), `end` >= the dose time."""
        times, amounts = as_float_array(times, name="dose times"), as_float_array(amounts, name="dose amounts")
        if times.ndim != 2 or amounts.shape != times.shape:
            raise ValueError(f"dose times and amounts must both have shape (individuals, doses); got {times.shape}, {amounts.shape}.")
        mask = np.ones(times.shape, bool) if mask is None else np.asarray(mask, bool)
        rates = np.zeros(times.shape) if rates is None else as_float_array(rates, name="dose rates")
        cmt = np.full(times.shape, DEPOT, np.int32) if cmt is None else np.asarray(cmt)
        ii_ = np.zeros(times.shape) if ii is None else as_float_array(ii, name="dose ii")
        end_ = np.full(times.shape, np.inf) if end is None else as_float_array(end, name="dose end")
        for name, a in (("dose times", times), ("dose amounts", amounts), ("dose rates", rates), ("dose ii", ii_)):
            check_finite(a, mask, name=name, ids=ids)
        duration = amounts / np.where(rates > 0, rates, 1.0)
        for name, bad, what in (
            ("amount", mask & ~(amounts > 0), "must be positive"),
            ("rate", mask & (rates < 0), "must be >= 0 (0 = bolus)"),
            ("cmt", mask & ~np.isin(cmt, (1, 2)), "must be 1 or 2 (a NONMEM CMT number; see the models guide's table of CMT per model)"),
            ("ii", mask & (ii_ < 0), "must be >= 0 (0 = not a steady-state dose)"),
            ("ii", mask & (ii_ > 0) & (rates > 0) & ~(duration < ii_),
             "is not longer than the infusion's duration AMT/RATE; a steady-state infusion must end before the next dose"),
            ("end", mask & ~(end_ >= times), "must be >= the dose time (+inf for no reset)"),
        ):
            if bad.any():
                i, j = map(int, np.argwhere(bad)[0])
                value = {"amount": amounts, "rate": rates, "cmt": cmt, "ii": ii_, "end": end_}[name][i, j]
                raise ValueError(f"dose {j} of {individual_label(ids, i)} has {name} {value} (dose time {times[i, j]:g}); it {what}.")
        return cls._padded(times, amounts, rates, cmt, mask, ii_, end_)

    @classmethod
    def _padded(cls, times, amounts, rates, cmt, mask, ii=None, end=None) -> "Doses":
        """Doses from checked arrays, with the padded entries set to their neutral values; `ii`
        and `end` are kept only where some dose is at steady state or is ended by a reset."""
        mask = np.asarray(mask, bool)
        ii = None if ii is None or not (mask & (np.asarray(ii) > 0)).any() else np.where(mask, ii, 0.0)
        end = None if end is None or not (mask & np.isfinite(end)).any() else np.where(mask, end, np.inf)
        return cls(
            times=jnp.asarray(np.where(mask, times, 0.0)),
            amounts=jnp.asarray(np.where(mask, amounts, 0.0)),
            rates=jnp.asarray(np.where(mask, rates, 0.0)),
            cmt=jnp.asarray(np.where(mask, cmt, DEPOT).astype(np.int32)),
            mask=jnp.asarray(mask),
            ii=None if ii is None else jnp.asarray(ii),
            end=None if end is None else jnp.asarray(end),
        )

    @property
    def num_individuals(self) -> int:
        return self.times.shape[0]

    @property
    def steady_state(self) -> np.ndarray:
        """`(N, D)` `True` where a dose is a steady-state dose (`ii > 0`)."""
        return np.zeros(self.times.shape, bool) if self.ii is None else np.asarray(self.mask) & (np.asarray(self.ii) > 0)

    @property
    def reset(self) -> np.ndarray:
        """`(N, D)` `True` where a dose is ended by a later reset (finite `end`)."""
        return np.zeros(self.times.shape, bool) if self.end is None else np.asarray(self.mask) & np.isfinite(np.asarray(self.end))

    def subset(self, idx) -> "Doses":
        """The individuals at `idx` (an int array, slice or boolean mask)."""
        return take_rows(self, jnp.asarray(np.atleast_1d(np.arange(self.times.shape[0])[idx])))

    @classmethod
    def from_design(cls, designs) -> "Doses | None":
        """The doses in batched simulator designs (keys `dose_times`, ..., and where present
        `dose_ii`, `dose_end`), or `None` if they have none."""
        if "dose_times" not in designs:
            return None
        arrays = [np.asarray(designs[f"dose_{k}"]) for k in ("times", "amounts", "rates", "cmt", "mask")]
        extra = [np.asarray(designs[k]) if k in designs else None for k in ("dose_ii", "dose_end")]
        return cls._padded(*arrays, *extra)

    def design(self) -> dict:
        """The per-individual design entries a dosing simulator reads: `dose_times`,
        `dose_amounts`, `dose_rates`, `dose_cmt`, `dose_mask`, and `dose_ii` (0 = no steady state)
        and `dose_end` (+inf = no reset), which only a model whose design has them reads."""
        return {"dose_times": self.times, "dose_amounts": self.amounts, "dose_rates": self.rates,
                "dose_cmt": self.cmt, "dose_mask": self.mask,
                "dose_ii": jnp.zeros_like(self.times) if self.ii is None else self.ii,
                "dose_end": jnp.full_like(self.times, jnp.inf) if self.end is None else self.end}
