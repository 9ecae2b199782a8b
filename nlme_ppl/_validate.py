"""Shared checks on user input. Every message names what is wrong and says what to do."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_float_array(x, *, name: str) -> np.ndarray:
    """Convert `x` to a float64 NumPy array, or raise a `TypeError` naming `name`."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        if isinstance(x, Sequence) and len({np.shape(r) for r in x}) > 1:
            raise ValueError(
                f"`{name}` is ragged (rows of different lengths {sorted({len(r) for r in x})}); "
                "pass padded arrays with a `mask`, or use `Dataset.from_individuals` for lists "
                "of per-individual arrays."
            ) from e
        raise TypeError(f"`{name}` must be numeric; got {type(x).__name__} ({e}).") from e
    return arr


def individual_label(ids: Sequence[str] | None, i: int) -> str:
    return f"individual {ids[i]!r} (row {i})" if ids is not None else f"individual at row {i}"


def check_finite(values: np.ndarray, mask: np.ndarray, *, name: str, ids=None) -> None:
    bad = mask & ~np.isfinite(values)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"`{name}` has a non-finite value ({values[i, j]}) for {individual_label(ids, i)} at "
            f"observation {j}; remove that observation or set its mask to False."
        )


def check_sorted(times: np.ndarray, mask: np.ndarray, *, ids=None) -> None:
    """Observed times must be non-decreasing within each individual."""
    for i in np.flatnonzero(mask.any(axis=1)):
        t = times[i][mask[i]]
        if np.any(np.diff(t) < 0):
            j = int(np.flatnonzero(np.diff(t) < 0)[0])
            raise ValueError(
                f"times are not sorted for {individual_label(ids, i)}: t={t[j]} is followed by "
                f"t={t[j + 1]}; sort each individual's observations by time."
            )


def check_keys(key) -> None:
    import jax

    if not (isinstance(key, jax.Array) and (key.dtype == jax.numpy.uint32 or jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key))):
        raise TypeError(
            f"expected a JAX random key (jax.random.key(0) or jax.random.PRNGKey(0)); got "
            f"{type(key).__name__}. The key is the last positional argument."
        )


def positive_int(value, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    return int(value)


def normalise_ids(ids, n: int) -> tuple[str, ...]:
    """`n` unique individual ids as strings (default `"1"` … `"n"`)."""
    if ids is None:
        return tuple(str(i + 1) for i in range(n))
    ids = tuple(str(i) for i in ids)
    if len(ids) != n:
        raise ValueError(f"expected {n} ids, one per individual; got {len(ids)}.")
    if len(set(ids)) != n:
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"individual ids must be unique; {dup!r} appears more than once.")
    return ids


def check_observations(times: np.ndarray, values: np.ndarray, mask: np.ndarray, *, ids=None) -> None:
    """Observed values and times finite, times sorted within each individual, and every
    individual observed at least once."""
    check_finite(values, mask, name="values", ids=ids)
    check_finite(times, mask, name="times", ids=ids)
    check_sorted(times, mask, ids=ids)
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ValueError(f"{individual_label(ids, int(empty[0]))} has no observations; remove it from the data.")


def check_covariates(covariates, n: int, *, ids=None) -> dict[str, np.ndarray]:
    """Per-individual covariates: each a finite float array of shape `(n,)`.

    **Returns:** a new dict, name -> float64 `(n,)` array."""
    out = {}
    for name, c in (covariates or {}).items():
        c = as_float_array(c, name=f"covariates[{name!r}]")
        if c.shape != (n,):
            raise ValueError(f"covariate {name!r} must have {n} values, one per individual; got shape {c.shape}.")
        if not np.isfinite(c).all():
            i = int(np.flatnonzero(~np.isfinite(c))[0])
            raise ValueError(f"covariate {name!r} is not finite for {individual_label(ids, i)}; fill it in.")
        out[name] = c
    return out
