"""Individual parameters drawn from a population program at known population parameters
([`simulate_population`][nlme_ppl.simulate_population], re-exported by `nlme_ppl.simulation`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpyro
from jaxtyping import Array, Float

from ._sites import SiteReader
from ._validate import check_covariates, check_keys, positive_int

__all__ = ["simulate_population"]


class _Individuals(eqx.Module):
    """What a population program reads of its data when it draws new individuals."""

    num_individuals: int = eqx.field(static=True)
    covariates: dict
    subjects: tuple[str, ...] | None = eqx.field(static=True, default=None)


def simulate_population(
    population,
    params: Mapping[str, Float[Array, "..."] | Mapping[str, float]],
    key,
    *,
    num_individuals: int,
    covariates: Mapping[str, Sequence[float]] | None = None,
    param_names: Sequence[str] | None = None,
    occasions: int | None = None,
) -> Float[Array, "n k"]:
    """Individual parameters φ_i of `num_individuals` new individuals, drawn from a population
    program at known population parameters (NumPyro `Predictive`).

    **Arguments:**

    - `population`: a population program `population(data)`, e.g.
      [`populations.gaussian`][nlme_ppl.populations.gaussian].
    - `params`: its population parameters by site name, e.g. `{"mean": (k,), "sd": (r,)}`
      for `gaussian`. A site's value may also be a mapping by label (`{"mean": {"CL": 1.0,
      ...}, "sd": {"CL": 0.3, ...}}`), ordered by `population.coords[site]`.
    - `key`: a JAX key.
    - `num_individuals`: how many individuals to draw.
    - `covariates`: name -> `(num_individuals,)` values, for a population with covariate effects.
    - `param_names`: the individual parameters, in column order (default:
      `population.param_names`).
    - `occasions`: for a population with inter-occasion variability, the number of occasions
      of each individual: the result then has `num_individuals * occasions` rows, an
      individual's occasions adjacent (row `i * occasions + k` is occasion `k` of individual
      `i`), and `covariates` are per individual.

    **Returns:** `(num_individuals, k)` individual parameters, columns in `param_names`
    order, ready for [`simulate_data`][nlme_ppl.simulate_data].
    """
    from numpyro.infer import Predictive

    check_keys(key)
    n = positive_int(num_individuals, name="num_individuals")
    names = tuple(param_names if param_names is not None else getattr(population, "param_names", ()))
    if not names:
        raise TypeError("pass `param_names=`, the individual parameters in column order; the population program has no `param_names`.")
    values = {site: _site_value(population, site, v) for site, v in params.items()}
    covs = {k: jnp.asarray(c) for k, c in check_covariates(covariates, n).items()}
    if occasions is None:
        frame = _Individuals(n, covs)
    else:
        per = positive_int(occasions, name="occasions")
        subjects = tuple(str(i + 1) for i in range(n) for _ in range(per))
        frame = _Individuals(n * per, {k: jnp.repeat(c, per) for k, c in covs.items()}, subjects)
        n = n * per
    claims = _claimed_sites(population, values, frame, names, key)
    draws = Predictive(population, posterior_samples={k: v[None] for k, v in values.items()}, return_sites=list(claims))(key, frame)
    columns = {}
    for site, claimed in claims.items():
        value = jnp.reshape(draws[site][0], (n, -1))
        columns.update({name: value[:, j] for j, name in enumerate(claimed)})
    return jnp.stack([columns[name] for name in names], axis=-1)


def _site_value(population, site: str, value) -> jnp.ndarray:
    if not isinstance(value, Mapping):
        return jnp.asarray(value, float)
    labels = getattr(population, "coords", {}).get(site)
    if labels is None:
        raise TypeError(f"`params[{site!r}]` is a mapping, but the population program labels no site {site!r}; pass an array.")
    missing = [label for label in labels if label not in value]
    if missing:
        raise ValueError(f"`params[{site!r}]` lacks {missing}; the site's labels are {tuple(labels)}.")
    return jnp.asarray([value[label] for label in labels], float)


def _claimed_sites(population, values, frame, names, key) -> dict[str, tuple[str, ...]]:
    """Site name -> the individual parameters it holds: a site named after one, or a vector
    site with `infer={"individual_params": names}`."""
    program = numpyro.handlers.substitute(numpyro.handlers.seed(population, key), data=values)
    trace = numpyro.handlers.trace(program).get_trace(frame)
    reader = SiteReader(names)
    claims = {site: claimed for site, msg in trace.items() if (claimed := reader.claim(msg)) is not None}
    reader.check_complete()
    return claims
