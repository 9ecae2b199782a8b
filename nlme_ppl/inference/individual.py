"""One individual's exact posterior under the training prior (the reference for an estimator),
and each individual's mode under it (the starts of the exact baseline)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..data import Dataset
from ..models import IndividualModel
from ._checks import check_exact_arguments, check_masking, prior_centre
from ._mcmc import run_nuts
from ._optimize import lbfgs
from ._proposal import log_target, per_lane

__all__ = ["fit_exact_individual", "individual_modes"]


def _modes(model, designs, values, z0, max_iter: int, tol: float):
    """Per-individual mode of log p(y_i | φ) + log p_train(φ) by L-BFGS from each start in `z0` `(N, S, k)`."""

    def neg_log_post(phi, design, y):
        return -log_target(model, phi, design, y)

    def one(args):
        design, y, starts = args
        zs, vals, _, _ = per_lane(lambda z: lbfgs(lambda p: neg_log_post(p, design, y), z, max_iter=max_iter, tol=tol), starts)
        ok = jnp.isfinite(vals) & jnp.all(jnp.isfinite(zs), axis=-1)
        best = jnp.argmin(jnp.where(ok, vals, jnp.inf))
        return jnp.where(ok[best], zs[best], starts[0])

    return per_lane(one, (designs, values, z0))


_modes_jit = eqx.filter_jit(_modes)


def individual_modes(model, data, key, *, num_starts: int, max_iter: int = 200, tol: float = 1e-8) -> Float[Array, "individuals k"]:
    """Each individual's mode under the training prior (best of `num_starts` L-BFGS starts:
    the prior's centre, then prior draws)."""
    k_centre, k_starts = jax.random.split(key)
    n = data.num_individuals
    z0 = model.prior_sample(k_starts, (n, num_starts))
    z0 = z0.at[:, 0].set(prior_centre(model, k_centre))
    return _modes_jit(model, model.designs_from_data(data), data.values, z0, int(max_iter), float(tol))


def fit_exact_individual(
    model: IndividualModel,
    data: Dataset,
    key,
    *,
    index: int | str = 0,
    num_chains: int = 2,
    num_warmup: int = 500,
    num_samples: int = 1000,
    symmetrize: bool = False,
    chain_method: str | None = None,
    progress: bool = False,
) -> Float[np.ndarray, "draws k"]:
    """The exact posterior of one individual under the training prior, by NUTS.

    Runs NumPyro NUTS on the model's own program, `model.fn(design, obs=y)`, with the design and
    observations of one individual of `data`: the posterior p(φ | y_i) ∝ p_train(φ) p(y_i | φ)
    that an estimator approximates. It is the reference for individual posteriors (e.g. C2ST
    against the estimator's draws). Chains start at the individual's mode (best of 8 L-BFGS
    starts: the prior's centre and prior draws).

    For a model with `exchangeable` parameters the posterior has one mode per labelling, and
    NUTS usually stays in one of them. With `symmetrize=True` each draw's exchangeable group is
    permuted uniformly at random (`model.symmetrize`), which gives the exact symmetric posterior,
    the one the estimator samples. Without exchangeable groups it changes nothing.

    **Arguments:**

    - `model`: an [`IndividualModel`][nlme_ppl.IndividualModel].
    - `data`: a [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX random key.
    - `index`: the individual, by row (int) or id (str).
    - `num_chains`, `num_warmup`, `num_samples`: NUTS settings.
    - `symmetrize`: permute exchangeable groups at random (see above).
    - `chain_method`: as in `fit_exact_nuts`.
    - `progress`: show NumPyro's progress bar.

    **Returns:** a NumPy array `(num_chains * num_samples, k)`, columns in `model.param_names` order.
    """
    num_chains, num_samples, num_warmup = check_exact_arguments(
        model, data, key, num_chains=num_chains, num_samples=num_samples, num_warmup=num_warmup
    )
    row = _row(data, index)
    one = data.subset(slice(row, row + 1))
    k_init, k_mcmc, k_sym = jax.random.split(key, 3)
    check_masking(model, one, prior_centre(model, k_init))
    mode = individual_modes(model, one, k_init, num_starts=8)[0]
    design = jax.tree.map(lambda x: x[0], model.designs_from_data(one))
    init = {p: mode[j] for j, p in enumerate(model.param_names)}
    samples, _, _ = run_nuts(
        model.fn, k_mcmc, design, init=init, num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples,
        target_accept_prob=0.8, chain_method=chain_method, progress=progress, obs=one.values[0],
    )  # fmt: skip
    out = np.stack([samples[p].reshape(-1) for p in model.param_names], axis=-1)
    if symmetrize:
        out = np.asarray(model.symmetrize(k_sym, out))
    return out


def _row(data, index) -> int:
    n = data.num_individuals
    if isinstance(index, str):
        if index not in data.ids:
            raise ValueError(f"no individual with id {index!r}; ids are {list(data.ids[:5])}{' ...' if n > 5 else ''}.")
        return data.ids.index(index)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise ValueError(f"`index` must be a row in [0, {n}) or an individual id; got {index!r}.")
    return int(index)
