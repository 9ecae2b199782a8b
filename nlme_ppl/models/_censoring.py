"""Left censoring at a limit of quantification, for the observed site of an individual model.

NONMEM's M3 method: an observation below the lower limit of quantification (LLOQ) is
recorded as the limit and flagged, and contributes log P(y < LLOQ | φ) to the likelihood
instead of the density. In a generative model this is a mixed distribution: the point mass
P(y < LLOQ) sits at the limit and the density above it is unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Float
from numpyro.distributions import constraints

__all__ = ["LeftCensored"]


class LeftCensored(dist.Distribution):
    """`base` left-censored at `lloq`: draws below the limit are recorded as the limit.

    - `sample`: a draw y of `base`, replaced by `lloq` where y < `lloq`;
    - `log_prob(v)`: log F(`lloq`) where v ≤ `lloq` (a censored observation, the M3
      contribution), and the density log f(v) above it, computed by NumPyro's
      `LeftCensoredDistribution`.

    `lloq = -inf` means no limit (the plain `base`). `base` needs a `cdf` (e.g. `Normal`).

    **Arguments:**

    - `base`: the distribution of the uncensored measurement.
    - `lloq`: the lower limit of quantification, broadcastable to `base`'s batch shape.

    Use it at the observed site of a model whose design carries `"lloq"` (one limit per
    observation; the built-in PK models with `censoring=True`):

        numpyro.sample("obs", LeftCensored(dist.Normal(conc, sd), design["lloq"]).mask(mask).to_event(1), obs=obs)

    For data, `IndividualModel.designs_from_data` sets `lloq` to the recorded value of each
    censored observation and to `-inf` elsewhere, so the flags in `Dataset.censored` decide.
    """

    arg_constraints = {"lloq": constraints.dependent(is_discrete=False, event_dim=0)}  # -inf (no limit) is allowed
    support = constraints.real
    pytree_data_fields = ("base", "lloq")

    def __init__(self, base: dist.Distribution, lloq: ArrayLike, *, validate_args=None):
        if base.event_shape != ():
            raise ValueError(f"LeftCensored needs a univariate base distribution; got event shape {base.event_shape}.")
        if not hasattr(base, "cdf"):
            raise TypeError(f"{type(base).__name__} has no `cdf`; censoring needs the distribution function.")
        batch_shape = jax.lax.broadcast_shapes(base.batch_shape, jnp.shape(lloq))
        self.base = base.expand(batch_shape) if base.batch_shape != batch_shape else base
        self.lloq = jnp.broadcast_to(jnp.asarray(lloq, float), batch_shape)
        super().__init__(batch_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()) -> Float[Array, "..."]:
        y = self.base.sample(key, sample_shape)
        return jnp.where(y < self.lloq, self.lloq, y)

    def log_prob(self, value: ArrayLike) -> Float[Array, "..."]:
        value = jnp.asarray(value)
        censored = value <= self.lloq
        return dist.LeftCensoredDistribution(self.base, censored=censored).log_prob(jnp.where(censored, self.lloq, value))
