"""Arrays filled block by block in place, so that a large result is allocated once (the
estimator's draws and the surrogate's statistics at N = 10⁶)."""

from __future__ import annotations

import functools

import jax

__all__ = ["take_rows", "write_rows"]


@functools.partial(jax.jit, donate_argnums=0)
def write_rows(buffers, blocks, start):
    """`buffers` (an array or a tree of arrays) with `blocks` written at row `start` along the
    leading axis, in place: the buffers are donated, so a loop over blocks holds one copy."""
    return jax.tree.map(lambda b, x: jax.lax.dynamic_update_slice_in_dim(b, x, start, 0), buffers, blocks)


@jax.jit
def take_rows(tree, rows):
    """The `rows` (an int array) of every array in `tree`, along the leading axis, in one
    compiled gather. Indexed one by one, eagerly, each array's gather was a program of its own
    (a fit's subsets of its data set compiled about 40 of them, in every new process)."""
    return jax.tree.map(lambda x: x[rows], tree)
