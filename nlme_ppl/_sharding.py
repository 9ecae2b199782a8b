"""Several devices: the individuals shared out over every device of `jax.devices()`.

The surrogate is a sum over individuals of terms that each read only that individual's draws,
so the draws, their sufficient statistics and the data are split along the individual axis
(a 1-D mesh of all devices, `jax.sharding.NamedSharding`), and the surrogate's fused kernel
(`nlme_ppl._lse.lse_linear`) runs its loop on each device's own individuals
(`jax.shard_map`). Only the sums over individuals cross devices.

Nothing is padded: N individuals are shared out only when the device count divides N and every
device gets at least `MIN_PER_DEVICE` of them. Otherwise everything stays on one device as
before, and the result is the same either way up to the order of the sums over individuals.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["INDIVIDUALS", "MIN_PER_DEVICE", "individual_sharding", "inside_mapped_transform", "on_one_device", "replicated", "shard_individuals"]

#: The name of the mesh axis that the individuals are split along.
INDIVIDUALS = "individuals"
#: The fewest individuals a device gets (one block of `lse_linear`); below, nothing is split.
MIN_PER_DEVICE = 16


@functools.lru_cache(maxsize=8)
def _mesh(devices: tuple) -> Mesh:
    return Mesh(np.array(devices, dtype=object), (INDIVIDUALS,))


def individual_sharding(n: int) -> NamedSharding | None:
    """The sharding of arrays whose leading axis holds `n` individuals: split evenly over a 1-D
    mesh of all of `jax.devices()`.

    **Returns:** a `NamedSharding` with `PartitionSpec("individuals")`, or `None` (keep the
    arrays where they are) when there is one device, when the device count does not divide
    `n`, or when a device would get fewer than `MIN_PER_DEVICE` individuals.
    """
    devices = tuple(jax.devices())
    d = len(devices)
    if d < 2 or n % d != 0 or n < d * MIN_PER_DEVICE:
        return None
    return NamedSharding(_mesh(devices), PartitionSpec(INDIVIDUALS))


def replicated(sharding: NamedSharding) -> NamedSharding:
    """A full copy on every device of `sharding`'s mesh."""
    return NamedSharding(sharding.mesh, PartitionSpec())


def inside_mapped_transform() -> bool:
    """Whether this is traced inside a transform that owns the devices already (`pmap`, as
    NumPyro's parallel chains use, or a `shard_map`): there the individuals are not split again."""
    return bool(jax.sharding.get_abstract_mesh().manual_axes)


def on_one_device(tree):
    """`tree` with its arrays that are split over several devices copied to the first device.

    For code traced inside `pmap` (NumPyro's parallel chains, one chain per device), which
    refuses to index arrays placed on a mesh other than its own; call it there, where
    [`inside_mapped_transform`][nlme_ppl._sharding.inside_mapped_transform] is true."""

    def place(x):
        if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and len(x.sharding.device_set) > 1:
            return jax.device_put(x, jax.devices()[0])
        return x

    return jax.tree.map(place, tree)


def shard_individuals(tree, n: int):
    """`tree` with every array leaf whose leading axis has length `n` split over the devices
    along that axis ([`individual_sharding`][nlme_ppl._sharding.individual_sharding]), and
    every other array leaf copied to each device.

    Returns `tree` unchanged when `individual_sharding(n)` is `None` (one device, or `n` not
    shared out) and inside `jit` (tracers are left to the compiler). NumPy leaves become JAX
    arrays when shared out; non-array leaves are kept.
    """
    sharding = individual_sharding(n)
    if sharding is None:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return tree
    everywhere = replicated(sharding)

    def place(x):
        if not isinstance(x, (jax.Array, np.ndarray)) or not hasattr(x, "shape"):
            return x
        return jax.device_put(x, sharding if x.ndim and x.shape[0] == n else everywhere)

    return jax.tree.unflatten(treedef, [place(x) for x in leaves])
