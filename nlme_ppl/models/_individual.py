"""`IndividualModel`: a NumPyro program `individual(design, obs=None)`, traced once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float, PyTree

from ._censoring import LeftCensored
from ._dose_records import DEFAULT_DOSE_COMPARTMENTS, check_dose_records, normalise_compartments
from ._individual_checks import _check_analytes_and_covariates, _check_design_entries, _check_exchangeable, _dist_spec, _inspect

__all__ = ["IndividualModel"]


class IndividualModel(eqx.Module):
    """An individual model: a NumPyro program `fn(design, obs=None)`.

    Its latent sample sites are the individual parameters φ (`param_names`, in program
    order); their distributions are the *training prior* p(φ). The site `obs_site` is the
    measurement, a vector with one entry per observation time.

    **Arguments:**

    - `fn`: the NumPyro program.
    - `design`: one individual's design, a dict with at least `"times"` (shape `(T,)`) and
      optionally `"mask"` (shape `(T,)`, `True` = observed). Other entries (dose, covariates)
      are passed to the program unchanged.
    - `name`: a name used in estimator files and messages.
    - `obs_site`: the observed site's name (default `"obs"`).
    - `design_prior`: optional `(key, n) -> batched design` used when simulating training data,
      so that the estimator sees varied designs. Default: the fixed `design` for everyone.
    - `description`: free text shown in docs and `repr`.
    - `exchangeable`: groups of parameters that the likelihood and the training prior treat
      symmetrically (e.g. `(("delta", "gamma"),)` when swapping two rates leaves the
      solution unchanged). Their posterior is multimodal by symmetry. Estimators then learn
      the *canonical* (sorted, largest first) form, which is unimodal and much easier, and
      sample the exact symmetric posterior by permuting each draw's group uniformly at random.
      The training priors within a group must be identical (checked).
    - `tractable`: whether `log p(y | φ)` is the observed site's density given the latent
      sites alone (default `True`). A program with hidden randomness (an SDE's Brownian path
      drawn from `numpyro.prng_key()`) sets `False`: amortized inference works unchanged, and
      the exact baselines and `log_likelihood` refuse it.
    - `data_check`: optional `(dataset) -> None` that raises a `ValueError` for data the
      program cannot simulate (e.g. a dose route it does not model); run before any fit.
    - `simulation_chunk`: simulations per compiled call of `nlp.simulate` by default. Adaptive
      solvers under `vmap` step every member in lockstep, so a stiff model runs faster in
      smaller chunks (`frohlich_detailed` uses 2,000).
    - `analytes`: for a program that observes several compartments (a parent drug and its
      metabolite), their NONMEM CMT numbers, e.g. `(2, 3)`. The design then has `"obs_cmt"`
      (shape `(T,)`), the compartment of each observation, taken from `Dataset.obs_cmt`.
    - `covariates`: individual covariates the *simulator* reads (e.g. body weight in allometric
      scaling), `{name: (centre, scale)}`. Each is a scalar design entry `name`, taken from
      `Dataset.covariates[name]`; estimators read it as `(x - centre) / scale` on every row.
    - `dose_compartments`: for a dosing model, what the data's NONMEM CMT numbers on dose rows
      mean, `{CMT: "depot" | "central"}` (default `{1: "depot", 2: "central"}`, as NONMEM's
      ADVAN2/4; the IV models use `{1: "central"}`, as ADVAN1/3). The design's `dose_cmt` holds
      the CMT numbers as in the data; doses into another CMT are refused by `check_data`.
      Design entries `"dose_ii"` (steady-state interval, 0 for none) and `"dose_end"` (the time
      of a reset that ends the dose, +inf for none) mark a program that simulates steady-state
      doses and resets; data with those records are refused by a model without them.

    Censoring: a design entry `"lloq"` (shape `(T,)`, `-inf` for none) marks a program that
    censors its observations below that limit ([`LeftCensored`][nlme_ppl.models.LeftCensored]);
    its simulations carry `Dataset.censored` flags, and its estimators read them.

    Every latent site must be a scalar with support on the whole real line: write positive
    quantities on the log scale (`log_k ~ Normal`, then `jnp.exp(log_k)` in the simulator).
    """

    fn: Callable = eqx.field(static=True)
    design: PyTree
    name: str = eqx.field(static=True)
    obs_site: str = eqx.field(static=True)
    param_names: tuple[str, ...] = eqx.field(static=True)
    prior: dict[str, dist.Distribution]
    design_prior: Callable | None = eqx.field(static=True)
    description: str = eqx.field(static=True)
    exchangeable: tuple[tuple[str, ...], ...] = eqx.field(static=True)
    tractable: bool = eqx.field(static=True)
    data_check: Callable | None = eqx.field(static=True)
    simulation_chunk: int = eqx.field(static=True)
    analytes: tuple[int, ...] = eqx.field(static=True)
    covariates: tuple[tuple[str, float, float], ...] = eqx.field(static=True)
    dose_compartments: tuple[tuple[int, str], ...] = eqx.field(static=True)

    def __init__(
        self,
        fn: Callable,
        design: dict,
        *,
        name: str = "custom",
        obs_site: str = "obs",
        design_prior: Callable | None = None,
        description: str = "",
        exchangeable: tuple[tuple[str, ...], ...] = (),
        tractable: bool = True,
        data_check: Callable | None = None,
        simulation_chunk: int = 10_000,
        analytes: tuple[int, ...] = (),
        covariates: dict[str, tuple[float, float]] | None = None,
        dose_compartments: dict[int, str] | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"`fn` must be a NumPyro program (a callable); got {type(fn).__name__}.")
        if not isinstance(design, dict) or "times" not in design:
            raise ValueError(
                "`design` must be a dict with at least a 'times' entry (the observation times of "
                f"one individual); got {type(design).__name__}"
                + (f" with keys {sorted(design)}" if isinstance(design, dict) else "")
                + "."
            )
        design = {k: jnp.asarray(v) for k, v in design.items()}
        design.setdefault("mask", jnp.ones(jnp.shape(design["times"]), bool))
        self.fn, self.design, self.name, self.obs_site = fn, design, name, obs_site
        self.design_prior, self.description = design_prior, description
        self.analytes = tuple(int(a) for a in analytes)
        self.covariates = tuple((str(k), float(c), float(sc)) for k, (c, sc) in (covariates or {}).items())
        self.dose_compartments = normalise_compartments(dose_compartments, name)
        _check_design_entries(self)
        self.param_names, self.prior = _inspect(fn, design, obs_site, name)
        self.exchangeable = tuple(tuple(g) for g in exchangeable)
        self.tractable = bool(tractable)
        self.data_check = data_check
        self.simulation_chunk = int(simulation_chunk)
        _check_exchangeable(self)

    # ------------------------------------------------------------------ densities
    @property
    def num_params(self) -> int:
        return len(self.param_names)

    def prior_log_prob(self, params: Float[Array, "... k"]) -> Float[Array, "..."]:
        """Training-prior log-density log p(φ) of parameter vectors `params` (last axis: `param_names`)."""
        params = jnp.asarray(params)
        if params.shape[-1] != self.num_params:
            raise ValueError(
                f"expected parameter vectors of length {self.num_params} ({', '.join(self.param_names)}); "
                f"got shape {params.shape}."
            )
        return sum(self.prior[n].log_prob(params[..., i]) for i, n in enumerate(self.param_names))

    def prior_sample(self, key, shape=()) -> Float[Array, "... k"]:
        keys = jax.random.split(key, self.num_params)
        return jnp.stack([self.prior[n].sample(k, shape) for k, n in zip(keys, self.param_names)], -1)

    # ------------------------------------------------------------------ symmetry
    def _groups(self):
        return [jnp.array([self.param_names.index(n) for n in g]) for g in self.exchangeable]

    def canonicalize(self, params: Float[Array, "... k"]) -> Float[Array, "... k"]:
        """Sort each `exchangeable` group in decreasing order (identity without groups)."""
        params = jnp.asarray(params)
        for idx in self._groups():
            params = params.at[..., idx].set(-jnp.sort(-params[..., idx], axis=-1))
        return params

    def symmetrize(self, key, params: Float[Array, "... k"]) -> Float[Array, "... k"]:
        """Permute each `exchangeable` group of every vector uniformly at random."""
        params = jnp.asarray(params)
        for k, idx in zip(jax.random.split(key, max(1, len(self.exchangeable))), self._groups()):
            order = jnp.argsort(jax.random.uniform(k, (*params.shape[:-1], idx.size)), axis=-1)
            params = params.at[..., idx].set(jnp.take_along_axis(params[..., idx], order, axis=-1))
        return params

    @property
    def log_num_symmetries(self) -> float:
        """log of the number of equivalent relabelings, Σ_groups log(|group|!)."""
        import math

        return float(sum(math.lgamma(len(g) + 1) for g in self.exchangeable))

    # ------------------------------------------------------------------ designs
    def sample_designs(self, key, num: int) -> PyTree:
        """`num` designs for simulation: from `design_prior` if given, else the fixed design."""
        if self.design_prior is not None:
            return self.design_prior(key, num)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (num, *jnp.shape(x))), self.design)

    def designs_from_data(self, data) -> PyTree:
        """Per-individual designs for a `Dataset`: its times and mask, other entries broadcast."""
        self.check_data(data)
        n, t = data.times.shape
        per_individual = {"times": data.times, "mask": data.mask}
        if self.uses_doses:
            per_individual.update({k: v for k, v in data.doses.design().items() if k in self.design})
        for name, *_ in self.covariates:
            per_individual[name] = jnp.asarray(data.covariates[name], float)
        if self.analytes:
            per_individual["obs_cmt"] = data.obs_cmt
        if self.uses_censoring:
            # M3: a censored observation's recorded value is its limit; the others have none
            cens = jnp.zeros_like(data.mask) if data.censored is None else data.censored & data.mask
            per_individual["lloq"] = jnp.where(cens, data.values, -jnp.inf)
        base = {k: v for k, v in self.design.items() if k not in per_individual}
        out = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), base)
        return {**out, **per_individual}

    def check_data(self, data) -> None:
        """Refuse data this model cannot read as given: doses missing for a dosing model, doses a
        non-dosing model would ignore, and whatever the model's `data_check` refuses."""
        doses = getattr(data, "doses", None)
        if self.uses_doses and doses is None:
            raise ValueError(
                f"model {self.name!r} simulates dosing events but the data has none; read the data with "
                "nlp.read_nonmem (AMT/EVID dose rows) or pass Dataset.from_arrays(..., doses=nlp.Doses...)."
            )
        if not self.uses_doses and doses is not None:
            raise ValueError(
                f"the data has dosing events but model {self.name!r} does not read doses (its design has no "
                "'dose_times'); they would be ignored. Use a dosing model (e.g. pk_oral_1cmt) or drop the doses."
            )
        if doses is not None and self.uses_doses:
            check_dose_records(self, data)
        if doses is not None and self.data_check is not None:
            self.data_check(data)
        _check_analytes_and_covariates(self, data)
        censored = getattr(data, "censored", None)
        if censored is not None and not self.uses_censoring:
            i = int(np.flatnonzero(np.asarray(censored).any(axis=1))[0])
            raise ValueError(
                f"the data has {int(np.asarray(censored).sum())} censored observation(s) (below the limit of "
                f"quantification), the first for individual {data.ids[i]!r}, but model {self.name!r} does not "
                "simulate censoring (its design has no 'lloq'), so they would be read as measured values. Use a "
                "censoring model (e.g. pk_oral_1cmt(censoring=True)), or drop the censored rows explicitly."
            )

    @property
    def uses_censoring(self) -> bool:
        """Whether the program censors observations below a limit of quantification (its design
        has `lloq`, one limit per observation; see [`LeftCensored`][nlme_ppl.models.LeftCensored])."""
        return "lloq" in self.design

    @property
    def uses_doses(self) -> bool:
        """Whether the program reads dosing events from its design (`dose_times`, `dose_amounts`, ...)."""
        return "dose_times" in self.design

    # ------------------------------------------------------------------ simulation
    def simulate_one(self, key, design) -> tuple[Float[Array, " k"], Float[Array, " T"]]:
        """One draw (φ, y) from the prior predictive at `design`."""
        tr = numpyro.handlers.trace(numpyro.handlers.seed(self.fn, key)).get_trace(design)
        params = jnp.stack([jnp.asarray(tr[n]["value"], float) for n in self.param_names])
        return params, tr[self.obs_site]["value"]

    def log_likelihood(self, params: Float[Array, " k"], design, obs: Float[Array, " T"]) -> Float[Array, ""]:
        """Exact log p(y | φ) of one individual (where the program's likelihood is tractable)."""
        if not self.tractable:
            raise ValueError(
                f"model {self.name!r} has no tractable likelihood p(y | phi) (it declares tractable=False, "
                "e.g. an SDE whose path is hidden randomness); use the amortized methods (fit_map, fit_nuts)."
            )
        values = {n: params[i] for i, n in enumerate(self.param_names)}
        cond = numpyro.handlers.condition(self.fn, data=values)
        tr = numpyro.handlers.trace(numpyro.handlers.seed(cond, 0)).get_trace(design, obs=obs)
        site = tr[self.obs_site]
        return jnp.sum(site["fn"].log_prob(site["value"]))

    def observation_distribution(self, params: Float[Array, " k"], design, key=None) -> dist.Distribution:
        """The observed site's distribution given φ = `params` *before censoring*, with batch
        shape `(T,)`: the masks, `Independent` and [`LeftCensored`][nlme_ppl.models.LeftCensored]
        wrappers are taken off. `key` seeds the program's hidden randomness (default 0)."""
        values = {n: params[i] for i, n in enumerate(self.param_names)}
        cond = numpyro.handlers.condition(self.fn, data=values)
        tr = numpyro.handlers.trace(numpyro.handlers.seed(cond, 0 if key is None else key)).get_trace(design)
        fn = tr[self.obs_site]["fn"]
        while isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution, LeftCensored)):
            fn = fn.base if isinstance(fn, LeftCensored) else fn.base_dist
        return fn

    def observation_moments(
        self, params: Float[Array, " k"], design, *, key=None, num_paths: int = 200
    ) -> tuple[Float[Array, " T"], Float[Array, " T"]]:
        """Mean and SD of each observation given φ = `params`, before censoring.

        For a tractable model they are the moments of the observed site's distribution (its
        `.mean` and `.stddev`: for `Normal(f(φ), sd)` the prediction f(φ) and the residual SD),
        with any [`LeftCensored`][nlme_ppl.models.LeftCensored] taken off. A model with hidden
        randomness (`tractable=False`, e.g. an SDE's path) is run `num_paths` times with keys
        split from `key`, and the moments are combined by the law of total variance:
        mean = E_path[m], var = E_path[s²] + Var_path[m]. One individual; `vmap` it over a batch.

        **Arguments:**

        - `params`: `(k,)` individual parameters, in `param_names` order.
        - `design`: one individual's design (e.g. a row of `designs_from_data(data)`).
        - `key`: a JAX key, required when the model is not tractable.
        - `num_paths`: hidden-randomness paths averaged over (intractable models only).

        **Returns:** `(mean, sd)`, each of shape `(T,)` (padded entries included).
        """
        params = jnp.asarray(params)
        if params.shape != (self.num_params,):
            raise ValueError(f"expected one parameter vector of length {self.num_params} ({', '.join(self.param_names)}); "
                             f"got shape {params.shape}; vmap over a batch.")  # fmt: skip
        shape = jnp.shape(design["times"])

        def moments(k):
            fn = self.observation_distribution(params, design, k)
            return jnp.broadcast_to(fn.mean, shape), jnp.broadcast_to(fn.variance, shape)

        if self.tractable:
            mean, var = moments(None)
            return mean, jnp.sqrt(var)
        if key is None:
            raise ValueError(
                f"model {self.name!r} has hidden randomness (tractable=False): its observation moments are averaged "
                "over num_paths simulated paths, which needs a JAX key; pass key=jax.random.key(...)."
            )
        if int(num_paths) < 2:
            raise ValueError(f"`num_paths` must be at least 2 to estimate the spread between paths; got {num_paths}.")
        means, variances = jax.vmap(moments)(jax.random.split(key, int(num_paths)))
        mean = jnp.mean(means, 0)
        return mean, jnp.sqrt(jnp.mean(variances, 0) + jnp.var(means, 0))

    # ------------------------------------------------------------------ identity
    def prior_spec(self) -> dict[str, dict[str, Any]]:
        """A JSON-able description of the training prior."""
        return {n: _dist_spec(self.prior[n]) for n in self.param_names}

    def fingerprint(self) -> str:
        """A hash of what an estimator depends on: name, parameters, prior, observed site, design."""
        payload = {
            "name": self.name,
            "param_names": list(self.param_names),
            "obs_site": self.obs_site,
            "prior": self.prior_spec(),
            "exchangeable": [list(g) for g in self.exchangeable],
            "design": {k: np.asarray(v, float).round(10).tolist() for k, v in sorted(self.design.items())},
        }
        if self.analytes:  # only when set, so that the fingerprints of other models stay as they were
            payload["analytes"] = list(self.analytes)
        if self.covariates:
            payload["covariates"] = [list(c) for c in self.covariates]
        if self.dose_compartments != DEFAULT_DOSE_COMPARTMENTS:
            payload["dose_compartments"] = [list(c) for c in self.dose_compartments]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"IndividualModel({self.name!r}, params={self.param_names}, T={jnp.shape(self.design['times'])[0]})"
