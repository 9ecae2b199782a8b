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
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float
from numpyro.primitives import Messenger

from ._lse import lse_linear_jit
from ._sites import SiteReader, check_factor_name

__all__ = ["SurrogateDraws", "amortize", "log_weights", "prepare_draws"]

#: numpyro site type given to intercepted individual-parameter sites (ignored by inference).
AMORTIZED_SITE = "amortized"


class SurrogateDraws(eqx.Module):
    """Draws φ_ij ~ q(φ | y_i) taken once per data set, with what the surrogate needs of them.

    **Fields:**

    - `values`: `(N, M, k)` draws, last axis in `param_names` order.
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
    """

    values: Float[Array, "individuals draws k"]
    log_prior: Float[Array, "individuals draws"]
    bandwidth: Float[Array, "individuals k"]
    centre: Float[Array, "individuals k"]
    stats: Float[Array, "individuals draws columns"]
    param_names: tuple[str, ...] = eqx.field(static=True)
    fixed_names: tuple[str, ...] = eqx.field(static=True, default=())
    fixed_point: Float[Array, "individuals F"] | None = None

    @property
    def num_individuals(self) -> int:
        return self.values.shape[0]

    @property
    def num_draws(self) -> int:
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

    def subset(self, individuals=slice(None), draws=slice(None)) -> "SurrogateDraws":
        """These draws restricted to some individuals and/or draws (index arrays or slices);
        `centre` and `bandwidth` are kept as computed from all draws."""
        if isinstance(individuals, slice):  # basic indexing: no gather over all N·M·C statistics
            pick = lambda x: x[individuals]  # noqa: E731
        else:
            ind = np.atleast_1d(np.arange(self.num_individuals)[individuals])
            pick = lambda x: x[ind]  # noqa: E731
        return SurrogateDraws(
            pick(self.values)[:, draws], pick(self.log_prior)[:, draws], pick(self.bandwidth), pick(self.centre),
            pick(self.stats)[:, draws], self.param_names, self.fixed_names,
            None if self.fixed_point is None else pick(self.fixed_point),
        )  # fmt: skip

    def with_cross_products(self) -> "SurrogateDraws":
        """These draws with the cross products d_a d_b appended to `stats` (needed by the fast
        path of correlated (`MultivariateNormal`) population distributions)."""
        if self.has_cross:
            return self
        d = self.values - self.centre[:, None, :]
        a, b = np.triu_indices(self.num_params, k=1)
        split = self.stats.shape[-1] - self.num_fixed_columns  # the cross products go before an expansion's columns
        stats = jnp.concatenate([self.stats[..., :split], d[..., a] * d[..., b], self.stats[..., split:]], axis=-1)
        return eqx.tree_at(lambda x: x.stats, self, stats)


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
    values = jnp.asarray(posterior.sample(data, key, num_draws=num_draws), jnp.float64)
    return draws_from_values(values, posterior.model, num_fixed=num_fixed, cross=cross)


def draws_from_values(values, model, *, num_fixed: int = 2, cross: bool = False) -> SurrogateDraws:
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
    centre = jnp.mean(values, axis=1)
    d = values - centre[:, None, :]
    out = SurrogateDraws(values, model.prior_log_prob(values), bandwidth, centre, jnp.concatenate([d, d * d], -1), model.param_names)
    return out.with_cross_products() if cross else out


