"""The surrogate's inputs: draws φ_ij ~ q(φ | y_i) taken once per data set, their sufficient
statistics, and the extra draws of the individuals that need more (see `with_extra`)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._buffers import write_rows
from ._sharding import shard_individuals

__all__ = ["SurrogateDraws", "draws_from_values", "prepare_draws", "wants_cross_products"]


def _statistics(values, centre, cross: bool):
    """`[d, d², (d_a d_b, a < b)]` of the draws centred at `centre` `(N, k)`."""
    d = values - centre[:, None, :]
    parts = [d, d * d]
    if cross:
        a, b = np.triu_indices(values.shape[-1], k=1)
        parts.append(d[..., a] * d[..., b])
    return jnp.concatenate(parts, -1)


def _selector(index, size: int):
    """A slice as a static `(start, stop, step)` (basic indexing: a slice of the arrays, no
    gather over all N·M·C statistics), anything else as an int array of positions."""
    if isinstance(index, slice):
        return index.indices(size)
    return jnp.asarray(np.atleast_1d(np.arange(size)[index]))


@eqx.filter_jit
def _picked(per_draw, per_individual, individuals, draws):
    """`SurrogateDraws.subset`'s selection, in one compiled program (indexed field by field,
    eagerly, each was a program of its own)."""
    rows = (lambda x: x[slice(*individuals)]) if isinstance(individuals, tuple) else (lambda x: x[individuals])
    cols = (lambda x: x[:, slice(*draws)]) if isinstance(draws, tuple) else (lambda x: x[:, draws])
    return jax.tree.map(lambda x: cols(rows(x)), per_draw), jax.tree.map(rows, per_individual)


class SurrogateDraws(eqx.Module):
    """Draws φ_ij ~ q(φ | y_i) taken once per data set, with what the surrogate needs of them.

    **Fields:**

    - `values`: `(N, M, k)` draws, last axis in `param_names` order, stored in float32 (rounded once
      by `draws_from_values`): every other field is computed in float64 from exactly these
      values. Cast them to float64 before evaluating densities of your own on them.
    - `log_prior`: `(N, M)` training-prior log-density of each draw.
    - `bandwidth`: `(N, k)` kernel widths used for parameters without a random effect
      (a `Delta` population distribution): Scott's rule on each individual's draws.
    - `centre`: `(N, k)` each individual's mean draw c_i.
    - `stats`: `(N, M, C)` sufficient statistics of the centred draws d_ij = φ_ij - c_i:
      the `k` values d, the `k` squares d², then (only when built with `cross=True`) the
      `k(k-1)/2` cross products d_a d_b, a < b. Gaussian population distributions are
      evaluated through them as one batched matrix-vector product (the fast path).
    - `param_names`: names of the last axis.
    - `fixed_names`, `fixed_point`: parameters without random effect whose likelihood is
      expanded around `fixed_point` `(N, F)` (the *likelihood treatment*, see
      [`expand_fixed`][nlme_ppl.inference.expand_fixed]): `stats` then ends with F + F + F(F-1)/2
      columns (the gradient, the Hessian's diagonal and its entries above the diagonal, of
      log p(y_i | φ) in those parameters at `fixed_point`, per draw), and `log_prior` holds the adjusted
      per-draw terms. Empty (the default): such parameters get the kernel treatment.
    - `extra`, `extra_index`: more draws for some individuals (see
      [`with_extra`][nlme_ppl.SurrogateDraws.with_extra]): `extra` holds `(E, M_e, ·)` draws
      of the individuals at rows `extra_index` `(E,)`, centred at their `centre`, so that
      individual `extra_index[e]` has M + M_e draws in all. `None`: every individual has M.
    """

    values: Float[Array, "individuals draws k"]
    log_prior: Float[Array, "individuals draws"]
    bandwidth: Float[Array, "individuals k"]
    centre: Float[Array, "individuals k"]
    stats: Float[Array, "individuals draws columns"]
    param_names: tuple[str, ...] = eqx.field(static=True)
    fixed_names: tuple[str, ...] = eqx.field(static=True, default=())
    fixed_point: Float[Array, "individuals F"] | None = None
    extra: SurrogateDraws | None = None
    extra_index: Int[Array, " raised"] | None = None

    @property
    def num_individuals(self) -> int:
        return self.values.shape[0]

    @property
    def num_draws(self) -> int:
        """M, the draws every individual has (more for those with `extra` draws)."""
        return self.values.shape[1]

    @property
    def num_params(self) -> int:
        return self.values.shape[2]

    @property
    def num_fixed_columns(self) -> int:
        """The columns of `stats` that hold the likelihood expansion (0 without one)."""
        f = len(self.fixed_names)
        return 2 * f + f * (f - 1) // 2

    @property
    def has_cross(self) -> bool:
        k = self.num_params
        return self.stats.shape[-1] - self.num_fixed_columns == 2 * k + k * (k - 1) // 2

    def draws_per_individual(self) -> Float[Array, " individuals"]:
        """`(N,)` draws of each individual: M, plus its extra draws."""
        counts = jnp.full(self.num_individuals, float(self.num_draws))
        return counts if self.extra is None else counts.at[self.extra_index].add(float(self.extra.num_draws))

    def subset(self, individuals=slice(None), draws=slice(None)) -> SurrogateDraws:
        """These draws restricted to some individuals and/or draws (index arrays or slices);
        `centre` and `bandwidth` are kept as computed from all draws. Extra draws follow their
        individuals when all draws are kept, and are dropped by a selection of draws."""
        ind = _selector(individuals, self.num_individuals)
        extra = index = None
        if self.extra is not None and isinstance(draws, slice) and draws == slice(None):
            lookup = np.full(self.num_individuals, -1)
            lookup[np.asarray(self.extra_index)] = np.arange(self.extra.num_individuals)
            rows = lookup[individuals] if isinstance(individuals, slice) else lookup[np.asarray(ind)]
            keep = np.flatnonzero(rows >= 0)
            if keep.size:
                extra, index = self.extra.subset(rows[keep]), jnp.asarray(keep)
        (values, log_prior, stats), (bandwidth, centre, point) = _picked(
            (self.values, self.log_prior, self.stats), (self.bandwidth, self.centre, self.fixed_point), ind, _selector(draws, self.num_draws)
        )  # fmt: skip
        return SurrogateDraws(values, log_prior, bandwidth, centre, stats, self.param_names, self.fixed_names, point, extra, index)

    def with_cross_products(self) -> SurrogateDraws:
        """These draws with the cross products d_a d_b appended to `stats` (needed by the fast
        path of correlated (`MultivariateNormal`) population distributions)."""
        if self.has_cross:
            return self
        d = self.stats[..., : self.num_params]  # the centred draws, as stored
        a, b = np.triu_indices(self.num_params, k=1)
        split = self.stats.shape[-1] - self.num_fixed_columns  # the cross products go before an expansion's columns
        stats = jnp.concatenate([self.stats[..., :split], d[..., a] * d[..., b], self.stats[..., split:]], axis=-1)
        out = eqx.tree_at(lambda x: x.stats, self, stats)
        if self.extra is not None:
            out = eqx.tree_at(lambda x: x.extra, out, self.extra.with_cross_products())
        return out

    def with_extra(self, values: Float[Array, "raised extra k"], index, model) -> SurrogateDraws:
        """These draws with `values` `(E, M_e, k)` more draws of the individuals at rows `index`
        `(E,)`, from the same posterior as the others.

        Their statistics are centred at those individuals' `centre`, so the surrogate adds them
        to the same sums: individual `index[e]`'s term becomes
        `logsumexp` over its M + M_e draws `- log(M + M_e)`. Draws already expanded by the
        likelihood treatment are refused: add the extra draws first, then expand."""
        if self.fixed_names:
            raise ValueError("these draws carry the likelihood treatment already: add extra draws to the draws before expanding them.")
        if self.extra is not None:
            raise ValueError("these draws have extra draws already; add all of them in one call.")
        index = np.asarray(index, dtype=int).reshape(-1)
        values = jnp.asarray(values, jnp.float64)
        if values.ndim != 3 or values.shape[0] != index.size or values.shape[2] != self.num_params:
            raise ValueError(f"extra draws must have shape ({index.size}, M_e, {self.num_params}); got {values.shape}.")
        if index.size and (index.min() < 0 or index.max() >= self.num_individuals or np.unique(index).size != index.size):
            raise ValueError(f"`index` must hold distinct rows in [0, {self.num_individuals}); got {index.tolist()}.")
        stored, log_prior, stats, bandwidth, centre = _extra_inputs(values, model, self.bandwidth, self.centre, jnp.asarray(index), self.has_cross)
        if not bool(jnp.all(jnp.isfinite(stored))):
            raise ValueError("the extra draws are not all finite (in float32, as the draws are stored).")
        if index.size == 0:
            return self
        extra = SurrogateDraws(stored, log_prior, bandwidth, centre, stats, self.param_names)
        return eqx.tree_at(lambda x: (x.extra, x.extra_index), self, (extra, jnp.asarray(index)), is_leaf=lambda x: x is None)


@eqx.filter_jit
def _extra_inputs(values, model, bandwidth, centre, index, cross: bool) -> tuple:
    """`with_extra`'s stored values, training-prior density and statistics of the extra draws,
    with their individuals' bandwidth and centre, in one compiled program."""
    stored, values = _rounded(values)
    bandwidth, centre = bandwidth[index], centre[index]
    return stored, model.prior_log_prob(values), _statistics(values, centre, cross), bandwidth, centre


