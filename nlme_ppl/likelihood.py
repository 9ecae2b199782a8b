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

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float
from numpyro.primitives import Messenger

from ._draws import SurrogateDraws, draws_from_values, prepare_draws, wants_cross_products
from ._lse import lse_linear_jit
from ._sharding import inside_mapped_transform, on_one_device
from ._sites import SiteReader, check_factor_name

__all__ = ["SurrogateDraws", "amortize", "draws_from_values", "log_weights", "prepare_draws", "wants_cross_products"]

#: numpyro site type given to intercepted individual-parameter sites (ignored by inference).
AMORTIZED_SITE = "amortized"


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
        # under pmap (NumPyro's parallel chains) each device has all individuals: not split again
        self.draws = on_one_device(draws) if inside_mapped_transform() else draws
        self.sites = SiteReader(draws.param_names)
        self.names: set[str] = set()  # every sample and deterministic site of the program
        self.fixed: list[str] = []  # parameters whose population distribution is a Delta (no random effect)
        n, k = draws.num_individuals, draws.num_params
        self.coef = jnp.zeros((n, draws.stats.shape[-1]), jnp.float64)
        self.const = jnp.zeros((n,), jnp.float64)
        self.generic = None  # (M, N) direct log-densities, when some site is not Gaussian
        self.generic_extra = None  # (M_e, E) the same at the extra draws
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

    def _direct(self, fn, select):
        """Add `fn.log_prob` at the draws, `select` taking the site's value from `(N, M, k)` values."""
        lp = fn.log_prob(jnp.moveaxis(select(self.draws.values).astype(jnp.float64), 1, 0))  # the draws are stored in float32
        self.generic = lp if self.generic is None else self.generic + lp
        extra = self.draws.extra
        if extra is not None:
            # fn is batched over all N individuals: the extra draws go to their owners' rows, the centre elsewhere
            n, idx = self.draws.num_individuals, self.draws.extra_index
            full = jnp.broadcast_to(self.draws.centre[:, None, :], (n, extra.num_draws, extra.num_params)).at[idx].set(extra.values.astype(jnp.float64))
            lp = fn.log_prob(jnp.moveaxis(select(full), 1, 0))[:, idx]
            self.generic_extra = lp if self.generic_extra is None else self.generic_extra + lp

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
                self._direct(fn, lambda v: v[..., idx[0]])
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
                self._direct(fn, lambda v: v[..., idx])
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
        """logsumexp_j of `log_weights()` (and of `log_weights_extra()` for the individuals with
        extra draws), through the fused kernel `lse_linear` when every site took the fast path."""
        draws, coef = self.draws, self._coefficients()
        if self.generic is None:
            out = lse_linear_jit(draws.stats, coef, self.const, draws.log_prior)
        else:
            out = jax.nn.logsumexp(self.log_weights(), axis=1)
        if draws.extra is None:
            return out
        idx = draws.extra_index
        if self.generic is None:
            more = lse_linear_jit(draws.extra.stats, coef[idx], self.const[idx], draws.extra.log_prior)
        else:
            more = jax.nn.logsumexp(self.log_weights_extra(), axis=1)
        return out.at[idx].set(jnp.logaddexp(out[idx], more))

    def log_weights(self) -> Float[Array, "individuals draws"]:
        """log p(φ_ij | θ) - log p_train(φ_ij) over the sites seen so far (with the likelihood
        treatment: the weight of the expansion, see `SurrogateDraws`)."""
        out = jnp.einsum("nmc,nc->nm", self.draws.stats, self._coefficients()) + (self.const[:, None] - self.draws.log_prior)
        return out if self.generic is None else out + jnp.swapaxes(self.generic, 0, 1)

    def log_weights_extra(self) -> Float[Array, "raised extra"]:
        """`log_weights()` at the extra draws `(E, M_e)` of the individuals at `draws.extra_index`."""
        extra, idx = self.draws.extra, self.draws.extra_index
        out = jnp.einsum("nmc,nc->nm", extra.stats, self._coefficients()[idx]) + (self.const[idx][:, None] - extra.log_prior)
        return out if self.generic_extra is None else out + jnp.swapaxes(self.generic_extra, 0, 1)


def log_weights(population, draws: SurrogateDraws, params: dict, *args, **kwargs) -> Float[Array, "individuals draws"]:
    """Log importance weights log p(φ_ij | θ) - log p_train(φ_ij), shape `(N, M)`, at population
    parameters `params` (constrained site values by site name, e.g. `MAPResult.site_values`).

    `args` and `kwargs` are the population program's own arguments (usually `data`). The
    surrogate's per-individual term is `logsumexp_j` of these minus log M; their spread tells
    how well the draws cover the population distribution (see
    [`importance_from_fit`][nlme_ppl.diagnostics.importance_from_fit], which also weighs the
    extra draws of `draws.extra`; these are the weights of the M draws every individual has).
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

        logsumexp_j (log p(φ_ij | θ) - log p_train(φ_ij)) - log M_i,

    is added (M_i = M, or M + M_e for an individual with extra draws). NumPyro's MAP, NUTS, `Predictive` and `log_likelihood` run on it unchanged;
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
        numpyro.factor(site, handler.log_sum_weights() - jnp.log(draws.draws_per_individual()))
        return out

    surrogate.__name__ = f"amortized_{getattr(population, '__name__', type(population).__name__)}"
    return surrogate
