"""Individual models: the `IndividualModel` wrapper and the built-in models."""

import functools

from ._censoring import LeftCensored as LeftCensored
from ._individual import IndividualModel as IndividualModel
from .frohlich import frohlich_detailed as frohlich_detailed, frohlich_simple as frohlich_simple
from .frohlich_sde import frohlich_sde as frohlich_sde
from .pk import pk_oral_1cmt as pk_oral_1cmt, pk_oral_2cmt as pk_oral_2cmt
from .sunitinib import sunitinib as sunitinib

#: Built-in models by name, as used by `nlme-ppl --model NAME` and estimator files.
BUILTIN = {"frohlich_simple": frohlich_simple, "frohlich_detailed": frohlich_detailed, "frohlich_sde": frohlich_sde, "pk_oral_1cmt": pk_oral_1cmt,
           "pk_oral_1cmt_censored": functools.partial(pk_oral_1cmt, censoring=True), "pk_oral_2cmt": pk_oral_2cmt,
           "sunitinib": sunitinib}


def get(name: str) -> IndividualModel:
    """The built-in model called `name`."""
    if name not in BUILTIN:
        raise ValueError(f"unknown model {name!r}; the built-in models are {sorted(BUILTIN)}.")
    return BUILTIN[name]()


__all__ = ["IndividualModel", "LeftCensored", "frohlich_detailed", "frohlich_sde", "frohlich_simple", "get", "pk_oral_1cmt", "pk_oral_2cmt", "sunitinib", "BUILTIN"]
