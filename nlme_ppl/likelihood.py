"""The amortized surrogate: an effect handler that replaces the individual likelihood.

For draws φ_ij ~ q(φ | y_i) (j = 1..M) from an estimator trained under the prior p_train,

    log p(D | θ) - Σ_i log p_train(y_i)  ≈  Σ_i [ logsumexp_j (log p(φ_ij | θ) - log p_train(φ_ij)) - log M ].

The left-hand side is the population log-likelihood *relative to the training prior's
marginal likelihood* of the same data: the constant Σ_i log p_train(y_i) does not depend on
θ nor on the population model, so differences between population models (and LOO) are exact,
but the absolute value is not an OFV. It is reported under that name, never silently.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float
from numpyro.primitives import Messenger

__all__ = ["SurrogateDraws", "amortize", "prepare_draws"]

#: numpyro site type given to intercepted individual-parameter sites (ignored by inference).
AMORTIZED_SITE = "amortized"


class SurrogateDraws(eqx.Module):
    """Draws φ_ij ~ q(φ | y_i) taken once per data set, with what the surrogate needs of them.

    **Fields:**

    - `values`: `(N, M, k)` draws, last axis in `param_names` order.
    - `log_prior`: `(N, M)` training-prior log-density of each draw.
    - `bandwidth`: `(N, k)` kernel widths used for parameters without a random effect
      (a `Delta` population distribution): Scott's rule on each individual's draws.
    - `param_names`: names of the last axis.
    """

    values: Float[Array, "individuals draws k"]
    log_prior: Float[Array, "individuals draws"]
    bandwidth: Float[Array, "individuals k"]
    param_names: tuple[str, ...] = eqx.field(static=True)

    @property
    def num_individuals(self) -> int:
        return self.values.shape[0]

    @property
    def num_draws(self) -> int:
        return self.values.shape[1]


def prepare_draws(posterior, data, key, *, num_draws: int = 100, num_fixed: int = 2) -> SurrogateDraws:
    """Sample `num_draws` draws per individual from `posterior` and precompute the surrogate's inputs.

    `num_fixed` is the dimension used in Scott's bandwidth rule M^(-1/(d+4)) for parameters
    without random effect (the bandwidth only matters for those).
    """
    values = jnp.asarray(posterior.sample(data, key, num_draws=num_draws), jnp.float64)
    return draws_from_values(values, posterior.model, num_fixed=num_fixed)


def draws_from_values(values, model, *, num_fixed: int = 2) -> SurrogateDraws:
    """[`SurrogateDraws`][nlme_ppl.SurrogateDraws] from given `(N, M, k)` draws of `model`'s parameters."""
    values = jnp.asarray(values, jnp.float64)
    n, m, k = values.shape
    if k != model.num_params:
        raise ValueError(f"draws have {k} parameters but model {model.name!r} has {model.num_params}: {model.param_names}.")
    if not bool(jnp.all(jnp.isfinite(values))):
        bad = int(jnp.argmax(~jnp.all(jnp.isfinite(values), axis=(1, 2))))
        raise ValueError(f"the estimator returned non-finite draws for individual at row {bad}; check its data.")
    sd = jnp.std(values, axis=1)
    bandwidth = sd * m ** (-1.0 / (num_fixed + 4))
    return SurrogateDraws(values, model.prior_log_prob(values), bandwidth, model.param_names)


def _unwrap(fn):
    while isinstance(fn, (dist.ExpandedDistribution, dist.Independent, dist.MaskedDistribution)):
        fn = fn.base_dist
    return fn


