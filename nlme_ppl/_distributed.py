"""Running simulation tasks here or on a Dask cluster (`simulate(..., client=)`): the task of a
`simulator` callable, the client check, and the runner. Nothing here imports dask: a client is
recognised by its methods."""

from __future__ import annotations

import numpy as np

__all__: list[str] = []


def _callable_task(simulator, params: np.ndarray, designs: dict, seeds: np.ndarray, block_size: int) -> np.ndarray:
    """A chunk of a `simulator` callable's observations: one call per block of `block_size`
    rows, each with a `numpy.random.Generator` seeded by its block's words (needs no JAX)."""
    out = []
    for j, seed in enumerate(seeds):
        rows = slice(j * block_size, (j + 1) * block_size)
        design = {k: v[rows] for k, v in designs.items()}
        obs = np.asarray(simulator(params[rows], design, np.random.default_rng([int(w) for w in seed])), dtype=float)
        if obs.shape != design["times"].shape:
            raise ValueError(
                f"the simulator {getattr(simulator, '__name__', simulator)!r} returned shape {obs.shape} for "
                f"{block_size} designs with times of shape {design['times'].shape}; it must return one "
                "observation per time, of that shape."
            )
        out.append(obs)
    return np.concatenate(out)


def _check_client(client):
    """`client` must be a running `dask.distributed.Client` (anything with its `submit`)."""
    if client is None:
        return None
    if not callable(getattr(client, "submit", None)) or not callable(getattr(client, "gather", None)):
        hint = (" That is a cluster: pass `dask.distributed.Client(cluster)`."
                if hasattr(client, "scheduler_address") else
                " Create one with `from dask.distributed import Client; client = Client('tcp://scheduler:8786')`.")
        raise TypeError(f"`client` must be a dask.distributed.Client; got {type(client).__name__}.{hint}")
    if getattr(client, "status", "running") in ("closing", "closed"):
        raise ValueError("`client` is closed; pass a connected dask.distributed.Client (or `client=None` to simulate here).")
    return client


def _run(tasks, client, bar) -> list:
    """Run `(function, args, size)` tasks here in order, or on the cluster of `client` (all
    submitted at once, gathered in order). The results are the same either way."""
    if client is None:
        results = []
        for fn, args, size in tasks:
            results.append(fn(*args))
            bar.update(size)
        return results
    futures = [client.submit(fn, *args, pure=False) for fn, args, _ in tasks]
    try:
        results = []
        for future, (_, _, size) in zip(futures, tasks):
            results.append(future.result())
            bar.update(size)
        return results
    finally:
        client.cancel(futures)
