"""Prior-predictive simulation of an individual model: vectorised, chunked, seeded."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jaxtyping import Array, Float
from tqdm.auto import tqdm

from ._validate import check_keys, positive_int
from .data import Dataset, Doses, censored_in, obs_cmt_in
from .models import IndividualModel

__all__ = ["Simulations", "simulate", "simulate_data"]


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


@eqx.filter_jit
def _simulate_chunk(model: IndividualModel, key, num: int):
    k_design, k_sim = jax.random.split(key)
    designs = model.sample_designs(k_design, num)
    params, obs = jax.vmap(model.simulate_one)(jax.random.split(k_sim, num), designs)
    return params, obs, designs


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
    10,000 for most models). Simulations with a non-finite parameter or
    observation are dropped and counted in `num_dropped`; more than `max_dropped_fraction`
    dropped raises a `RuntimeError` (the simulator or the prior needs fixing).

    **Returns:** a [`Simulations`][nlme_ppl.Simulations] with `params` of shape `(n, k)`.
    """
    check_keys(key)
    num_simulations = positive_int(num_simulations, name="num_simulations")
    chunk_size = positive_int(model.simulation_chunk if chunk_size is None else chunk_size, name="chunk_size")
    parts = []
    sizes = [min(chunk_size, num_simulations - s) for s in range(0, num_simulations, chunk_size)]
    keys = jax.random.split(key, len(sizes))
    with tqdm(total=num_simulations, desc=f"simulate {model.name}", disable=not progress, unit="sim") as bar:
        for k, n in zip(keys, sizes):
            params, obs, designs = _simulate_chunk(model, k, n)
            parts.append(jax.device_get((params, obs, designs)))
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
    data = Dataset._from_designs(designs, obs, ok, covariates=[c for c, *_ in model.covariates])
    return Simulations(jnp.asarray(params[ok]), data, model.param_names, dropped)


@eqx.filter_jit
def _simulate_given(model: IndividualModel, keys, params, designs):
    def one(key, phi, design):
        cond = numpyro.handlers.condition(model.fn, data={n: phi[i] for i, n in enumerate(model.param_names)})
        tr = numpyro.handlers.trace(numpyro.handlers.seed(cond, key)).get_trace(design)
        return tr[model.obs_site]["value"]

    return jax.vmap(one)(keys, params, designs)


def simulate_data(model: IndividualModel, params: Float[Array, "n k"], key, *, designs=None, ids=None, covariates=None) -> Dataset:
    """Simulate one data set per row of `params` (individual parameters, columns in `param_names`).

    `designs` is a batched design (default: the model's design for everyone). Use it to make
    synthetic populations from a known truth. `covariates` (name -> `(n,)` values) are kept in
    the data; the design entries of the covariates the simulator reads (`model.covariates`)
    are added to them.
    """
    check_keys(key)
    params = jnp.asarray(params, float)
    if params.ndim != 2 or params.shape[1] != model.num_params:
        raise ValueError(f"`params` must have shape (n, {model.num_params}) for {model.param_names}; got {params.shape}.")
    n = params.shape[0]
    if designs is None:
        designs = model.sample_designs(key, n)
    obs = _simulate_given(model, jax.random.split(key, n), params, designs)
    mask = np.asarray(designs["mask"], bool)
    covariates = {**{c: np.asarray(designs[c]) for c, *_ in model.covariates}, **(covariates or {})}
    return Dataset.from_arrays(
        np.asarray(designs["times"]), np.asarray(obs), mask=mask, ids=ids, covariates=covariates, doses=Doses.from_design(designs),
        censored=censored_in(designs, obs),
        obs_cmt=obs_cmt_in(designs),
    )