class _Surrogate(Messenger):
    def __init__(self, draws: SurrogateDraws):
        super().__init__()
        self.draws = draws
        self.index = {n: i for i, n in enumerate(draws.param_names)}
        self.seen: dict[str, str] = {}
        self.total = jnp.zeros((draws.num_draws, draws.num_individuals), jnp.float64)

    def _claimed(self, msg) -> tuple[str, ...] | None:
        if msg["name"] in self.index:
            return (msg["name"],)
        names = (msg.get("infer") or {}).get("individual_params")
        return tuple(names) if names is not None else None

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        names = self._claimed(msg)
        if names is None:
            return
        site = msg["name"]
        for n in names:
            if n not in self.index:
                raise ValueError(f"site {site!r} claims unknown individual parameter {n!r}; known: {tuple(self.index)}.")
            if n in self.seen:
                raise ValueError(f"individual parameter {n!r} is declared twice (sites {self.seen[n]!r} and {site!r}).")
            self.seen[n] = site
        idx = jnp.array([self.index[n] for n in names])
        fn = msg["fn"]
        n_ind = self.draws.num_individuals
        if fn.batch_shape not in ((), (n_ind,)):
            raise ValueError(
                f"site {site!r} has batch shape {fn.batch_shape}; inside numpyro.plate('individuals', "
                f"{n_ind}) it should be ({n_ind},). Declare it inside the individuals plate."
            )
        values = jnp.moveaxis(self.draws.values[..., idx], 1, 0)  # (M, N, d)
        base = _unwrap(fn)
        if isinstance(base, dist.Delta):
            # No random effect: smooth the point mass with a per-individual Gaussian kernel.
            if len(names) != 1:
                raise ValueError(f"site {site!r}: a Delta population distribution must be a scalar site.")
            loc = jnp.broadcast_to(base.v, (n_ind,))
            lp = dist.Normal(loc, self.draws.bandwidth[:, idx[0]]).log_prob(values[..., 0])
            value = loc
        elif len(names) == 1 and fn.event_shape == ():
            lp = fn.log_prob(values[..., 0])
            value = jnp.mean(values[..., 0], axis=0)
        elif fn.event_shape == (len(names),):
            lp = fn.log_prob(values)
            value = jnp.mean(values, axis=0)
        else:
            raise ValueError(
                f"site {site!r} has event shape {fn.event_shape} but covers {len(names)} individual "
                f"parameter(s) {names}; a vector site needs event shape ({len(names)},)."
            )
        self.total = self.total + lp
        msg["type"] = AMORTIZED_SITE
        msg["value"] = value
        msg["is_observed"] = True


def amortize(population, draws: SurrogateDraws | None = None, *, site: str = "obs"):
    """Return the surrogate model: `population` with the individual likelihood replaced.

    The population program's individual-parameter sites (by name, or a vector site with
    `infer={"individual_params": names}`) are intercepted: their distributions p(φ | θ) are
    evaluated at the stored draws, and a factor named `site` with one term per individual,

        logsumexp_j (log p(φ_ij | θ) - log p_train(φ_ij)) - log M,

    is added. NumPyro's MAP, NUTS, `Predictive` and `log_likelihood` run on it unchanged;
    `log_likelihood` returns the per-individual terms under `site`, for LOO.

    A site whose distribution is a `Delta` (a parameter without random effect) gets a
    Gaussian kernel of width `draws.bandwidth` around its value instead of the point mass.

    With `draws=None`, the surrogate takes the draws as a keyword argument,
    `surrogate(*args, draws=..., **kwargs)`, so that jitted inference receives them as an
    input rather than baking millions of numbers into the compiled program.
    """

    def surrogate(*args, draws=draws, **kwargs):
        if draws is None:
            raise TypeError("this surrogate was built without draws: call it with draws=SurrogateDraws(...).")
        handler = _Surrogate(draws)
        with handler:
            out = population(*args, **kwargs)
        missing = [n for n in draws.param_names if n not in handler.seen]
        if missing:
            raise ValueError(
                f"the population program declares no site for individual parameter(s) {missing}; add "
                "numpyro.sample(name, ...) inside numpyro.plate('individuals', N) for each (use dist.Delta "
                "for a parameter without random effect), or one vector site with "
                "infer={'individual_params': names}."
            )
        log_w = handler.total - jnp.swapaxes(draws.log_prior, 0, 1)
        numpyro.factor(site, jax.nn.logsumexp(log_w, axis=0) - math.log(draws.num_draws))
        return out

    surrogate.__name__ = f"amortized_{getattr(population, '__name__', type(population).__name__)}"
    return surrogate
