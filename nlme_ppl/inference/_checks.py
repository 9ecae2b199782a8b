"""Argument checks shared by the exact baseline's public functions."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._validate import check_keys, individual_label, positive_int
from ..data import Dataset
from ..models import IndividualModel

__all__ = ["check_exact_arguments", "check_data", "check_init", "check_masking", "check_model", "nonnegative_int", "prior_centre"]


def check_model(model) -> None:
    if isinstance(model, IndividualModel):
        if not model.tractable:
            raise ValueError(
                f"model {model.name!r} has no tractable likelihood (tractable=False: its program has hidden "
                "randomness, e.g. an SDE path), so the exact hierarchical model cannot be written; the "
                "amortized fit_map / fit_nuts need no likelihood and work with it."
            )
        return
    if isinstance(getattr(model, "model", None), IndividualModel):
        raise TypeError(
            f"expected the IndividualModel; got an estimator ({type(model).__name__}). The exact model needs "
            "the individual likelihood, not the amortized posterior: pass `posterior.model`."
        )
    raise TypeError(f"expected an IndividualModel (e.g. nlp.models.frohlich_simple()); got {type(model).__name__}.")


def check_data(data) -> None:
    if not isinstance(data, Dataset):
        raise TypeError(f"expected an nlp.Dataset; got {type(data).__name__}. Build one with nlp.Dataset.from_arrays(...).")


def check_masking(model, data, phi) -> None:
    """Refuse an individual program whose likelihood reads padded observations."""
    padded = np.flatnonzero(~np.asarray(data.mask).all(axis=1))
    if padded.size == 0:
        return
    i = int(padded[0])
    design = jax.tree.map(lambda x: x[i], model.designs_from_data(data))
    y = data.values[i]
    moved = jnp.where(data.mask[i], y, y + 1.0)
    a, b = model.log_likelihood(phi, design, y), model.log_likelihood(phi, design, moved)
    if not bool(jnp.isclose(a, b)):
        raise ValueError(
            f"model {model.name!r}: its log-likelihood changes with the padded (unobserved) values of "
            f"{individual_label(data.ids, i)}; mask the observed site with design['mask'], e.g. "
            "dist.Normal(mu, sigma).mask(design['mask']).to_event(1)."
        )


def check_init(init, tr) -> dict:
    """Keep the latent sites of `init` (dropping deterministic ones); refuse unknown names and wrong shapes."""
    if not isinstance(init, Mapping):
        raise TypeError(
            f"`init` must be a dict of site values; got {type(init).__name__}. To start from a MAP fit, pass "
            "init=exact_init(population, fit, draws, data)."
        )
    latent = {k: np.shape(s["value"]) for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
    deterministic = {k for k, s in tr.items() if s["type"] == "deterministic"}
    out = {}
    for k, v in init.items():
        if k in deterministic:
            continue
        if k not in latent:
            raise ValueError(f"`init` names {k!r}, which is not a latent site of the exact model; its latent sites are {sorted(latent)}.")
        v = jnp.asarray(v, jnp.float64)
        if v.shape != latent[k]:
            raise ValueError(f"`init[{k!r}]` has shape {v.shape}; site {k!r} has shape {latent[k]}.")
        if not bool(jnp.all(jnp.isfinite(v))):
            raise ValueError(f"`init[{k!r}]` is not finite; give finite starting values.")
        out[k] = v
    return out


def nonnegative_int(value, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer; got {value!r}.")
    return int(value)


def prior_centre(model, key) -> Float[Array, " k"]:
    """Median of 201 draws from the training prior (finite for any real-valued prior)."""
    return jnp.median(model.prior_sample(key, (201,)), axis=0)


def check_exact_arguments(model, data, key, *, num_chains, num_samples, num_warmup) -> tuple[int, int, int]:
    """The checks every exact-baseline NUTS fit starts with: the key, a tractable
    `IndividualModel`, a `Dataset`, and the chain sizes.

    **Returns:** `(num_chains, num_samples, num_warmup)` as ints."""
    check_keys(key)
    check_model(model)
    check_data(data)
    return (
        positive_int(num_chains, name="num_chains"),
        positive_int(num_samples, name="num_samples"),
        nonnegative_int(num_warmup, name="num_warmup"),
    )
