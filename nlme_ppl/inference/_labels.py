"""Names of population parameters: `mean[delta]`, `sd[delta]`, `corr[delta,gamma]`."""

from __future__ import annotations

import jax
import numpy as np


def site_coords(population, name: str, shape: tuple[int, ...]) -> list[tuple[str, ...]] | None:
    """Labels for each axis of site `name`, from `population.coords` when it has them."""
    coords = getattr(population, "coords", {}) or {}
    c = coords.get(name)
    if c is None:
        return None
    if len(shape) == 1 and len(c) == shape[0] and isinstance(c[0], str):
        return [tuple(c)]
    if len(shape) == 2 and len(c) == 2 and all(len(ax) == s for ax, s in zip(c, shape)):
        return [tuple(ax) for ax in c]
    return None


def flatten_params(population, params: dict) -> dict:
    """One scalar per labelled entry; `corr` keeps its upper triangle; Cholesky factors are dropped.

    Works on traced values (the scalars stay JAX arrays), so it can sit inside `jax.jacfwd`.
    """
    out: dict = {}
    for name, value in params.items():
        if name.endswith("_chol"):
            continue
        # concrete values are indexed in NumPy (eagerly, each JAX index was a compiled program)
        value = value if isinstance(value, jax.Array) else np.asarray(value)
        labels = site_coords(population, name, value.shape)
        if value.ndim == 0:
            out[name] = value
        elif value.ndim == 1:
            lab = labels[0] if labels else [str(i) for i in range(value.shape[0])]
            out.update({f"{name}[{lab[i]}]": value[i] for i in range(value.shape[0])})
        elif value.ndim == 2 and name == "corr":
            lab = labels[0] if labels else [str(i) for i in range(value.shape[0])]
            for i in range(value.shape[0]):
                for j in range(i + 1, value.shape[1]):
                    out[f"corr[{lab[i]},{lab[j]}]"] = value[i, j]
        else:
            for idx in np.ndindex(value.shape):
                out[f"{name}[{','.join(map(str, idx))}]"] = value[idx]
    return out


def arviz_dims(population, params: dict) -> tuple[dict[str, list[str]], dict[str, list]]:
    """`dims` and `coords` for ArviZ from the population's labels."""
    dims, coords = {}, {}
    for name, value in params.items():
        shape = np.shape(value)
        labels = site_coords(population, name, shape)
        if not labels:
            continue
        if len(labels) == 1:
            dim = "param" if name == "mean" else f"{name}_param"
            dims[name], coords[dim] = [dim], list(labels[0])
        else:
            dims[name] = ["corr_param", "corr_param_bis"]
            coords["corr_param"], coords["corr_param_bis"] = list(labels[0]), list(labels[1])
    return dims, coords