def _unwrap(fn):
    while isinstance(fn, (dist.ExpandedDistribution, dist.Independent, dist.MaskedDistribution)):
        fn = fn.base_dist
    return fn


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class _Surrogate(Messenger):
    """Collects log p(φ_ij | θ) over the population program's individual-parameter sites.

    Gaussian sites (Normal, a Delta's kernel, MultivariateNormal with a shared scale) add
    coefficients on the sufficient statistics `draws.stats` (the fast path: one batched
    matrix-vector product for all of them); any other distribution is evaluated directly.
    """

    def __init__(self, draws: SurrogateDraws):
        super().__init__()
        self.draws = draws
        self.sites = SiteReader(draws.param_names)
        self.names: set[str] = set()  # every sample and deterministic site of the program
        self.fixed: list[str] = []  # parameters whose population distribution is a Delta (no random effect)
        n, k = draws.num_individuals, draws.num_params
        self.coef = jnp.zeros((n, draws.stats.shape[-1]), jnp.float64)
        self.const = jnp.zeros((n,), jnp.float64)
        self.generic = None  # (M, N) direct log-densities, when some site is not Gaussian
        self.fixed_loc: dict = {}  # the (N,) values of the parameters without random effect
        # (those in `draws.fixed_names`, the likelihood treatment, get their terms once all are known)
        self.pairs = {pair: 2 * k + j for j, pair in enumerate(zip(*np.triu_indices(k, k=1)))}

    def _gaussian(self, idx: np.ndarray, loc, prec, log_det_scale):
        """Add log N(φ[idx] | loc, prec⁻¹) via the sufficient statistics: with φ = c + d and
        e = c - loc, the density is -½ dᵀPd - (Pe)ᵀd - ½ eᵀPe - log|L| - (d/2) log 2π."""
        k, n = self.draws.num_params, self.draws.num_individuals
        e = self.draws.centre[:, idx] - loc  # (N, d)
        pe = jnp.einsum("nab,nb->na" if prec.ndim == 3 else "ab,nb->na", prec, e)
        diag = jnp.broadcast_to(jnp.diagonal(prec, axis1=-2, axis2=-1), (n, len(idx)))
        self.coef = self.coef.at[:, idx].add(-pe).at[:, k + idx].add(-0.5 * diag)
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = sorted((int(idx[a]), int(idx[b])))
                self.coef = self.coef.at[:, self.pairs[(i, j)]].add(-prec[..., a, b] * jnp.ones(n))
        self.const = self.const - 0.5 * jnp.sum(pe * e, -1) - log_det_scale - len(idx) * _HALF_LOG_2PI

    def _direct(self, lp):
        self.generic = lp if self.generic is None else self.generic + lp

    def process_message(self, msg):
        if msg["type"] in ("sample", "deterministic"):
            self.names.add(msg["name"])
        names = self.sites.claim(msg)
        if names is None:
            return
        site = msg["name"]
        idx = self.sites.indices(names)
        fn = msg["fn"]
        n_ind = self.draws.num_individuals
        if fn.batch_shape not in ((), (n_ind,)):
            raise ValueError(
                f"site {site!r} has batch shape {fn.batch_shape}; inside numpyro.plate('individuals', "
                f"{n_ind}) it should be ({n_ind},). Declare it inside the individuals plate."
            )
        base = _unwrap(fn)
        centre = self.draws.centre[:, idx]
        if isinstance(base, dist.Delta):
            if len(names) != 1:
                raise ValueError(f"site {site!r}: a Delta population distribution must be a scalar site.")
            loc = jnp.broadcast_to(base.v, (n_ind,))
            self.fixed.append(names[0])
            self.fixed_loc[names[0]] = loc
            if names[0] not in self.draws.fixed_names:
                # the kernel treatment: smooth the point mass with a per-individual Gaussian kernel
                h = self.draws.bandwidth[:, idx[0]]
                self._gaussian(idx, loc[:, None], (1.0 / h**2)[:, None, None], jnp.log(h))
            value = loc
        elif len(names) == 1 and fn.event_shape == ():
            if isinstance(base, dist.Normal):
                loc = jnp.broadcast_to(base.loc, (n_ind,))
                scale = jnp.broadcast_to(base.scale, (n_ind,))
                self._gaussian(idx, loc[:, None], (1.0 / scale**2)[:, None, None], jnp.log(scale))
            else:
                self._direct(fn.log_prob(jnp.moveaxis(self.draws.values[..., idx[0]], 1, 0)))
            value = centre[:, 0]
        elif fn.event_shape == (len(names),):
            shared = isinstance(base, dist.MultivariateNormal) and math.prod(base.scale_tril.shape[:-2]) == 1
            if shared and (self.draws.has_cross or len(names) == 1):
                # one scale shared by everyone (a per-individual loc, e.g. from covariates, broadcasts it to (1, d, d))
                chol = base.scale_tril.reshape(base.scale_tril.shape[-2:])
                inv = jax.scipy.linalg.solve_triangular(chol, jnp.eye(len(names)), lower=True)
                loc = jnp.broadcast_to(base.loc, (n_ind, len(names)))
                self._gaussian(idx, loc, inv.T @ inv, jnp.sum(jnp.log(jnp.diagonal(chol))))
            else:
                self._direct(fn.log_prob(jnp.moveaxis(self.draws.values[..., idx], 1, 0)))
            value = centre
        else:
            raise ValueError(
                f"site {site!r} has event shape {fn.event_shape} but covers {len(names)} individual "
                f"parameter(s) {names}; a vector site needs event shape ({len(names)},)."
            )
        msg["type"] = AMORTIZED_SITE
        msg["value"] = value
        msg["is_observed"] = True

    def _coefficients(self):
        """`coef` with the likelihood expansion's terms: for e = θ_f - `fixed_point`, the
        per-draw log p(y_i | r_ij, θ_f) - log p(y_i | r_ij, f*) ≈ g·e + ½ eᵀHe."""
        names = self.draws.fixed_names
        if not names:
            return self.coef
        missing = [n for n in names if n not in self.fixed_loc]
        if missing:
            raise ValueError(
                f"these draws carry the likelihood treatment of {missing}, but the population program gives "
                f"{'it' if len(missing) == 1 else 'them'} a random effect: prepare the draws anew for this program "
                "(nlp.prepare_draws, or let fit_map / fit_nuts take them)."
            )
        e = jnp.stack([self.fixed_loc[n] for n in names], -1) - self.draws.fixed_point  # (N, F)
        a, b = np.triu_indices(len(names), k=1)
        terms = jnp.concatenate([e, 0.5 * e * e, e[:, a] * e[:, b]], -1)
        return self.coef.at[:, self.coef.shape[-1] - terms.shape[-1]:].add(terms)

    def log_sum_weights(self) -> Float[Array, " individuals"]:
        """logsumexp_j of `log_weights()`, through the fused kernel `lse_linear` when every site
        took the fast path."""
        if self.generic is None:
            return lse_linear_jit(self.draws.stats, self._coefficients(), self.const, self.draws.log_prior)
        return jax.nn.logsumexp(self.log_weights(), axis=1)

    def log_weights(self) -> Float[Array, "individuals draws"]:
        """log p(φ_ij | θ) - log p_train(φ_ij) over the sites seen so far (with the likelihood
        treatment: the weight of the expansion, see `SurrogateDraws`)."""
        out = jnp.einsum("nmc,nc->nm", self.draws.stats, self._coefficients()) + (self.const[:, None] - self.draws.log_prior)
        return out if self.generic is None else out + jnp.swapaxes(self.generic, 0, 1)


