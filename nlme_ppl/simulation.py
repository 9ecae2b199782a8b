"""Simulation: the prior predictive of an individual model (vectorised, chunked, seeded),
data sets from a known truth, simulator designs as a `Dataset`, and individual parameters
drawn from a population program.

Keys: simulation `i` of [`simulate`][nlme_ppl.simulate] uses `jax.random.fold_in(key, i)`,
so the same key gives the same simulations for every `chunk_size`, and a longer run starts
with the simulations of a shorter one. The chunks are independent tasks: with `client=` (a
`dask.distributed.Client`) they run on a cluster and give the simulations of a local run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jaxtyping import Array, Bool, Float, PyTree
from tqdm.auto import tqdm

from ._validate import check_covariates, check_keys, check_observations, normalise_ids, positive_int
from .data import Dataset, Doses
from .models import IndividualModel
from ._distributed import _callable_task, _check_client, _run
from ._population_draws import _Individuals, simulate_population

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


#: Simulations per call of a `simulator` callable by default; each call has its own random stream.
_CALL_BLOCK = 1_000
#: Block `b` of a `simulator` callable draws its noise from `fold_in(fold_in(key, b * block_size), _NOISE)`.
_NOISE = 0x6E6F6973


#: A `simulator` callable's φ and designs are drawn in jitted calls of this many rows (one compilation).
_DRAW = 1024


@eqx.filter_jit
def _draw_rows(model: IndividualModel, key, start):
    """Designs, φ and noise seeds of simulations `start, ..., start + _DRAW - 1` for a `simulator`
    callable: the design from the key that `_simulate_chunk` gives it, φ from the training prior,
    and the seed words of a block that would start at the row."""

    def one(i):
        k_design, k_sim = jax.random.split(jax.random.fold_in(key, i))
        design = jax.tree.map(lambda x: x[0], model.sample_designs(k_design, 1))
        seed = jax.random.key_data(jax.random.fold_in(jax.random.fold_in(key, i), _NOISE))
        return model.prior_sample(k_sim), design, seed

    index = (start + jnp.arange(_DRAW)).reshape(-1, _BLOCK)
    return jax.tree.map(lambda x: x.reshape(_DRAW, *x.shape[2:]), jax.lax.map(jax.vmap(one), index))


#: NumPyro's effect-handler stack is one per process, not per thread: worker threads of one
#: process (a `LocalCluster(processes=False)`) trace the program one at a time.
_TRACE_LOCK = threading.Lock()


def _program_task(model: IndividualModel, key, start: int, width: int, x64: bool):
    """A chunk of the NumPyro program's simulations (run locally or on a dask worker, in the
    caller's precision)."""
    with _TRACE_LOCK:
        if x64 == bool(jax.config.read("jax_enable_x64")):
            return jax.device_get(_simulate_chunk(model, key, jnp.asarray(start), width))
        with jax.enable_x64(x64):  # a worker started in the other precision
            return jax.device_get(_simulate_chunk(model, key, jnp.asarray(start), width))


