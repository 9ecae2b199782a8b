"""Simulation: the prior predictive of an individual model (vectorised, chunked, seeded),
data sets from a known truth, simulator designs as a `Dataset`, and individual parameters
drawn from a population program.

Keys: simulation `i` of [`simulate`][nlme_ppl.simulate] uses `jax.random.fold_in(key, i)`,
so the same key gives the same simulations for every `chunk_size`, and a longer run starts
with the simulations of a shorter one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jaxtyping import Array, Bool, Float, PyTree
from tqdm.auto import tqdm

from ._sites import SiteReader
from ._validate import check_covariates, check_keys, check_observations, normalise_ids, positive_int
from .data import Dataset, Doses
from .models import IndividualModel

__all__ = ["Simulations", "dataset_from_designs", "simulate", "simulate_data", "simulate_population"]


class Simulations(eqx.Module):
    """Pairs (φ, y) from the prior predictive of an individual model.

    **Fields:**

    - `params`: `(n, k)` individual parameters, columns in `param_names` order.
    - `data`: the simulated observations as a [`Dataset`][nlme_ppl.Dataset] of `n` individuals.
    - `param_names`: the column names of `params`.
    - `num_dropped`: how many simulations came out non-finite and were dropped.
    """

    params: Float[Array, "n k"]
    data: Dataset
    param_names: tuple[str, ...] = eqx.field(static=True)
    num_dropped: int = eqx.field(static=True, default=0)

    def __len__(self) -> int:
        return self.params.shape[0]

    def split(self, fraction: float) -> tuple["Simulations", "Simulations"]:
        """Split into the first `1 - fraction` and the last `fraction` (e.g. a validation set)."""
        n_val = int(round(len(self) * fraction))
        cut = len(self) - n_val
        return self[:cut], self[cut:]

    def __getitem__(self, index) -> "Simulations":
        idx = np.arange(len(self))[index]
        return Simulations(self.params[idx], self.data.subset(idx), self.param_names, 0)


# ---------------------------------------------------------------------- designs -> Dataset
def censored_in(designs, values) -> np.ndarray | None:
    """Which simulated `values` a censoring simulator recorded at their limit (`values <= lloq`
    where observed), or `None` when the `designs` have no `lloq`."""
    if "lloq" not in designs:
        return None
    return np.asarray(designs["mask"], bool) & (np.asarray(values) <= np.asarray(designs["lloq"]))


def obs_cmt_in(designs) -> np.ndarray | None:
    """The compartment each simulated observation measures (int32, 0 where padded), or `None`
    when the `designs` have no `obs_cmt` (a model with one analyte)."""
    if "obs_cmt" not in designs:
        return None
    return np.where(np.asarray(designs["mask"], bool), np.asarray(designs["obs_cmt"]), 0).astype(np.int32)


def dataset_from_designs(
    model: IndividualModel,
    designs: PyTree,
    values: Float[Array, "n T"],
    *,
    keep: Bool[Array, " n"] | None = None,
    ids: Sequence | None = None,
    covariates: Mapping[str, Sequence[float]] | None = None,
) -> Dataset:
    """Simulated observations as a [`Dataset`][nlme_ppl.Dataset]: the one conversion from
    simulator designs to data.

    **Arguments:**

    - `model`: the individual model that simulated them.
    - `designs`: its batched designs (`(n, ...)` each): times and mask, and where the model
      has them doses (`dose_*`), limits of quantification (`lloq`, giving `censored`),
      observed compartments (`obs_cmt`) and the simulator covariates (`model.covariates`).
    - `values`: `(n, T)` simulated observations.
    - `keep`: optional `(n,)` booleans, the rows to keep (e.g. the finite simulations).
    - `ids`: optional `n` ids, one per row of `designs` (default: the row numbers).
    - `covariates`: optional further covariates, name -> `n` values (checked), added to (or
      replacing) the simulator covariates taken from the designs.

    The observations are not checked: drop non-finite rows with `keep`.

    **Returns:** a `Dataset` of the kept rows.
    """
    designs = {k: np.asarray(v) for k, v in designs.items()}
    values = np.asarray(values)
    n = values.shape[0]
    if values.ndim != 2 or np.shape(designs["times"]) != values.shape:
        raise ValueError(f"`values` must have the shape of the designs' times {np.shape(designs['times'])}; got {values.shape}.")
    rows = np.arange(n) if keep is None else np.flatnonzero(np.asarray(keep, bool))
    ids = tuple(str(i) for i in range(n)) if ids is None else normalise_ids(ids, n)
    extra = check_covariates(covariates, n, ids=ids)
    mask = designs["mask"].astype(bool)
    doses, censored, obs_cmt = Doses.from_design(designs), censored_in(designs, values), obs_cmt_in(designs)
    cov = {**{c: designs[c].astype(float) for c, *_ in model.covariates}, **extra}
    return Dataset(
        times=jnp.asarray(np.where(mask, designs["times"], 0.0)[rows]),
        values=jnp.asarray(np.where(mask, values, 0.0)[rows]),
        mask=jnp.asarray(mask[rows]),
        ids=tuple(ids[i] for i in rows),
        covariates={c: jnp.asarray(v[rows]) for c, v in cov.items()},
        doses=None if doses is None else doses.subset(rows),
        censored=None if censored is None or not censored[rows].any() else jnp.asarray(censored[rows]),
        obs_cmt=None if obs_cmt is None else jnp.asarray(obs_cmt[rows]),
    )


# ---------------------------------------------------------------------- prior predictive
#: Simulations are run in multiples of this many (see `simulate`).
_BLOCK = 64


@eqx.filter_jit
def _simulate_chunk(model: IndividualModel, key, start, num: int):
    """Simulations `start, ..., start + num - 1`, each from its own key `fold_in(key, i)`."""

    def one(i):
        k_design, k_sim = jax.random.split(jax.random.fold_in(key, i))
        design = jax.tree.map(lambda x: x[0], model.sample_designs(k_design, 1))
        params, obs = model.simulate_one(k_sim, design)
        return params, obs, design

    # one compiled block of `_BLOCK` simulations, mapped over the chunk: every simulation goes
    # through the same instructions whatever the chunk size (XLA may round a wider batch differently)
    index = (start + jnp.arange(num)).reshape(-1, _BLOCK)
    return jax.tree.map(lambda x: x.reshape(num, *x.shape[2:]), jax.lax.map(jax.vmap(one), index))


def simulate(
    model: IndividualModel,
    key,
    *,
    num_simulations: int,
    chunk_size: int | None = None,
    max_dropped_fraction: float = 0.01,
    progress: bool = True,
) -> Simulations:
    """Simulate `num_simulations` pairs (φ, y) from the prior predictive of `model`.

    Runs in jitted, vmapped chunks of `chunk_size` (default: the model's `simulation_chunk`,
    10,000 for most models). Simulation `i` (its design, φ and noise) comes from the key
    `jax.random.fold_in(key, i)`, so the result does not depend on `chunk_size`, and the
    first `n` simulations of a longer run are those of a run of `n`.

    Simulations with a non-finite parameter or observation are dropped and counted in
    `num_dropped`; more than `max_dropped_fraction` dropped raises a `RuntimeError` (the
    simulator or the prior needs fixing).

    **Returns:** a [`Simulations`][nlme_ppl.Simulations] with `params` of shape `(n, k)`.
    """
    check_keys(key)
    num_simulations = positive_int(num_simulations, name="num_simulations")
    chunk_size = positive_int(model.simulation_chunk if chunk_size is None else chunk_size, name="chunk_size")
    parts = []
    with tqdm(total=num_simulations, desc=f"simulate {model.name}", disable=not progress, unit="sim") as bar:
        for start in range(0, num_simulations, chunk_size):
            n = min(chunk_size, num_simulations - start)
            width = -(-n // _BLOCK) * _BLOCK
            chunk = jax.device_get(_simulate_chunk(model, key, jnp.asarray(start), width))
            parts.append(jax.tree.map(lambda x: x[:n], chunk))
            bar.update(n)
    params, obs = (np.concatenate(x) for x in list(zip(*parts))[:2])
    designs = jax.tree.map(lambda *x: np.concatenate(x), *[p[2] for p in parts])
    mask = designs["mask"].astype(bool)
    ok = np.isfinite(params).all(1) & np.where(mask, np.isfinite(obs), True).all(1)
    dropped = int((~ok).sum())
    if dropped > max_dropped_fraction * num_simulations:
        raise RuntimeError(
            f"{dropped} of {num_simulations} simulations of {model.name!r} ({dropped / num_simulations:.1%}) "
            f"were not finite, more than the allowed {max_dropped_fraction:.1%}. Check the simulator "
            "for overflow, or narrow the training prior."
        )
    if dropped:
        tqdm.write(f"simulate: dropped {dropped} non-finite simulations of {num_simulations}.")
    data = dataset_from_designs(model, designs, obs, keep=ok)
    return Simulations(jnp.asarray(params[ok]), data, model.param_names, dropped)


# ---------------------------------------------------------------------- data from a known truth
@eqx.filter_jit
def _simulate_given(model: IndividualModel, keys, params, designs):
    def one(key, phi, design):
        cond = numpyro.handlers.condition(model.fn, data={n: phi[i] for i, n in enumerate(model.param_names)})
        tr = numpyro.handlers.trace(numpyro.handlers.seed(cond, key)).get_trace(design)
        return tr[model.obs_site]["value"]

    return jax.vmap(one)(keys, params, designs)


def simulate_data(
    model: IndividualModel, params: Float[Array, "n k"], key, *, designs: PyTree | None = None, ids=None, covariates=None
) -> Dataset:
    """Simulate one data set per row of `params` (individual parameters, columns in `param_names`).

    **Arguments:**

    - `model`: the individual model.
    - `params`: `(n, k)` individual parameters, e.g. from
      [`simulate_population`][nlme_ppl.simulate_population].
    - `key`: a JAX key. It is split in two: one key for the designs, one for the noise.
    - `designs`: a batched design (default: `n` draws of the model's design prior, or its
      fixed design). Use it to make synthetic populations from a known truth.
    - `ids`: optional `n` ids (default `"1"` … `"n"`).
    - `covariates`: name -> `(n,)` values, kept in the data; the design entries of the
      covariates the simulator reads (`model.covariates`) are added to them.

    **Returns:** a [`Dataset`][nlme_ppl.Dataset] of `n` individuals.
    """
    check_keys(key)
    params = jnp.asarray(params, float)
    if params.ndim != 2 or params.shape[1] != model.num_params:
        raise ValueError(f"`params` must have shape (n, {model.num_params}) for {model.param_names}; got {params.shape}.")
    n = params.shape[0]
    k_design, k_noise = jax.random.split(key)
    if designs is None:
        designs = model.sample_designs(k_design, n)
    obs = np.asarray(_simulate_given(model, jax.random.split(k_noise, n), params, designs))
    ids = normalise_ids(ids, n)
    mask = np.asarray(designs["mask"], bool)
    check_observations(np.asarray(designs["times"], float), obs, mask, ids=ids)
    return dataset_from_designs(model, designs, obs, ids=ids, covariates=covariates)


# ---------------------------------------------------------------------- individual parameters
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
