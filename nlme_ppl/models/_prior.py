"""Training priors that fit the study: `with_prior(model, {"CL": (mean, sd), ...})` gives the
same model with the named parameters' training priors replaced by `Normal(mean, sd)` (log
scale). Every built-in constructor takes it as `prior=`.

The program is not rewritten: a NumPyro handler swaps the distributions of the named latent
sites, so the simulator, the likelihood and `prior_log_prob` all read the new prior. The prior
enters the model's fingerprint (`IndividualModel.prior_spec`), so an estimator trained under
another prior is refused with a reason, and the estimator file records the prior it was
trained under (`load_posterior` rebuilds the built-in model with it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpyro.distributions as dist
from numpyro.primitives import Messenger

from ._individual import IndividualModel

__all__ = ["check_prior", "prior_from_spec", "with_design_prior", "with_prior"]


class _SwapPrior(Messenger):
    """Replace the distribution of each latent site named in `prior` by `Normal(mean, sd)`."""

    def __init__(self, fn, prior: tuple[tuple[str, float, float], ...]):
        self.prior = {n: (m, s) for n, m, s in prior}
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] in self.prior and not msg["is_observed"]:
            mean, sd = self.prior[msg["name"]]
            msg["fn"] = dist.Normal(mean, sd)


@functools.lru_cache(maxsize=None)
def _program(fn, prior: tuple[tuple[str, float, float], ...]):
    """One program object per (program, prior): compiled simulators are cached by it."""

    def program(design, obs=None):
        return _SwapPrior(fn, prior)(design, obs=obs)

    program.__name__ = getattr(fn, "__name__", "program") + "_prior"
    return program


def check_prior(model: IndividualModel, prior) -> tuple[tuple[str, float, float], ...]:
    """`prior` (`{name: (mean, sd)}`, log scale) checked against `model`'s parameters, as sorted
    `(name, mean, sd)` triples."""
    if not isinstance(prior, Mapping):
        raise TypeError(
            f"`prior` must be a dict {{name: (mean, sd)}} on the log scale, e.g. {{'CL': (0.0, 1.5)}}; got {type(prior).__name__}."
        )
    unknown = [n for n in prior if n not in model.param_names]
    if unknown:
        raise ValueError(
            f"`prior` names {unknown}, which model {model.name!r} does not have; its parameters are "
            f"{list(model.param_names)} (each on the log scale)."
        )
    out = []
    for name, value in prior.items():
        try:
            mean, sd = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"`prior[{name!r}]` must be a pair (mean, sd) of numbers on the log scale; got {value!r}.") from None
        if not (math.isfinite(mean) and math.isfinite(sd) and sd > 0):
            raise ValueError(f"`prior[{name!r}]` = ({mean}, {sd}): the mean must be finite and the SD positive and finite.")
        out.append((str(name), mean, sd))
    return tuple(sorted(out))


def with_prior(model: IndividualModel, prior: Mapping[str, tuple[float, float]] | None) -> IndividualModel:
    """`model` with the training prior of the parameters named in `prior` replaced by
    `Normal(mean, sd)` (log scale); `None` or `{}` gives `model` itself (its fingerprint unchanged).

    **Arguments:**

    - `model`: an [`IndividualModel`][nlme_ppl.IndividualModel].
    - `prior`: `{name: (mean, sd)}` for any of `model.param_names`; unknown names are refused
      with the list of parameters.

    **Returns:** the model with the new prior, under the same name (its fingerprint differs).
    """
    if prior is None:
        return model
    triples = check_prior(model, prior)
    if not triples:
        return model
    return _rebuild(model, _program(model.fn, triples), model.design_prior)


def with_design_prior(model: IndividualModel, design_prior) -> IndividualModel:
    """`model` simulating its training designs from `design_prior` (`(key, n) -> batched
    designs`, e.g. [`nlp.designs.like`][nlme_ppl.designs.like]); its fingerprint is unchanged."""
    return _rebuild(model, model.fn, design_prior)


def _rebuild(model: IndividualModel, fn, design_prior) -> IndividualModel:
    return IndividualModel(
        fn,
        dict(model.design),
        name=model.name,
        obs_site=model.obs_site,
        design_prior=design_prior,
        description=model.description,
        exchangeable=model.exchangeable,
        tractable=model.tractable,
        data_check=model.data_check,
        simulation_chunk=model.simulation_chunk,
        analytes=model.analytes,
        covariates={n: (c, s) for n, c, s in model.covariates},
        dose_compartments=dict(model.dose_compartments),
    )


def prior_from_spec(model: IndividualModel, spec: Mapping) -> dict[str, tuple[float, float]]:
    """The `prior=` that turns `model` (a built-in model's default) into the model whose
    `prior_spec()` is `spec` (as an estimator file stores it): the Normal priors that differ.
    Raises `ValueError` where `spec` is not of that form."""
    own = model.prior_spec()
    out = {}
    for name, s in spec.items():
        if name not in own:
            raise ValueError(f"the stored prior names {name!r}, which model {model.name!r} does not have.")
        if s == own[name]:
            continue
        if not isinstance(s, Mapping) or s.get("dist") != "Normal":
            raise ValueError(f"the stored prior of {name!r} is {s!r}, not a Normal that prior= can rebuild.")
        out[name] = (float(s["loc"]), float(s["scale"]))
    return out
