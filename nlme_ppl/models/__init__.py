"""Individual models: the `IndividualModel` wrapper and the built-in models."""

from ._individual import IndividualModel as IndividualModel
from .frohlich import frohlich_detailed as frohlich_detailed, frohlich_simple as frohlich_simple
from .frohlich_sde import frohlich_sde as frohlich_sde

#: Built-in models by name, as used by `nlme-ppl --model NAME` and estimator files.
BUILTIN = {"frohlich_simple": frohlich_simple, "frohlich_detailed": frohlich_detailed, "frohlich_sde": frohlich_sde}


def get(name: str) -> IndividualModel:
    """The built-in model called `name`."""
    if name not in BUILTIN:
        raise ValueError(f"unknown model {name!r}; the built-in models are {sorted(BUILTIN)}.")
    return BUILTIN[name]()


__all__ = ["IndividualModel", "frohlich_detailed", "frohlich_sde", "frohlich_simple", "get", "BUILTIN"]