def wants_cross_products(population) -> bool:
    """Whether `population` has a correlated Gaussian site that the fast path evaluates through
    cross products (the built-in Gaussian population with `covariance="full"`)."""
    return getattr(population, "covariance", None) == "full" and len(getattr(population, "random", ())) > 1


def prepare_draws(posterior, data, key, *, num_draws: int = 100, num_fixed: int = 2, cross: bool = False) -> SurrogateDraws:
    """Sample `num_draws` draws per individual from `posterior` and precompute the surrogate's inputs.

    `num_fixed` is the dimension used in Scott's bandwidth rule M^(-1/(d+4)) for parameters
    without random effect (the bandwidth only matters for those). `cross=True` also stores
    the cross products used by correlated Gaussian populations (`covariance="full"`).
    """
    values = jnp.asarray(posterior.sample(data, key, num_draws=num_draws))
    # rounded to float32 as they will be stored, before the statistics are built: the float64
    # draws are freed here, not held beside the statistics (4.8 GB at N = 10⁶, M = 100, k = 6)
    values = values.astype(jnp.float32)
    return draws_from_values(values, posterior.model, num_fixed=num_fixed, cross=cross)


def draws_from_values(values, model, *, num_fixed: int = 2, cross: bool = False) -> SurrogateDraws:
    """[`SurrogateDraws`][nlme_ppl.SurrogateDraws] from given `(N, M, k)` draws of `model`'s parameters.

    The draws are rounded to float32 (relative change at most 6e-8, below the float32 arithmetic of
    the estimators that drew them) and stored so, at half the memory (2.4 GB of 4.8 at N = 10⁶,
    M = 100, k = 6). Everything else (the training-prior density, the centre, the bandwidth and
    the sufficient statistics) is computed in float64 from exactly the stored values, so the
    surrogate's fast path and a direct density at `values` agree to float64 rounding."""
    values = jnp.asarray(values).astype(jnp.float32)  # as stored (no copy when given in float32)
    n, m, k = values.shape
    if k != model.num_params:
        raise ValueError(f"draws have {k} parameters but model {model.name!r} has {model.num_params}: {model.param_names}.")
    finite = jnp.all(jnp.isfinite(values), axis=(1, 2))
    if not bool(jnp.all(finite)):
        bad = int(jnp.argmin(finite))
        raise ValueError(f"the estimator returned non-finite draws (or draws beyond float32's range) for individual at row {bad}; check its data.")
    if n > STATS_BLOCK:
        parts = _blocked(values, model, num_fixed, cross)
    else:
        values = shard_individuals(values, n)  # split over the devices (nlme_ppl._sharding): what follows runs on each
        parts = _inputs(values, model, num_fixed, cross)
    return shard_individuals(SurrogateDraws(*parts, model.param_names), n)


