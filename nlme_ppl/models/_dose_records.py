"""How a model reads the data's dose records: its compartment map (NONMEM CMT number -> route)
and whether it simulates steady-state doses and resets. `IndividualModel.check_data` refuses,
naming the individual and the dose, the records a model would otherwise mis-simulate."""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_DOSE_COMPARTMENTS", "ROUTES", "central_doses", "check_dose_records", "describe_compartments"]

#: The routes a dose compartment can be: absorbed first-order (`depot`) or straight into the
#: central compartment (`central`, an IV bolus, or an infusion where RATE > 0).
ROUTES = ("depot", "central")
#: The compartment map of a model that declares none, and of `pk_oral_*` (NONMEM ADVAN2/ADVAN4):
#: CMT 1 = depot, 2 = central.
DEFAULT_DOSE_COMPARTMENTS = ((1, "depot"), (2, "central"))


def normalise_compartments(spec, name: str) -> tuple[tuple[int, str], ...]:
    """`{CMT: route}` (or pairs) as sorted `(int, route)` pairs, checked."""
    if spec is None:
        return DEFAULT_DOSE_COMPARTMENTS
    pairs = tuple(sorted((int(k), str(v)) for k, v in dict(spec).items()))
    bad = [(k, v) for k, v in pairs if v not in ROUTES or k < 1]
    if bad or not pairs:
        raise ValueError(
            f"model {name!r}: `dose_compartments` maps NONMEM CMT numbers (>= 1) to a route in {ROUTES}, "
            f"e.g. {{1: 'central'}}; got {dict(spec)!r}."
        )
    return pairs


def describe_compartments(pairs) -> str:
    return ", ".join(f"CMT {k} = {v}" for k, v in pairs)


def central_doses(model, cmt) -> np.ndarray:
    """Where the doses of compartment numbers `cmt` go straight into the central compartment
    under `model`'s map."""
    central = [k for k, v in model.dose_compartments if v == "central"]
    return np.isin(np.asarray(cmt), central)


def check_dose_records(model, data) -> None:
    """Refuse doses into a compartment the model does not dose, steady-state doses for a model
    that does not simulate steady state (design entry `dose_ii`), and resets for one that does
    not simulate them (`dose_end`): each would be simulated as something else."""
    d = data.doses
    mask = np.asarray(d.mask)
    times = np.asarray(d.times)
    cmt = np.asarray(d.cmt)
    known = [k for k, _ in model.dose_compartments]
    bad = mask & ~np.isin(cmt, known)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"dose {j} of individual {data.ids[i]!r} (TIME={times[i, j]:g}) goes into CMT={int(cmt[i, j])}, which model "
            f"{model.name!r} does not dose (its dose compartments: {describe_compartments(model.dose_compartments)}; "
            "see the models guide's table of CMT per model). Fix the CMT column, or use a model with that route."
        )
    ss = d.steady_state
    if ss.any() and "dose_ii" not in model.design:
        i, j = map(int, np.argwhere(ss)[0])
        raise ValueError(
            f"dose {j} of individual {data.ids[i]!r} (TIME={times[i, j]:g}) is a steady-state dose (SS with "
            f"II={float(np.asarray(d.ii)[i, j]):g}), but model {model.name!r} (and so its estimators) does not simulate "
            "steady state: it would be read as a single dose. Use a model that does (pk_iv_1cmt, pk_iv_2cmt, or "
            "pk_oral_1cmt(steady_state=True) with an estimator trained for it), or write the earlier doses out "
            "explicitly (ADDL/II from long enough before)."
        )
    ended = d.reset
    if ended.any() and "dose_end" not in model.design:
        i, j = map(int, np.argwhere(ended)[0])
        raise ValueError(
            f"dose {j} of individual {data.ids[i]!r} (TIME={times[i, j]:g}) is ended by a reset at TIME="
            f"{float(np.asarray(d.end)[i, j]):g} (EVID=3/4 or SS=1), but model {model.name!r} (and so its estimators) "
            "does not simulate resets: the dose would act on. Use a model that does (pk_iv_1cmt, pk_iv_2cmt, or "
            "pk_oral_1cmt(steady_state=True) with an estimator trained for it), or split the record into separate IDs."
        )
