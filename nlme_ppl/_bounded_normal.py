"""A Normal prior truncated to per-component bounds, some of them infinite.

The coefficient site `beta` of a Gaussian population mixes unbounded coefficients with those of
linear covariate forms, each bounded on one or both sides. NumPyro's `interval` cannot hold an
infinite bound (its sigmoid transform turns it into NaN), so this support has its own
bijection, component by component: lower + (upper − lower)·sigmoid(z) where both bounds are
finite, lower + exp(z) or upper − exp(−z) where one is, and z where none is.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr, ndtr, ndtri
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform, biject_to

__all__ = ["BoundedNormal"]


class _Bounded(constraints.Constraint):
    """lower < x < upper componentwise; ±inf bounds allowed."""

    def __init__(self, lower, upper):
        self.lower, self.upper = lower, upper

    def __call__(self, x):
        return (x > self.lower) & (x < self.upper)

    def feasible_like(self, prototype):
        lo, hi = jnp.asarray(self.lower), jnp.asarray(self.upper)
        mid = jnp.where(jnp.isfinite(lo) & jnp.isfinite(hi), 0.5 * (lo + hi),
                        jnp.where(jnp.isfinite(lo), lo + 1.0, jnp.where(jnp.isfinite(hi), hi - 1.0, 0.0)))  # fmt: skip
        return jnp.broadcast_to(mid, jnp.shape(prototype))

    def tree_flatten(self):
        return (self.lower, self.upper), (("lower", "upper"), dict())


class _BoundedTransform(Transform):
    """The bijection from the reals onto `_Bounded(lower, upper)`."""

    def __init__(self, lower, upper):
        self.lower, self.upper = jnp.asarray(lower), jnp.asarray(upper)

    @property
    def domain(self):
        return constraints.real

    @property
    def codomain(self):
        return _Bounded(self.lower, self.upper)

    def _parts(self):
        has_lo, has_hi = jnp.isfinite(self.lower), jnp.isfinite(self.upper)
        lo, hi = jnp.where(has_lo, self.lower, 0.0), jnp.where(has_hi, self.upper, 0.0)
        width = jnp.where(has_lo & has_hi, hi - lo, 1.0)
        return has_lo, has_hi, lo, hi, width

    def __call__(self, x):
        has_lo, has_hi, lo, hi, width = self._parts()
        both = lo + width * jnp.exp(-jnp.logaddexp(0.0, -x))  # sigmoid, stable
        one = jnp.exp(jnp.where(has_lo != has_hi, jnp.where(has_lo, x, -x), 0.0))  # no overflow where unused (NaN gradients)
        return jnp.where(has_lo & has_hi, both, jnp.where(has_lo, lo + one, jnp.where(has_hi, hi - one, x)))

    def _inverse(self, y):
        has_lo, has_hi, lo, hi, width = self._parts()
        u = jnp.clip(jnp.where(has_lo & has_hi, (y - lo) / width, 0.5), 1e-300, 1.0 - 1e-16)
        d_lo = jnp.where(has_lo & ~has_hi, y - lo, 1.0)
        d_hi = jnp.where(has_hi & ~has_lo, hi - y, 1.0)
        return jnp.where(has_lo & has_hi, jnp.log(u) - jnp.log1p(-u),
                         jnp.where(has_lo, jnp.log(d_lo), jnp.where(has_hi, -jnp.log(d_hi), y)))  # fmt: skip

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        has_lo, has_hi, _, _, width = self._parts()
        both = jnp.log(width) - jnp.logaddexp(0.0, -x) - jnp.logaddexp(0.0, x)
        return jnp.where(has_lo & has_hi, both, jnp.where(has_lo, x, jnp.where(has_hi, -x, 0.0)))

    def tree_flatten(self):
        return (self.lower, self.upper), (("lower", "upper"), dict())


@biject_to.register(_Bounded)
def _bijection(constraint):
    return _BoundedTransform(constraint.lower, constraint.upper)


class BoundedNormal(dist.Distribution):
    """Normal(0, `scale`) truncated to (`lower`, `upper`), componentwise (batch shape `(e,)`)."""

    arg_constraints = {"scale": constraints.positive}
    reparametrized_params = ["scale"]
    pytree_data_fields = ("scale", "lower", "upper", "_support")

    def __init__(self, scale, lower, upper, *, validate_args=None):
        self.scale = jnp.asarray(scale)
        self.lower, self.upper = jnp.asarray(lower, self.scale.dtype), jnp.asarray(upper, self.scale.dtype)
        batch = jnp.broadcast_shapes(jnp.shape(self.scale), jnp.shape(self.lower), jnp.shape(self.upper))
        self._support = _Bounded(self.lower, self.upper)
        super().__init__(batch_shape=batch, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return self._support

    def _log_mass(self):
        a, b = self.lower / self.scale, self.upper / self.scale
        # log(Φ(b) − Φ(a)), computed on the side of the larger tail for accuracy
        upper_tail = a > 0
        return jnp.where(upper_tail, log_ndtr(-a) + jnp.log1p(-jnp.exp(log_ndtr(-b) - log_ndtr(-a))),
                         log_ndtr(b) + jnp.log1p(-jnp.exp(log_ndtr(a) - log_ndtr(b))))  # fmt: skip

    def log_prob(self, value):
        lp = dist.Normal(0.0, self.scale).log_prob(value) - self._log_mass()
        return jnp.where(self._support(value), lp, -jnp.inf)

    def sample(self, key, sample_shape=()):
        import jax

        shape = sample_shape + self.batch_shape
        lo, hi = ndtr(self.lower / self.scale), ndtr(self.upper / self.scale)
        u = jax.random.uniform(key, shape, minval=0.0, maxval=1.0)
        return jnp.clip(self.scale * ndtri(lo + u * (hi - lo)), self.lower, self.upper)


def bounded_or_normal(scale: float, bounds: tuple[np.ndarray, np.ndarray] | None, size: int):
    """The prior of `beta`: Normal(0, scale) per coefficient, truncated to `bounds` if any."""
    if bounds is None:
        return dist.Normal(jnp.zeros(size), scale * jnp.ones(size))
    return BoundedNormal(scale * jnp.ones(size), jnp.asarray(bounds[0]), jnp.asarray(bounds[1]))
