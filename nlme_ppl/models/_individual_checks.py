"""The checks of an `IndividualModel`: of its program and declarations when it is built (`_inspect`
reads the parameters and the training prior off the program's sites), and of the data's
compartments and covariates against them (`IndividualModel.check_data`)."""

from __future__ import annotations

import json
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


def _check_design_entries(model) -> None:
    if model.analytes and "obs_cmt" not in model.design:
        raise ValueError(f"model {model.name!r} declares analytes {model.analytes} but its design has no 'obs_cmt' entry.")
    for name, _, scale in model.covariates:
        if name not in model.design or jnp.shape(model.design[name]) != ():
            raise ValueError(f"model {model.name!r}: covariate {name!r} must be a scalar entry of the design.")
        if not scale > 0:
            raise ValueError(f"model {model.name!r}: covariate {name!r} needs a positive scale; got {scale}.")


def _check_exchangeable(model) -> None:
    seen = set()
    for g in model.exchangeable:
        unknown = [n for n in g if n not in model.param_names]
        if unknown or len(g) < 2:
            raise ValueError(
                f"model {model.name!r}: each exchangeable group needs at least two of {model.param_names}; got {g}."
            )
        if seen & set(g):
            raise ValueError(f"model {model.name!r}: parameter(s) {sorted(seen & set(g))} appear in two exchangeable groups.")
        seen |= set(g)
        specs = {json.dumps(_dist_spec(model.prior[n]), sort_keys=True) for n in g}
        if len(specs) > 1:
            raise ValueError(
                f"model {model.name!r}: exchangeable parameters {g} must have the same training prior; "
                f"got {[model.prior_spec()[n] for n in g]}."
            )


def _dist_spec(d: dist.Distribution) -> dict[str, Any]:
    spec = {"dist": type(d).__name__}
    for arg in getattr(d, "arg_constraints", {}):
        if hasattr(d, arg):
            spec[arg] = np.asarray(getattr(d, arg)).tolist()
    return spec


def _inspect(fn, design, obs_site: str, name: str):
    try:
        tr = numpyro.handlers.trace(numpyro.handlers.seed(fn, 0)).get_trace(design)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"model {name!r}: running the program on its design failed: {e}") from e
    samples = {k: s for k, s in tr.items() if s["type"] == "sample" and not s["infer"].get("is_auxiliary")}
    if obs_site not in samples:
        raise ValueError(
            f"model {name!r} has no observed site named {obs_site!r} (sample sites: {sorted(samples)}); "
            f"name the measurement site {obs_site!r}, or pass obs_site=..."
        )
    if samples[obs_site]["is_observed"]:
        raise ValueError(f"model {name!r}: site {obs_site!r} is observed even with obs=None; pass `obs=obs` to it.")
    latent = [k for k, s in samples.items() if k != obs_site and not s["is_observed"]]
    if not latent:
        raise ValueError(
            f"model {name!r} has no latent sample site: declare the individual parameters with "
            "numpyro.sample('name', dist.Normal(...))."
        )
    prior = {}
    for k in latent:
        d = samples[k]["fn"]
        if d.batch_shape != () or d.event_shape != ():
            raise ValueError(
                f"model {name!r}: latent site {k!r} must be a scalar; got batch shape {d.batch_shape} "
                f"and event shape {d.event_shape}. Declare one site per individual parameter."
            )
        if d.support is not constraints.real:
            raise ValueError(
                f"model {name!r}: latent site {k!r} has support {d.support}, not the real line. Individual "
                f"parameters must be real-valued: sample log({k}) from a Normal and use jnp.exp in the simulator."
            )
        prior[k] = d
    return tuple(latent), prior


def _check_analytes_and_covariates(model, data) -> None:
    obs_cmt = getattr(data, "obs_cmt", None)
    mask = np.asarray(data.mask)
    if model.analytes and obs_cmt is None:
        raise ValueError(
            f"model {model.name!r} observes compartments {model.analytes} and needs the compartment of each "
            "observation, but the data has none (read_nonmem keeps CMT when observation rows name several); "
            "add it with data.with_obs_cmt(...)."
        )
    if obs_cmt is not None:
        k = np.asarray(obs_cmt)
        seen = sorted(set(k[mask].tolist()))
        if not model.analytes and len(seen) > 1:
            raise ValueError(
                f"the data observes several compartments (CMT {seen}) but model {model.name!r} has one observable; "
                "fit one compartment's observations, or use a model with `analytes`."
            )
        bad = mask & ~np.isin(k, model.analytes) if model.analytes else np.zeros_like(mask)
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            raise ValueError(
                f"observation {j} of individual {data.ids[i]!r} is of compartment CMT={int(k[i, j])}, but model "
                f"{model.name!r} observes CMT {model.analytes} only."
            )
    missing = [name for name, *_ in model.covariates if name not in data.covariates]
    if missing:
        raise ValueError(
            f"model {model.name!r} simulates with the covariate(s) {missing}, which the data lacks (its covariates: "
            f"{sorted(data.covariates)}); add the column to the file, or data.with_covariates({missing[0]}=...)."
        )
