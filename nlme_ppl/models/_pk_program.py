"""The NumPyro program shared by the built-in PK models (oral and IV): structural parameters,
residual error, optional M3 censoring, and one cached program object per variant."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ._censoring import LeftCensored
from ._individual import IndividualModel

#: Training prior of the residual-error parameters (log scale): additive SD (mg/L) and proportional SD (fraction).
PK_ERROR_PRIOR = {"sigma_add": (-1.0, 1.0), "sigma_prop": (-2.0, 0.7)}
SD_FLOOR = 1e-4  # mg/L, only for the proportional error model
ERRORS = {"additive": ("sigma_add",), "proportional": ("sigma_prop",), "combined": ("sigma_add", "sigma_prop")}

_PROGRAMS: dict = {}


def error_name(base: str, error: str) -> str:
    """The model name of an error variant: `pk_oral_1cmt`, `pk_oral_1cmt_combined`, ..."""
    return base if error == "additive" else f"{base}_{error}"


def make_program(error: str, prior: dict, concentration, censoring: bool):
    """The NumPyro program of a PK model: `prior` (name -> (mean, SD), log scale) for the
    structural parameters in the order `concentration` takes them, then the error parameters;
    with `censoring`, observations below the design's `lloq` are censored (M3)."""
    sigma_names = ERRORS[error]

    def program(design, obs=None):
        p = [numpyro.sample(n, dist.Normal(m, s)) for n, (m, s) in prior.items()]
        sig = {n: numpyro.sample(n, dist.Normal(*PK_ERROR_PRIOR[n])) for n in sigma_names}
        conc = concentration(
            design["times"], design["dose_times"], design["dose_amounts"], design["dose_rates"], design["dose_cmt"],
            design["dose_mask"], *(jnp.exp(x) for x in p), dose_ii=design.get("dose_ii"), dose_end=design.get("dose_end"),
        )
        var = jnp.zeros_like(conc)
        if "sigma_add" in sig:
            var = var + jnp.exp(2 * sig["sigma_add"])
        if "sigma_prop" in sig:
            var = var + (jnp.exp(sig["sigma_prop"]) * conc) ** 2
        # floor: a proportional error has SD 0 where C = 0 (before the first dose); 1e-4 mg/L keeps it a density
        sd = jnp.sqrt(var + SD_FLOOR**2) if "sigma_add" not in sig else jnp.sqrt(var)
        noise = LeftCensored(dist.Normal(conc, sd), design["lloq"]) if censoring else dist.Normal(conc, sd)
        numpyro.sample("obs", noise.mask(design["mask"]).to_event(1), obs=obs)

    return program


def pk_model(base: str, structural: tuple, *, error: str, censoring: bool, suffix: str = "", design_prior,
             description: str, **options) -> IndividualModel:
    """A built-in PK model named `base` (+ error variant, `suffix`, `_censored`): its program
    (one object per base, error and censoring, since compiled simulators are cached by it),
    an example design drawn from `design_prior`, and the `IndividualModel` options."""
    if error not in ERRORS:
        raise ValueError(f"`error` must be one of {sorted(ERRORS)}; got {error!r}.")
    tag = (base, error, bool(censoring))
    if tag not in _PROGRAMS:
        prog = make_program(error, *structural, bool(censoring))
        prog.__name__ = f"{base}_{error}" + ("_censored" if censoring else "")
        _PROGRAMS[tag] = prog
    name = error_name(base, error) + suffix + ("_censored" if censoring else "")
    example = design_prior(jax.random.key(0), 1)
    return IndividualModel(
        _PROGRAMS[tag], {k: v[0] for k, v in example.items()}, name=name, design_prior=design_prior,
        description=description, **options,
    )