def _rounded(values) -> tuple:
    """`values` in float32, as stored, and those same values in float64, for the computations."""
    stored = values.astype(jnp.float32)
    return stored, stored.astype(jnp.float64)


#: Individuals per block of `draws_from_values` beyond which the statistics are computed block
#: by block into preallocated arrays: at N = 10⁶, M = 100, k = 6 the unblocked computation held
#: the centred draws, their squares and the concatenated statistics at once (24 GB).
STATS_BLOCK = 20_000


@eqx.filter_jit
def _inputs(values, model, num_fixed: int, cross: bool) -> tuple:
    """`(values, log_prior, bandwidth, centre, stats)` of `(n, M, k)` draws (each individual on
    its own), the values rounded to float32 and the rest computed from them (see `_rounded`).
    One compiled program (eagerly, the training prior's density alone was a dozen)."""
    stored, values = _rounded(values)
    sd = jnp.std(values, axis=1)
    bandwidth = sd * values.shape[1] ** (-1.0 / (num_fixed + 4))
    centre = jnp.mean(values, axis=1)
    return stored, model.prior_log_prob(values), bandwidth, centre, _statistics(values, centre, cross)


def _blocked(values, model, num_fixed: int, cross: bool) -> tuple:
    """`_inputs` block by block of `STATS_BLOCK` individuals, into arrays allocated once: the
    temporaries are one block's, and the result equals the unblocked one (every quantity is per
    individual). The last block is shifted back to end at row N (its overlap is recomputed
    identically), so every block has one shape. The float32 `values` are stored as they are:
    no second copy."""
    n = values.shape[0]
    parts = lambda v: _inputs(v, model, num_fixed, cross)[1:]  # noqa: E731
    shapes = jax.eval_shape(parts, jax.ShapeDtypeStruct((STATS_BLOCK, *values.shape[1:]), values.dtype))
    buffers = tuple(jnp.zeros((n, *s.shape[1:]), s.dtype) for s in shapes)
    for start in range(0, n, STATS_BLOCK):
        start = min(start, n - STATS_BLOCK)
        buffers = write_rows(buffers, parts(values[start : start + STATS_BLOCK]), start)
    return (values, *buffers)
