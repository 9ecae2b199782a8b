"""Individual models: the `IndividualModel` wrapper and the built-in models."""

import functools

from ._censoring import LeftCensored as LeftCensored
from ._individual import IndividualModel as IndividualModel
from ._prior import with_prior as with_prior
from .frohlich import (
    frohlich_detailed as frohlich_detailed,
    frohlich_detailed_solution as frohlich_detailed_solution,
    frohlich_simple as frohlich_simple,
)
from .frohlich_sde import frohlich_sde as frohlich_sde, frohlich_sde_path as frohlich_sde_path
from .pk import (
    one_compartment_concentration as one_compartment_concentration,
    pk_oral_1cmt as pk_oral_1cmt,
    pk_oral_2cmt as pk_oral_2cmt,
    two_compartment_concentration as two_compartment_concentration,
)
from .pk_iv import (
    iv_one_compartment_concentration as iv_one_compartment_concentration,
    iv_two_compartment_concentration as iv_two_compartment_concentration,
    pk_iv_1cmt as pk_iv_1cmt,
    pk_iv_2cmt as pk_iv_2cmt,
)
from .sunitinib import sunitinib as sunitinib, sunitinib_concentrations as sunitinib_concentrations

#: Built-in models by name, as used by `nlme-ppl --model NAME` and estimator files.
BUILTIN = {"frohlich_simple": frohlich_simple, "frohlich_detailed": frohlich_detailed, "frohlich_sde": frohlich_sde, "pk_oral_1cmt": pk_oral_1cmt,
           "pk_oral_1cmt_censored": functools.partial(pk_oral_1cmt, censoring=True), "pk_oral_2cmt": pk_oral_2cmt,
           "pk_iv_1cmt": pk_iv_1cmt, "pk_iv_1cmt_censored": functools.partial(pk_iv_1cmt, censoring=True), "pk_iv_2cmt": pk_iv_2cmt,
           "sunitinib": sunitinib}


def get(name: str, *, prior: dict[str, tuple[float, float]] | None = None) -> IndividualModel:
    """The built-in model called `name`; with `prior` (`{param: (mean, sd)}`, log scale), its
    training prior changed as by the constructors' `prior=` ([`with_prior`][nlme_ppl.models.with_prior])."""
    if name not in BUILTIN:
        raise ValueError(f"unknown model {name!r}; the built-in models are {sorted(BUILTIN)}.")
    return with_prior(BUILTIN[name](), prior)


__all__ = [
    "BUILTIN", "IndividualModel", "LeftCensored", "frohlich_detailed", "frohlich_detailed_solution", "frohlich_sde",
    "frohlich_sde_path", "frohlich_simple", "get", "iv_one_compartment_concentration", "iv_two_compartment_concentration",
    "one_compartment_concentration", "pk_iv_1cmt", "pk_iv_2cmt", "pk_oral_1cmt", "pk_oral_2cmt",
    "sunitinib", "sunitinib_concentrations", "two_compartment_concentration", "with_prior",
]