def simulate(
    model: IndividualModel,
    key,
    *,
    num_simulations: int,
    chunk_size: int | None = None,
    max_dropped_fraction: float = 0.01,
    progress: bool = True,
    simulator: Callable | None = None,
    block_size: int | None = None,
    client=None,
) -> Simulations:
    """Simulate `num_simulations` pairs (φ, y) from the prior predictive of `model`.

    Runs in chunks of `chunk_size` simulations (default: the model's `simulation_chunk`,
    10,000 for most models). Simulation `i` (its design, φ and noise) comes from the key
    `jax.random.fold_in(key, i)`, so the result does not depend on `chunk_size` or on where
    the chunks run, and the first `n` simulations of a longer run are those of a run of `n`.

    **Arguments:**

    - `model`, `key`, `num_simulations`: what to simulate, from which key, how many.
    - `chunk_size`: simulations per jitted call (the model's program) or per task (a
      `simulator` callable, rounded up to a multiple of `block_size`).
    - `max_dropped_fraction`: simulations with a non-finite parameter or observation are
      dropped and counted in `num_dropped`; more than this fraction dropped raises a
      `RuntimeError` (the simulator or the prior needs fixing).
    - `progress`: show a progress bar.
    - `simulator`: optional Python callable `simulator(params, design, rng) -> obs` that
      simulates the observations in place of the model's NumPyro program (a torch simulator
      through [`torch_simulator`][nlme_ppl.backends.sbi.torch_simulator], NumPy code, a
      wrapped external program). It receives `params` `(b, k)` float64 in `param_names`
      order, `design` a dict of `(b, ...)` NumPy arrays (the model's design entries, drawn
      from its design prior) and `rng` a `numpy.random.Generator`, and returns the `(b, T)`
      observations. φ is drawn from the training prior and the designs as for the program.
    - `block_size`: rows per call of `simulator` (default 1,000). Each call draws from its own
      stream, seeded by `fold_in(fold_in(key, first row), ...)`: the simulations depend on the
      key and `block_size`, not on `chunk_size` or the cluster.
    - `client`: optional `dask.distributed.Client`. The chunks then run as tasks on its
      workers (sent with dask's cloudpickle; the workers need nlme_ppl, and torch for torch
      simulators), and give the same simulations as a local run. See the guide page
      *Simulation on a cluster*.

    **Returns:** a [`Simulations`][nlme_ppl.Simulations] with `params` of shape `(n, k)`.
    """
    check_keys(key)
    num_simulations = positive_int(num_simulations, name="num_simulations")
    chunk_size = positive_int(model.simulation_chunk if chunk_size is None else chunk_size, name="chunk_size")
    client = _check_client(client)
    if simulator is not None and not callable(simulator):
        raise TypeError(f"`simulator` must be a callable `(params, design, rng) -> obs`; got {type(simulator).__name__}.")
    if simulator is None and block_size is not None:
        raise ValueError("`block_size` applies to a `simulator` callable; the model's program runs in fixed blocks of 64.")
    with tqdm(total=num_simulations, desc=f"simulate {model.name}", disable=not progress, unit="sim") as bar:
        if simulator is None:
            params, obs, designs = _simulate_program(model, key, num_simulations, chunk_size, client, bar)
        else:
            block = positive_int(_CALL_BLOCK if block_size is None else block_size, name="block_size")
            params, obs, designs = _simulate_callable(model, key, num_simulations, chunk_size, block, simulator, client, bar)
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


def _simulate_program(model, key, num, chunk_size, client, bar):
    """(params, obs, designs) of the model's NumPyro program, chunk by chunk."""
    x64 = bool(jax.config.read("jax_enable_x64"))
    tasks = []
    for start in range(0, num, chunk_size):
        n = min(chunk_size, num - start)
        tasks.append((_program_task, (model, key, start, -(-n // _BLOCK) * _BLOCK, x64), n))
    parts = [jax.tree.map(lambda x, n=n: x[:n], chunk) for chunk, (_, _, n) in zip(_run(tasks, client, bar), tasks)]
    params, obs = (np.concatenate(x) for x in list(zip(*parts))[:2])
    designs = jax.tree.map(lambda *x: np.concatenate(x), *[p[2] for p in parts])
    return params, obs, designs


def _simulate_callable(model, key, num, chunk_size, block, simulator, client, bar):
    """(params, obs, designs) of a `simulator` callable: φ and designs drawn here in JAX, the
    observations in blocks of `block` rows, in tasks of whole blocks."""
    total = -(-num // block) * block  # whole blocks, so the last one has its full stream
    per_task = -(-chunk_size // block) * block
    drawn = [jax.device_get(_draw_rows(model, key, jnp.asarray(s))) for s in range(0, total, _DRAW)]
    params = np.concatenate([d[0] for d in drawn]).astype(np.float64)[:total]
    designs = {k: np.concatenate([d[1][k] for d in drawn])[:total] for k in drawn[0][1]}
    seeds = np.concatenate([d[2] for d in drawn])[:total:block]  # the seed of each block's first row
    tasks = []
    for start in range(0, total, per_task):
        rows = slice(start, start + per_task)
        task_designs = {k: v[rows] for k, v in designs.items()}
        tasks.append((_callable_task, (simulator, params[rows], task_designs, seeds[start // block : (start + per_task) // block], block),
                      min(per_task, max(num - start, 0))))
    obs = np.concatenate(_run(tasks, client, bar))[:num]
    return params[:num], obs, {k: v[:num] for k, v in designs.items()}


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
