"""Covariate effects in the usual pharmacometric forms, as terms on the log scale.

The individual parameters are on the log scale, so each form is an additive term of an
individual's mean of log p:

| form | natural scale | term of log p_i |
|---|---|---|
| a name (`"log_wt70"`) | p_pop · exp(θ x_i) | θ · x_i |
| [`Power`][nlme_ppl.populations.Power] | p_pop · (x_i / ref)^θ | θ · log(x_i / ref) |
| [`Exponential`][nlme_ppl.populations.Exponential] | p_pop · exp(θ (x_i − ref)) | θ · (x_i − ref) |
| [`Linear`][nlme_ppl.populations.Linear] | p_pop · (1 + θ (x_i − ref)) | log(1 + θ (x_i − ref)) |
| [`Categorical`][nlme_ppl.populations.Categorical] | p_pop · exp(θ_l) for level l | Σ_l θ_l · 1[x_i = l] |

An estimated θ is one entry of the population site `beta`, labelled `<param>,<covariate>`
(`<param>,<covariate>=<level>` for a level); a fixed θ (`exponent=0.75`) is a constant and no
site at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Categorical", "Exponential", "Linear", "Power"]


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number; got {value!r}.")
    return float(value)


def _name(covariate, form: str) -> str:
    if not isinstance(covariate, str) or not covariate:
        raise TypeError(f"`{form}(covariate, ...)` takes the covariate's name (a key of data.covariates); got {covariate!r}.")
    return covariate


@dataclass(frozen=True)
class Power:
    """Power (allometric) effect: p_i = p_pop · (x_i / `ref`)^θ, the term θ · log(x_i / ref).

    - `covariate`: its name in `data.covariates` (positive values, e.g. body weight).
    - `ref`: the reference value (e.g. 70 kg), where p_i = p_pop. Give a number: the
      median of the study (`float(np.median(data.covariates["WT"]))`) makes `mean[p]` the
      typical individual's value.
    - `exponent`: θ fixed at this value (0.75 for clearance, 1 for volumes: no parameter
      is estimated), or `None` to estimate it as `beta[<param>,<covariate>]`.
    """

    covariate: str
    ref: float = field(kw_only=True)
    exponent: float | None = field(default=None, kw_only=True)

    def __post_init__(self):
        _name(self.covariate, "Power")
        if _finite(self.ref, "`Power.ref`") <= 0:
            raise ValueError(f"`Power.ref` must be positive (the term is log(x / ref)); got {self.ref!r}.")
        if self.exponent is not None:
            _finite(self.exponent, "`Power.exponent`")


@dataclass(frozen=True)
class Exponential:
    """Exponential effect: p_i = p_pop · exp(θ (x_i − `ref`)), the term θ · (x_i − ref).

    `coefficient`: θ fixed at this value, or `None` to estimate it as `beta[<param>,<covariate>]`.
    """

    covariate: str
    ref: float = field(kw_only=True)
    coefficient: float | None = field(default=None, kw_only=True)

    def __post_init__(self):
        _name(self.covariate, "Exponential")
        _finite(self.ref, "`Exponential.ref`")
        if self.coefficient is not None:
            _finite(self.coefficient, "`Exponential.coefficient`")


@dataclass(frozen=True)
class Linear:
    """Linear effect: p_i = p_pop · (1 + θ (x_i − `ref`)), the term log(1 + θ (x_i − ref)).

    The term exists only where 1 + θ (x − ref) > 0. `limits = (low, high)` are the covariate
    values the model must accept (the study's range or inclusion limits): an estimated θ is
    constrained to the interval that keeps 1 + θ (x − ref) > 0 on all of [low, high],

        −1 / (high − ref) < θ < 1 / (ref − low)   (a side is open where ref lies beyond it),

    so MAP and NUTS never leave it (NumPyro's transform of the support; its prior is the
    Normal(0, `beta_prior_scale`) truncated there). A data value outside the limits is an
    error. `coefficient`: θ fixed at this value (checked against the limits), or `None` to
    estimate it as `beta[<param>,<covariate>]`.
    """

    covariate: str
    ref: float = field(kw_only=True)
    limits: tuple[float, float] = field(kw_only=True)
    coefficient: float | None = field(default=None, kw_only=True)

    def __post_init__(self):
        _name(self.covariate, "Linear")
        _finite(self.ref, "`Linear.ref`")
        if isinstance(self.limits, str) or not isinstance(self.limits, Sequence) or len(self.limits) != 2:
            raise ValueError(f"`Linear.limits` must be (low, high), the covariate values the model accepts; got {self.limits!r}.")
        low, high = (_finite(v, "`Linear.limits`") for v in self.limits)
        if not low < high:
            raise ValueError(f"`Linear.limits` must be (low, high) with low < high; got {self.limits!r}.")
        object.__setattr__(self, "limits", (low, high))
        if self.coefficient is not None:
            theta = _finite(self.coefficient, "`Linear.coefficient`")
            if min(1 + theta * (low - self.ref), 1 + theta * (high - self.ref)) <= 0:
                raise ValueError(
                    f"`Linear({self.covariate!r}, coefficient={theta})` makes 1 + θ (x − {self.ref}) ≤ 0 within "
                    f"limits {self.limits}; the coefficient must lie in {self.bounds()}."
                )

    def bounds(self) -> tuple[float, float]:
        """The open interval of θ that keeps 1 + θ (x − ref) > 0 on the limits (±inf where open)."""
        low, high = self.limits
        lower = -1.0 / (high - self.ref) if high > self.ref else -math.inf
        upper = 1.0 / (self.ref - low) if low < self.ref else math.inf
        return lower, upper


@dataclass(frozen=True)
class Categorical:
    """Categorical effect: one coefficient `beta[<param>,<covariate>=<level>]` for each level
    other than `reference`, the term Σ_l θ_l · 1[x_i = l].

    - `levels`: the covariate's values (numbers, as in `data.covariates`), e.g. `(1, 2)`;
      [`Categorical.from_data`][nlme_ppl.populations.Categorical.from_data] takes those
      found in a data set. A data value not among them is an error.
    - `reference`: the level without a coefficient (default: the first of `levels`).
    """

    covariate: str
    levels: tuple[float, ...] = field(kw_only=True)
    reference: float | None = field(default=None, kw_only=True)

    def __post_init__(self):
        _name(self.covariate, "Categorical")
        if isinstance(self.levels, str) or not isinstance(self.levels, Sequence):
            raise ValueError(f"`Categorical.levels` must be a sequence of numbers; got {self.levels!r}.")
        levels = tuple(_finite(v, "each of `Categorical.levels`") for v in self.levels)
        if len(set(levels)) != len(levels) or len(levels) < 2:
            raise ValueError(f"`Categorical.levels` must be two or more distinct numbers; got {self.levels!r}.")
        ref = levels[0] if self.reference is None else _finite(self.reference, "`Categorical.reference`")
        if ref not in levels:
            raise ValueError(f"`Categorical.reference` {self.reference!r} is not one of the levels {self.levels!r}.")
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "reference", ref)

    @classmethod
    def from_data(cls, data, covariate: str, *, reference: float | None = None) -> "Categorical":
        """The levels found in `data.covariates[covariate]` (sorted; reference: the smallest unless given)."""
        have = getattr(data, "covariates", {}) or {}
        if covariate not in have:
            raise ValueError(f"the data has no covariate {covariate!r} (it has {sorted(have)}); add it with data.with_covariates(...).")
        x = np.asarray(have[covariate], np.float64)
        _check_finite(x, covariate, _ids(data, x.size), ["Categorical.from_data"])
        return cls(covariate, levels=tuple(np.unique(x).tolist()), reference=reference)


def level_label(level: float) -> str:
    return str(int(level)) if float(level).is_integer() else repr(float(level))


# ------------------------------------------------------------------------------ terms
class Term(NamedTuple):
    """One term of a parameter's mean: `kind` in raw, log (θ log(x/ref)), diff (θ (x − ref)),
    linear (log(1 + θ (x − ref))), level (θ 1[x = ref]); `value` is a fixed θ, `None` if estimated."""

    param: str
    covariate: str
    kind: str
    label: str
    ref: float = 0.0
    value: float | None = None
    form: object = None


def expand(param: str, spec) -> list[Term]:
    """The terms of one `covariates[param]` entry (a name or a form)."""
    if isinstance(spec, str):
        return [Term(param, spec, "raw", spec, form=spec)]
    if isinstance(spec, Power):
        return [Term(param, spec.covariate, "log", spec.covariate, spec.ref, spec.exponent, spec)]
    if isinstance(spec, Exponential):
        return [Term(param, spec.covariate, "diff", spec.covariate, spec.ref, spec.coefficient, spec)]
    if isinstance(spec, Linear):
        return [Term(param, spec.covariate, "linear", spec.covariate, spec.ref, spec.coefficient, spec)]
    if isinstance(spec, Categorical):
        return [Term(param, spec.covariate, "level", f"{spec.covariate}={level_label(lv)}", lv, None, spec)
                for lv in spec.levels if lv != spec.reference]  # fmt: skip
    raise TypeError(
        f"`covariates[{param!r}]` must be covariate names (strings) or forms (populations.Power, Linear, "
        f"Exponential, Categorical); got {spec!r}."
    )


def coefficient_bounds(terms: Sequence[Term]) -> tuple[np.ndarray, np.ndarray] | None:
    """Lower and upper bounds of each estimated coefficient, or `None` when none is bounded."""
    est = [t for t in terms if t.value is None]
    if not any(t.kind == "linear" for t in est):
        return None
    lo = [t.form.bounds()[0] if t.kind == "linear" else -math.inf for t in est]
    hi = [t.form.bounds()[1] if t.kind == "linear" else math.inf for t in est]
    return np.asarray(lo), np.asarray(hi)


# ------------------------------------------------------------------------------ data checks
def _ids(data, n: int) -> tuple[str, ...]:
    ids = getattr(data, "ids", None)
    return tuple(map(str, ids)) if ids is not None and len(ids) == n else tuple(f"row {i}" for i in range(n))


def _concrete(x) -> np.ndarray | None:
    try:
        return np.asarray(x, np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_finite(x, name, ids, used):
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(
            f"covariate {name!r} of individual {ids[bad[0]]!r} is {x[bad[0]]} ({bad.size} individual(s) in all); "
            f"the covariate effects {used} need a finite value for every individual: impute it, or leave "
            "the individual out (data.subset(...))."
        )


def _problems(t: Term, x):
    """(bad mask, what is wrong, what to do) for one term's covariate values `x` (NumPy or JAX)."""
    name, p = t.covariate, t.param
    if t.kind == "log":
        return x <= 0, f"the power effect on {p} takes log({name}/{t.ref:g}), which needs {name} > 0", \
            "fix the value, or use an Exponential or Linear form for a covariate that can be zero or negative"
    if t.kind == "linear":
        low, high = t.form.limits
        return (x < low) | (x > high), f"outside the limits ({low:g}, {high:g}) of the linear effect on {p}", \
            f"widen `Linear({name!r}, limits=...)` to cover the data"
    if t.kind == "level":
        levels = t.form.levels
        bad = jnp.ones(jnp.shape(x), bool) if isinstance(x, jax.Array) else np.ones(np.shape(x), bool)
        for lv in levels:
            bad = bad & (x != lv)
        return bad, f"not one of the levels {tuple(level_label(v) for v in levels)} of the categorical effect on {p}", \
            f"add the level to `Categorical({name!r}, levels=...)` (Categorical.from_data(data, {name!r}) takes the data's levels) or recode it"
    return None


def checked_columns(terms: Sequence[Term], data) -> dict:
    """`{covariate: (N,) values}` of every covariate the terms use, checked: present, finite,
    positive for a power form, within the limits of a linear form, one of the levels of a
    categorical form. Concrete data raise `ValueError` naming the individual; traced data
    (inside `jit`) raise through `eqx.error_if`."""
    have = getattr(data, "covariates", {}) or {}
    names = list(dict.fromkeys(t.covariate for t in terms))
    missing = [c for c in names if c not in have]
    if missing:
        raise ValueError(
            f"the population model has covariate effects on {sorted(missing)} but the data has "
            f"covariates {sorted(have)}; add them (e.g. Dataset.from_arrays(..., covariates=...), "
            "read_nonmem(..., covariates=...) or data.with_covariates(...))."
        )
    out = {}
    for c in names:
        x = jnp.asarray(have[c], jnp.result_type(float))
        mine = [t for t in terms if t.covariate == c]
        used = sorted({f"{t.param}~{c}" for t in mine})
        concrete = _concrete(x)
        if concrete is not None:
            ids = _ids(data, concrete.size)
            _check_finite(concrete, c, ids, used)
            for t in mine:
                if (found := _problems(t, concrete)) is not None and np.any(found[0]):
                    bad, what, todo = found
                    i = np.flatnonzero(bad)
                    raise ValueError(f"covariate {c!r} of individual {ids[i[0]]!r} is {concrete[i[0]]:g} ({i.size} individual(s) in all): {what}; {todo}.")
        else:
            x = eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"covariate {c!r} has a non-finite value; the covariate effects {used} "
                             "need a finite value for every individual: impute it, or leave the individual out.")
            for t in mine:
                if (found := _problems(t, x)) is not None:
                    x = eqx.error_if(x, jnp.any(found[0]), f"a value of covariate {c!r} is invalid: {found[1]}; {found[2]}. "
                                     "Run the population program on the data outside jit to name the individuals.")
        out[c] = x
    return out


def features(terms: Sequence[Term], columns: dict):
    """One `(N,)` feature per term: x, log(x/ref), x − ref or 1[x = level] (for the linear form
    x − ref, which enters the mean as log1p(θ · feature))."""
    feats = []
    for t in terms:
        x = columns[t.covariate]
        if t.kind == "raw":
            f = x
        elif t.kind == "log":
            f = jnp.log(x / t.ref)
        elif t.kind == "level":
            f = (x == t.ref).astype(x.dtype)
        else:
            f = x - t.ref
        feats.append(f)
    return feats
