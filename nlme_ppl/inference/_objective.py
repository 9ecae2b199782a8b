"""The objective of a population fit: the negative log posterior of the amortized surrogate in
unconstrained coordinates, built once per fit and used by every step of it (starts, L-BFGS,
rescoring on fresh draws, standard errors, pointwise log-likelihood).

The draws and the data are *arguments*, never fields: the compiled programs below are cached
across fits of the same population with the same shapes and options, and never embed the
N·M·k draws.
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int
from numpyro import handlers
from numpyro.distributions import Delta, biject_to
from numpyro.infer.util import constrain_fn, initialize_model, log_density, log_likelihood

from ..data import Dataset
from ..likelihood import SurrogateDraws, amortize
from ._optimize import lbfgs

__all__ = ["Objective", "surrogate_model"]


def _template(surrogate, draws: SurrogateDraws, data: Dataset) -> dict | None:
    """Unconstrained values (zeros) of the program's latent sample sites, shaped as NumPyro's
    `initialize_model` gives them, from an abstract run (`jax.eval_shape`: nothing is compiled
    nor computed); None where that is not enough (discrete or `Delta` latent sites, or a
    program that needs concrete values), and `initialize_model` must run it."""

    def unconstrained(draws, data):
        tr = handlers.trace(handlers.seed(surrogate, 0)).get_trace(data, draws=draws)
        out = {}
        for name, site in tr.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if site["fn"].support.is_discrete or isinstance(site["fn"], Delta):
                raise _Eager
            out[name] = biject_to(site["fn"].support).inv(site["value"])
        return out

    try:
        shapes = jax.eval_shape(unconstrained, draws, data)
    except (_Eager, jax.errors.JAXTypeError):
        return None
    return {k: np.zeros(v.shape, v.dtype) for k, v in shapes.items()}


class _Eager(Exception):
    """The program must be initialised eagerly (see `_template`)."""


@eqx.filter_jit
def _postprocess(surrogate, draws: SurrogateDraws, data: Dataset, params: dict) -> dict:
    """Unconstrained site values -> constrained ones, deterministic sites included (what
    NumPyro's `postprocess_fn` does), compiled once per program and shapes."""
    return constrain_fn(surrogate, (data,), {"draws": draws}, params, return_deterministic=True)


@functools.lru_cache(maxsize=64)
def surrogate_model(population, site: str):
    """`amortize(population, site=site)`, the surrogate taking its draws as a keyword argument,
    one object per (population, site), so that jitted code keyed on it is reused."""
    return amortize(population, site=site)


class Objective(eqx.Module):
    """The negative log posterior of the surrogate, without the change-of-variables Jacobian
    (its optimum is the mode in the model's own parametrisation), as a function of the
    unconstrained population parameters `z` (flattened as `template`).

    **Fields:**

    - `population`: the population program.
    - `site`: the name of the surrogate's likelihood factor.
    - `template`: unconstrained site values (their structure and shapes give `z`'s layout).
    - `prior`: whether the population prior is part of the objective (default); `False` gives
      the negative surrogate log-likelihood alone (maximum likelihood, profile likelihoods).
    """

    population: Any = eqx.field(static=True)
    site: str = eqx.field(static=True)
    template: dict
    prior: bool = eqx.field(static=True, default=True)

    @classmethod
    def build(cls, population, draws: SurrogateDraws, data: Dataset, key, *, site: str = "obs") -> tuple["Objective", Any]:
        """The objective, and NumPyro's `postprocess_fn` (unconstrained values -> constrained
        site values, deterministic sites included), from a run of the program on `(draws, data)`."""
        surrogate = surrogate_model(population, site)
        template = _template(surrogate, draws, data)
        if template is not None:  # abstractly: run eagerly, NumPyro's initialisation compiled ~100 one-operation programs
            return cls(population, site, template), jax.tree_util.Partial(_postprocess, surrogate, draws, data)
        info = initialize_model(key, surrogate, model_args=(data,), model_kwargs={"draws": draws}, dynamic_args=False)
        return cls(population, site, info.param_info.z), info.postprocess_fn

    @property
    def surrogate(self):
        return surrogate_model(self.population, self.site)

    @property
    def size(self) -> int:
        return int(ravel_pytree(self.template)[0].shape[0])

    def unravel(self, z: Float[Array, " d"]) -> dict:
        return ravel_pytree(self.template)[1](z)

    def ravel(self, values: dict) -> Float[Array, " d"]:
        return ravel_pytree(values)[0]

    def likelihood(self) -> "Objective":
        """The same objective without the population prior: the negative surrogate log-likelihood."""
        return Objective(self.population, self.site, self.template, prior=False)

    def constrain(self, z: Float[Array, " d"], draws: SurrogateDraws, data: Dataset) -> dict:
        """The constrained sample-site values at `z`."""
        return constrain_fn(self.surrogate, (data,), {"draws": draws}, self.unravel(z))

    def __call__(self, z: Float[Array, " d"], draws: SurrogateDraws, data: Dataset) -> Float[Array, ""]:
        params = self.constrain(z, draws, data)
        if not self.prior:
            return -jnp.sum(self.pointwise(params, draws, data))
        return -log_density(self.surrogate, (data,), {"draws": draws}, params)[0]

    def pointwise(self, site_values: dict, draws: SurrogateDraws, data: Dataset) -> Float[Array, " individuals"]:
        """The per-individual surrogate log-likelihood terms at constrained `site_values`."""
        return log_likelihood(self.surrogate, site_values, data, draws=draws, batch_ndims=0)[self.site]

    # -------------------------------------------------------------- compiled steps
    @eqx.filter_jit
    def minimise(
        self, z0: Float[Array, "starts d"], precond: Float[Array, "d d"], draws: SurrogateDraws, data: Dataset, max_iter: int, tol: float
    ) -> tuple[Float[Array, "starts d"], Float[Array, " starts"], Bool[Array, " starts"], Int[Array, " starts"]]:
        """L-BFGS from every start, one after another in one compiled loop (`lax.map`), in
        coordinates whitened by `precond`.

        Not under `vmap`: batched, every start ran as many iterations, and each iteration as
        many line-search steps, as the slowest start, and at N = 10,000 ten starts took 37.7 s
        where one after another took 13.3 s (same iterations, same optima; a loaded 2-core CPU)."""

        def run(z):
            u, value, converged, iters = lbfgs(lambda u: self(z + precond @ u, draws, data), jnp.zeros_like(z), max_iter=max_iter, tol=tol)
            return z + precond @ u, value, converged, iters

        return jax.lax.map(run, z0)

    @eqx.filter_jit
    def values(self, zs: Float[Array, "starts d"], draws: SurrogateDraws, data: Dataset) -> Float[Array, " starts"]:
        return jax.vmap(lambda z: self(z, draws, data))(zs)

    @eqx.filter_jit
    def scores(self, z: Float[Array, " d"], draws: SurrogateDraws, data: Dataset) -> Float[Array, "individuals d"]:
        """`(N, d)` gradients in `z` of each individual's surrogate log-likelihood term (the
        "meat" of the sandwich covariance). Forward mode: d passes, where reverse mode would
        take one per individual."""
        return jax.jacfwd(lambda zz: self.pointwise(self.constrain(zz, draws, data), draws, data))(z)

    @eqx.filter_jit
    def hessian(self, z: Float[Array, " d"], draws: SurrogateDraws, data: Dataset) -> Float[Array, "d d"]:
        return jax.hessian(lambda zz: self(zz, draws, data))(z)

    def start_hessian(self, z: Float[Array, " d"], draws: SurrogateDraws, data: Dataset, *, max_individuals: int = 1000) -> Float[Array, "d d"]:
        """The Hessian at the start, for the preconditioner only: on an evenly spaced subset of
        at most `max_individuals` individuals, scaled by N / n (the likelihood's curvature is a
        sum over individuals), which is accurate enough for whitening and 10x cheaper at N = 10,000;
        and on each individual's first `num_draws` draws only (see `SurrogateDraws.with_extra`)."""
        n = draws.num_individuals
        if n <= max_individuals:
            return self.hessian(z, draws, data)
        idx = np.linspace(0, n - 1, max_individuals).round().astype(int)
        # without the extra draws (a selection of draws drops them): how many of the subset have
        # extras varies from fit to fit, and each count compiled this Hessian anew
        sub = draws.subset(idx, slice(0, draws.num_draws))
        return self.hessian(z, sub, data.subset(idx)) * (n / max_individuals)
