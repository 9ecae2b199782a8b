"""The exact hierarchical baseline: the population and individual programs composed, run by NUTS.

The population program draws φ_i ~ p(φ | θ) inside `numpyro.plate("individuals", N)`; the
individual program gives the exact log p(y_i | φ_i). Composed, they are the ordinary
hierarchical model p(θ) Π_i p(φ_i | θ) p(y_i | φ_i), which NumPyro NUTS samples jointly in
(θ, φ_1..N) when the individual likelihood is tractable. This is the reference that the
amortized surrogate (`fit_nuts`) approximates, and `fit_exact_individual` is the reference for
one individual's posterior under the training prior (what the estimator learns).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import xarray as xr
from jaxtyping import Array

from .._sites import SiteReader, check_factor_name, site_columns
from ..data import Dataset
from ..likelihood import SurrogateDraws, log_weights
from ..models import IndividualModel
from ._checks import check_data, check_exact_arguments, check_init, check_masking, check_model, prior_centre
from ._mcmc import run_nuts
from ._result import MAPResult
from .individual import fit_exact_individual, individual_modes

__all__ = ["exact_init", "exact_model", "fit_exact_individual", "fit_exact_nuts"]


# ----------------------------------------------------------------------------- composing the programs
def _individual_sites(trace, param_names: tuple[str, ...], n: int):
    """Read the individual parameters off a trace of the population program (the shared
    [`SiteReader`][nlme_ppl._sites.SiteReader]).

    **Returns:** `(phi, sites)`: `phi` `(n, k)` in `param_names` order (a site outside the
    plate, or a `Delta` site, gives the shared value broadcast to every individual), and
    `sites`, `{site name: (parameter names, observed, scalar)}` (`scalar`: one parameter per
    site, no event dimension).
    """
    reader = SiteReader(param_names)
    columns: dict[str, Array] = {}
    sites: dict[str, tuple[tuple[str, ...], bool, bool]] = {}
    for name, msg in trace.items():
        names = reader.claim(msg)
        if names is None:
            continue
        value = site_columns(msg, names, n)
        columns.update({p: value[:, j] for j, p in enumerate(names)})
        sites[name] = (names, bool(msg["is_observed"]), tuple(msg["fn"].event_shape) == ())
    reader.check_complete()
    return jnp.stack([columns[p] for p in param_names], axis=-1), sites


def _compose(population, model, site, data):
    """Run `population(data)`, then add the exact individual log-likelihoods as the factor `site`.

    **Returns:** `(phi, loglik)`, shapes `(N, k)` and `(N,)`.
    """
    with numpyro.handlers.trace() as tr:
        population(data)
    phi, _ = _individual_sites(tr, model.param_names, data.num_individuals)
    check_factor_name(site, tr)
    with numpyro.handlers.block():  # the individual program's own sites stay private
        loglik = jax.vmap(model.log_likelihood)(phi, model.designs_from_data(data), data.values)
    numpyro.factor(site, loglik)
    return phi, loglik


def exact_model(population, model, *, site: str = "obs"):
    """Compose a population program and an individual model into the exact hierarchical model.

    The result is a NumPyro program `exact(data)`: it runs `population(data)`, reads the
    individual parameters φ_i from its sites inside `numpyro.plate("individuals", N)` (one
    site per parameter by name, or one vector site with `infer={"individual_params": names}`;
    a `Delta` site gives every individual the shared value), and adds the exact individual
    log-likelihoods log p(y_i | φ_i) as `numpyro.factor(site, ...)` with one term per
    individual (padded observations do not count: the individual program masks them). It
    returns φ, shape `(N, k)` in `model.param_names` order.

    The latent individual sites stay in the population's own (centred) parametrisation,
    φ_i ~ p(φ | θ) sampled directly, which suits individuals with many informative
    observations (the usual NLME setting); with few observations per individual a
    non-centred population program samples better.

    **Arguments:**

    - `population`: a NumPyro program `population(data)`.
    - `model`: the [`IndividualModel`][nlme_ppl.IndividualModel] whose likelihood is exact.
    - `site`: name of the likelihood factor (and of the `log_likelihood` variable).

    **Returns:** the NumPyro program `exact(data)`.
    """
    check_model(model)

    def exact(data):
        return _compose(population, model, site, data)[0]

    exact.__name__ = f"exact_{getattr(population, '__name__', type(population).__name__)}"
    return exact


def exact_init(population, fit: MAPResult | Mapping, draws: SurrogateDraws, data: Dataset) -> dict[str, Array]:
    """Starting values for `fit_exact_nuts` from a MAP fit and the estimator's draws.

    Population sites start at the MAP. Each individual's sites start at the draw φ_ij
    (j = 1..M) with the largest importance weight log p(φ_ij | θ_MAP) − log p_train(φ_ij):
    the draw the fitted population finds most plausible.

    This matters when parameters are exchangeable (e.g. `delta` and `gamma` of
    `frohlich_simple`): each individual posterior then has one mode per labelling, and the
    exact model has a mode for every combination of labellings. NUTS does not jump between
    them, so a start from the individual draws' own mode (or a prior draw) can leave some
    individuals in the labelling the population rejects. The population distribution at the
    MAP breaks the symmetry (e.g. through priors on `mean[delta]` and `mean[gamma]`), so the
    highest-weight draw of each individual is in the mode consistent with the population's
    labelling, and chains start there.

    **Arguments:**

    - `population`: the population program (the one `fit` was fitted with).
    - `fit`: a [`MAPResult`][nlme_ppl.MAPResult], or a dict of population site values.
    - `draws`: [`SurrogateDraws`][nlme_ppl.SurrogateDraws] of the same data, e.g. from
      [`prepare_draws`][nlme_ppl.prepare_draws].
    - `data`: the [`Dataset`][nlme_ppl.Dataset] (the population program's argument).

    **Returns:** a dict of site values (population sites and latent individual sites, by name)
    for `fit_exact_nuts(..., init=...)`.
    """
    check_data(data)
    if not isinstance(draws, SurrogateDraws):
        raise TypeError(f"`draws` must be SurrogateDraws (from nlp.prepare_draws); got {type(draws).__name__}.")
    if draws.num_individuals != data.num_individuals:
        raise ValueError(f"`draws` cover {draws.num_individuals} individuals but `data` has {data.num_individuals}; take the draws on the same data.")
    params = dict(fit.site_values) if hasattr(fit, "site_values") else dict(fit)
    lw = log_weights(population, draws, params, data)  # (N, M)
    best = jnp.argmax(jnp.where(jnp.isnan(lw), -jnp.inf, lw), axis=1)
    phi = draws.values[jnp.arange(draws.num_individuals), best].astype(jnp.float64)  # (N, k); stored in float32
    population_params = {k: v for k, v in params.items() if k not in draws.param_names}
    handled = numpyro.handlers.substitute(numpyro.handlers.seed(population, 0), data=population_params)
    tr = numpyro.handlers.trace(handled).get_trace(data)
    _, sites = _individual_sites(tr, draws.param_names, data.num_individuals)
    return {**{k: jnp.asarray(v) for k, v in population_params.items()}, **_latent_values(sites, phi, draws.param_names)}


def fit_exact_nuts(
    population,
    model: IndividualModel,
    data: Dataset,
    key,
    *,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    target_accept_prob: float = 0.8,
    chain_method: str | None = None,
    init: Mapping | None = None,
    progress: bool = True,
    site: str = "obs",
) -> xr.DataTree:
    """Sample the exact hierarchical posterior p(θ, φ_1..N | D) with NumPyro NUTS.

    The same two programs as for `fit_nuts` are composed (see `exact_model`): the population
    program draws φ_i, and the individual model's exact log p(y_i | φ_i) is added, one term
    per individual. NUTS samples θ and every latent φ_i jointly, in the population program's
    centred parametrisation (φ_i ~ p(φ | θ) directly): with many observations per individual
    the individual posteriors are well identified and a centred model samples well; with few,
    write a non-centred population program. The cost grows with N (N·k latent dimensions and
    N individual likelihoods per gradient): this is a baseline for tractable likelihoods, not
    a replacement for the surrogate.

    **Initialisation.** With `init=None`, each individual starts at its own mode under the
    training prior (multi-start L-BFGS; exchangeable groups sorted as in
    `model.canonicalize`), and population sites at `population.init_values` of those modes when
    the population has it (the built-in ones do), else at NumPyro's default. For models with
    exchangeable parameters the exact posterior has a mode per labelling of every individual;
    pass `init=exact_init(population, fit_map_result, draws, data)` to start every chain in
    the mode consistent with the population's labelling. A dict `init` gives site values by
    name (population sites and latent individual sites); sites it lacks start from NumPyro's
    `init_to_uniform`.

    **Arguments:**

    - `population`: a NumPyro program `population(data)` (e.g. `nlp.populations.gaussian(model)`).
    - `model`: the [`IndividualModel`][nlme_ppl.IndividualModel] (not the estimator).
    - `data`: a [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX random key.
    - `num_chains`, `num_warmup`, `num_samples`, `target_accept_prob`: NUTS settings.
    - `chain_method`: `"parallel"`, `"sequential"` or `"vectorized"`; default `"parallel"`
      when JAX has at least `num_chains` devices, else `"sequential"`.
    - `init`: a dict of starting site values (see above), or `None`.
    - `progress`: show NumPyro's progress bar.
    - `site`: name of the likelihood factor and of its `log_likelihood` variable.

    **Returns:** an ArviZ `DataTree` laid out as `fit_nuts`'s: `posterior` (the population sites,
    `mean` with dim `param`, `sd` with `sd_param`, ..., plus `phi`, the individual parameters,
    dims `(chain, draw, individual, param)` in `model.param_names` order), `sample_stats`,
    `log_likelihood` (`site`: the exact log p(y_i | φ_i), one term per individual, dim
    `individual`), `observed_data` and `constant_data`; `posterior.attrs["inference"]` is
    `"exact hierarchical NUTS"`. The `log_likelihood` terms are *conditional* on φ_i, unlike
    the surrogate's marginal log p(y_i | θ): PSIS-LOO over them refits the left-out
    individual's φ_i, so expect high Pareto k, and do not compare their sum with `fit_nuts`'s.
    """
    num_chains, num_samples, num_warmup = check_exact_arguments(
        model, data, key, num_chains=num_chains, num_samples=num_samples, num_warmup=num_warmup
    )
    k_check, k_init, k_mcmc = jax.random.split(key, 3)
    n = data.num_individuals
    program = exact_model(population, model, site=site)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(program, k_check)).get_trace(data)
    _, sites = _individual_sites(tr, model.param_names, n)  # checked now, not deep inside NUTS
    if "phi" in tr and "phi" not in sites:
        raise ValueError("the population program has a site named 'phi' outside the individual parameters; the output uses 'phi' for the individual parameters: rename that site.")
    check_masking(model, data, prior_centre(model, k_check))
    if init is None:
        init = _default_init(population, model, data, sites, k_init)
    init = check_init(init, tr)
    samples, stats, chain_method = run_nuts(
        program, k_mcmc, data, init=init, num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples,
        target_accept_prob=target_accept_prob, chain_method=chain_method, progress=progress,
    )  # fmt: skip
    phi, loglik = _pointwise(population, model, site, data, samples)
    phi = phi.reshape(num_chains, num_samples, n, model.num_params)
    loglik = loglik.reshape(num_chains, num_samples, n)
    posterior = {k: v for k, v in samples.items() if k not in sites}
    from ._datatree import to_datatree  # imports arviz: only when a tree is built

    attrs = {"inference": "exact hierarchical NUTS", "chain_method": chain_method}
    tree = to_datatree(population, posterior, loglik, ids=data.ids, data=data, sample_stats=stats, site=site, attrs=attrs)
    return _add_phi(tree, phi, model.param_names, data.ids)


def _default_init(population, model, data, sites, key) -> dict:
    modes = model.canonicalize(individual_modes(model, data, key, num_starts=4))
    init = dict(population.init_values(modes[:, None, :])) if hasattr(population, "init_values") else {}
    return {**init, **_latent_values(sites, modes, model.param_names)}


def _latent_values(sites, phi, param_names) -> dict[str, Array]:
    """The values of the latent individual sites (those of `_individual_sites`) for individual
    parameters `phi` `(N, k)` in `param_names` order: `(N,)` for a scalar site, else `(N, j)`."""
    out = {}
    for name, (names, observed, scalar) in sites.items():
        if not observed:
            value = phi[:, jnp.array([param_names.index(p) for p in names])]
            out[name] = value[:, 0] if scalar else value
    return out


def _pointwise(population, model, site, data, samples):
    """φ `(S, N, k)` and the per-individual log-likelihood `(S, N)` at every flattened draw,
    in batches (the individual likelihoods of a batch of draws are held at once)."""
    flat = {k: jnp.asarray(v.reshape(-1, *v.shape[2:])) for k, v in samples.items()}
    num = next(iter(flat.values())).shape[0]
    batch = int(max(1, min(num, 2**22 // max(1, data.values.size))))

    def one(params):
        fn = numpyro.handlers.substitute(numpyro.handlers.seed(_compose, 0), data=params)
        return fn(population, model, site, data)

    phi, loglik = jax.jit(lambda s: jax.lax.map(one, s, batch_size=batch))(flat)
    return np.asarray(phi), np.asarray(loglik)


def _add_phi(tree, phi, param_names, ids):
    """Add the individual parameters to the posterior group, dims `(chain, draw, individual, param)`."""
    post = tree["posterior"].to_dataset()
    dim = "param"
    if dim in post.coords and list(post.coords[dim].values) != list(param_names):
        dim = "individual_param"  # a custom population labels `param` differently
    da = xr.DataArray(
        phi,
        dims=("chain", "draw", "individual", dim),
        coords={"chain": post.coords["chain"], "draw": post.coords["draw"], "individual": list(ids), dim: list(param_names)},
    )
    tree["posterior"] = post.assign(phi=da)
    return tree