def log_weights(population, draws: SurrogateDraws, params: dict, *args, **kwargs) -> Float[Array, "individuals draws"]:
    """Log importance weights log p(φ_ij | θ) - log p_train(φ_ij), shape `(N, M)`, at population
    parameters `params` (constrained site values by site name, e.g. `MAPResult.site_values`).

    `args` and `kwargs` are the population program's own arguments (usually `data`). The
    surrogate's per-individual term is `logsumexp_j` of these minus log M; their spread tells
    how well the draws cover the population distribution (see
    [`importance_from_fit`][nlme_ppl.diagnostics.importance_from_fit]).
    """
    return _evaluated(population, draws, params, args, kwargs).log_weights()


def _evaluated(population, draws: SurrogateDraws, params: dict, args, kwargs) -> _Surrogate:
    """The surrogate handler after one run of `population` at population parameters `params`."""
    handler = _Surrogate(draws)
    params = {k: v for k, v in params.items() if k not in draws.param_names}
    with numpyro.handlers.seed(rng_seed=0), handler, numpyro.handlers.substitute(data=params):
        population(*args, **kwargs)
    return handler


def fixed_parameters(population, draws: SurrogateDraws, params: dict, *args, **kwargs) -> tuple[str, ...]:
    """The individual parameters that `population` gives no random effect (a `Delta` site) at
    population parameters `params` (constrained site values by name)."""
    return tuple(_evaluated(population, draws, params, args, kwargs).fixed)


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
        handler.sites.check_complete()
        check_factor_name(site, handler.names)
        numpyro.factor(site, handler.log_sum_weights() - math.log(draws.num_draws))
        return out

    surrogate.__name__ = f"amortized_{getattr(population, '__name__', type(population).__name__)}"
    return surrogate
