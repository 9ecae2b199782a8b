"""Ready population programs: Gaussian on the individual parameters' (log) scale.

Each is an ordinary NumPyro program `population(data)`; `nlp.amortize` turns it into the
surrogate model, and composed with the individual model it is the exact hierarchical model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float

from ._bounded_normal import bounded_or_normal
from .data import subject_index
from ._covariate_forms import Categorical, Exponential, Linear, Power, Term, checked_columns, coefficient_bounds, expand, features

__all__ = ["Categorical", "Exponential", "GaussianPopulation", "Linear", "Power", "gaussian"]

#: What `gaussian(covariates=...)` takes for each parameter: a covariate name, a form, or a sequence of them.
CovariateSpec = str | Power | Linear | Exponential | Categorical

#: Individuals per batch of `init_values`' per-individual medians.
_MEDIAN_BATCH = 4096


class GaussianPopulation(eqx.Module):
    """φ_i ~ Normal(mean, diag(sd)² or Σ) on the individual model's scale.

    Sites (all outside the individuals plate):

    - `mean` `(k,)`, one per parameter: Normal(prior mean, prior SD) per component.
      Default: the training prior's mean and SD (weakly informative by construction).
    - `sd` `(r,)` for the `r` parameters with a random effect: HalfNormal(`sd_prior_scale`).
      The default scale 1.0 on the log scale allows CVs from 0 to several hundred percent.
    - `corr_chol` (full covariance only): LKJCholesky(r, `lkj_concentration`), with the
      correlation matrix recorded as the deterministic site `corr`.

    - `beta` `(e,)` (only with estimated covariate effects): one coefficient per entry of
      `effects` (`(parameter, label)`: the covariate's name, or `<covariate>=<level>` for a
      categorical level), Normal(0, `beta_prior_scale`) (truncated to the admissible interval
      for a [`Linear`][nlme_ppl.populations.Linear] form). Individual i's mean of parameter p
      is `mean[p]` plus one term per covariate effect on p (`forms`): β·x_ic for a plain
      name, θ·log(x_ic/ref) for [`Power`][nlme_ppl.populations.Power], θ·(x_ic − ref) for
      [`Exponential`][nlme_ppl.populations.Exponential], log(1 + θ(x_ic − ref)) for `Linear`,
      θ_l·1[x_ic = l] for [`Categorical`][nlme_ppl.populations.Categorical]; a fixed θ is a
      constant, not a site.

    Inside `numpyro.plate("individuals", N)`: one site per random-effect parameter (diagonal)
    or one vector site `phi` (full), and for each parameter in `fixed` a `Delta` site at its
    (covariate-shifted) mean: no random effect, so individuals with the same covariates share
    one value.

    **Occasions** (inter-occasion variability, `occasions` non-empty, or data whose rows are
    occasions, `data.subjects`): the rows of the data are occasions, and two plates nest.
    `sd_occ` `(o,)` (HalfNormal(`sd_prior_scale`)) is the between-occasion SD of each parameter
    in `occasions`. Inside `numpyro.plate("subjects", S)`, `eta` `(S, r)` is each individual's
    random effect (Normal(0, sd²) per component, or MultivariateNormal with `corr_chol`);
    inside `numpyro.plate("individuals", N)`, `kappa` `(N, o)` is each occasion's, Normal(0,
    sd_occ²), and each parameter is a `Delta` site at mean + eta[subject] (+ kappa where it
    has IOV): the parameters without IOV are shared by an individual's occasions.
    """

    param_names: tuple[str, ...] = eqx.field(static=True)
    fixed: tuple[str, ...] = eqx.field(static=True)
    covariance: str = eqx.field(static=True)
    mean_loc: tuple[float, ...] = eqx.field(static=True, converter=lambda x: tuple(map(float, x)))
    mean_scale: tuple[float, ...] = eqx.field(static=True, converter=lambda x: tuple(map(float, x)))
    sd_prior_scale: float = eqx.field(static=True)
    lkj_concentration: float = eqx.field(static=True)
    exchangeable: tuple[tuple[str, ...], ...] = eqx.field(static=True, default=())
    effects: tuple[tuple[str, str], ...] = eqx.field(static=True, default=())
    beta_prior_scale: float = eqx.field(static=True, default=1.0)
    forms: tuple[tuple[str, CovariateSpec], ...] = eqx.field(static=True, default=())
    occasions: tuple[str, ...] = eqx.field(static=True, default=())

    def __check_init__(self):
        bad = [n for n in self.occasions if n not in self.param_names or n in self.fixed]
        if bad:
            raise ValueError(f"`occasions` names {bad}, which are not random-effect parameters of {self.random}.")
        estimated = tuple((t.param, t.label) for t in self.terms if t.value is None)
        if self.forms and estimated != self.effects:
            raise ValueError(f"`effects` {self.effects} must be the estimated terms of `forms` {estimated}; build it with gaussian(...).")

    @property
    def terms(self) -> tuple[Term, ...]:
        """Every covariate term, estimated and fixed, in the order of `forms` (a population
        built with `effects` only has one plain-name term per effect)."""
        forms = self.forms or self.effects
        return tuple(t for p, spec in forms for t in expand(p, spec))

    @property
    def random(self) -> tuple[str, ...]:
        return tuple(n for n in self.param_names if n not in self.fixed)

    @property
    def coords(self) -> dict[str, tuple[str, ...]]:
        """Dimension labels of each population site, for tables and ArviZ."""
        out = {"mean": self.param_names, "sd": self.random}
        if self.covariance == "full" and len(self.random) > 1:
            out["corr"] = (self.random, self.random)
        if self.effects:
            out["beta"] = tuple(f"{p},{c}" for p, c in self.effects)
        if self.occasions:
            out["sd_occ"] = self.occasions
        return out

    def covariate_matrix(self, data) -> Float[Array, "individuals e"]:
        """The `(N, e)` features of the estimated effects, from `data.covariates` (checked: see
        [`gaussian`][nlme_ppl.populations.gaussian]): x, log(x/ref), x − ref or 1[x = level]
        (for a `Linear` form x − ref, which enters the mean as log(1 + β·(x − ref)))."""
        est = [t for t in self.terms if t.value is None]
        return jnp.stack(features(est, checked_columns(est, data)), axis=-1)

    def individual_means(self, mean, beta, data) -> Float[Array, "individuals k"]:
        """Each individual's mean `(N, k)`: `mean` shifted by the covariate effects (`beta`:
        the `(e,)` estimated coefficients, `None` when there are none)."""
        n, k = data.num_individuals, len(self.param_names)
        loc = jnp.broadcast_to(mean, (n, k))
        terms = self.terms
        if not terms:
            return loc
        columns = checked_columns(terms, data)
        est = [t for t in terms if t.value is None]
        if est:
            contrib = jnp.stack(features(est, columns), axis=-1) * beta
            lin = np.array([j for j, t in enumerate(est) if t.kind == "linear"], dtype=int)
            if lin.size:
                contrib = contrib.at[:, lin].set(jnp.log1p(contrib[:, lin]))
            onehot = np.zeros((len(est), k))
            for e, t in enumerate(est):
                onehot[e, self.param_names.index(t.param)] = 1.0
            loc = loc + contrib @ jnp.asarray(onehot)
        for t, f in zip(fixed := [t for t in terms if t.value is not None], features(fixed, columns)):
            term = jnp.log1p(t.value * f) if t.kind == "linear" else t.value * f
            loc = loc.at[:, self.param_names.index(t.param)].add(term)
        return loc

    def __call__(self, data):
        names, random = self.param_names, self.random
        ridx = jnp.array([names.index(n) for n in random], dtype=int)
        mean = numpyro.sample("mean", dist.Normal(jnp.array(self.mean_loc), jnp.array(self.mean_scale)).to_event(1))
        n = data.num_individuals
        beta = None
        if self.effects:
            prior = bounded_or_normal(self.beta_prior_scale, coefficient_bounds(self.terms), len(self.effects))
            beta = numpyro.sample("beta", prior.to_event(1))
        shifted = bool(self.terms)
        loc = self.individual_means(mean, beta, data)  # (N, k)
        if random:
            sd = numpyro.sample("sd", dist.HalfNormal(self.sd_prior_scale * jnp.ones(len(random))).to_event(1))
        full = self.covariance == "full" and len(random) > 1
        chol = None
        if full:
            chol = numpyro.sample("corr_chol", dist.LKJCholesky(len(random), self.lkj_concentration))
            numpyro.deterministic("corr", chol @ chol.T)
        if self.occasions or getattr(data, "subjects", None) is not None:
            return self._nested(data, loc, sd if random else None, chol)
        with numpyro.plate("individuals", n):
            if full:
                numpyro.sample(
                    "phi",
                    dist.MultivariateNormal(loc[:, ridx] if shifted else mean[ridx], scale_tril=sd[:, None] * chol),
                    infer={"individual_params": random},
                )
            else:
                for j, name in enumerate(random):
                    m = loc[:, names.index(name)] if shifted else mean[names.index(name)]
                    numpyro.sample(name, dist.Normal(m, sd[j]))
            for name in self.fixed:
                m = loc[:, names.index(name)]
                numpyro.sample(name, dist.Delta(m), obs=m)

    def _nested(self, data, loc, sd, chol):
        """The occasions' program: individuals' effects `eta` in the subjects plate, occasions'
        `kappa` in the individuals (rows) plate (see the class docstring)."""
        names, random = self.param_names, self.random
        index, subjects = subject_index(data)
        ridx = np.array([names.index(n) for n in random], dtype=int)
        phi = loc
        if random:
            with numpyro.plate("subjects", len(subjects)):
                if chol is not None:
                    eta = numpyro.sample("eta", dist.MultivariateNormal(jnp.zeros(len(random)), scale_tril=sd[:, None] * chol))
                else:
                    eta = numpyro.sample("eta", dist.Normal(jnp.zeros(len(random)), sd).to_event(1))
            phi = phi.at[:, ridx].add(eta[jnp.asarray(index)])
        if self.occasions:
            sd_occ = numpyro.sample("sd_occ", dist.HalfNormal(self.sd_prior_scale * jnp.ones(len(self.occasions))).to_event(1))
        with numpyro.plate("individuals", data.num_individuals):
            if self.occasions:
                kappa = numpyro.sample("kappa", dist.Normal(jnp.zeros(len(self.occasions)), sd_occ).to_event(1))
                phi = phi.at[:, np.array([names.index(n) for n in self.occasions])].add(kappa)
            for j, name in enumerate(names):
                numpyro.sample(name, dist.Delta(phi[:, j]))

    def label(self, draws):
        """Relabel each exchangeable group of `draws` (`(..., k)`) in the order of the prior means:
        the parameter with the larger `mean_loc` gets the larger value. Individual posteriors
        of exchangeable parameters are symmetric, so this is the labelling the population
        prior favours; it is used only to pick starting points."""
        draws = jnp.asarray(draws)
        for group in self.exchangeable:
            idx = [self.param_names.index(n) for n in group]
            by_loc = [i for _, i in sorted(((-self.mean_loc[i], i) for i in idx))]  # largest prior mean first
            values = -jnp.sort(-draws[..., jnp.array(idx)], axis=-1)  # decreasing
            draws = draws.at[..., jnp.array(by_loc)].set(values)
        return draws

    def init_values(self, draws) -> dict[str, jnp.ndarray]:
        """A starting point from individual draws `(N, M, k)`: medians of per-individual medians,
        and SDs from their spread (median absolute deviation × 1.4826), floored at 0.05.
        Exchangeable groups are first labelled by [`label`][nlme_ppl.populations.GaussianPopulation.label]."""
        # each individual's median in batches of `_MEDIAN_BATCH`: over all (N, M, k) draws at
        # once, the sort's copies were 8 GiB at N = 10^6 (the same medians)
        draws = jnp.asarray(draws)
        med = jax.lax.map(lambda v: jnp.median(self.label(v), axis=0), draws, batch_size=min(_MEDIAN_BATCH, draws.shape[0])).astype(jnp.float64)  # (N, k)
        centre = jnp.median(med, axis=0)
        spread = 1.4826 * jnp.median(jnp.abs(med - centre), axis=0)
        names = self.param_names
        out = {"mean": centre}
        if self.random:
            out["sd"] = jnp.maximum(spread[jnp.array([names.index(n) for n in self.random])], 0.05)
        if self.covariance == "full" and len(self.random) > 1:
            out["corr_chol"] = jnp.eye(len(self.random))
        if self.effects:
            out["beta"] = jnp.zeros(len(self.effects))
        return out


def gaussian(
    model,
    *,
    covariance: str = "diag",
    fixed: Sequence[str] = (),
    mean_prior: Mapping[str, tuple[float, float]] | None = None,
    sd_prior_scale: float = 1.0,
    lkj_concentration: float = 2.0,
    covariates: Mapping[str, CovariateSpec | Sequence[CovariateSpec]] | None = None,
    beta_prior_scale: float = 1.0,
    occasions: Sequence[str] = (),
) -> GaussianPopulation:
    """A Gaussian population model over `model`'s individual parameters.

    **Arguments:**

    - `model`: an [`IndividualModel`][nlme_ppl.models.IndividualModel] (or a tuple of parameter names).
    - `covariance`: `"diag"` (independent random effects) or `"full"` (LKJ-correlated).
    - `fixed`: parameters without a random effect (one value shared by all individuals).
    - `mean_prior`: `{name: (loc, scale)}` overriding the Normal prior of `mean[name]`
      (default: the training prior's mean and SD, if `model` has a Normal training prior, else (0, 3)).
    - `sd_prior_scale`: scale of the HalfNormal prior on every `sd[name]`.
    - `lkj_concentration`: LKJ concentration for `covariance="full"` (2.0 mildly favours small correlations).
    - `covariates`: covariate effects on the means, `{param: effect or effects}`. An effect is
      a covariate name (a key of `data.covariates`) or a form:
        - a name `"x"`: linear on the parameter's (log) scale, `beta[p,x] · x_i`; centre the
          covariate so that `mean[p]` is a typical individual's value. A 0/1 covariate gives a
          group difference, e.g. two experiments that share every parameter except γ:
          `{"gamma": "experiment"}`;
        - [`Power("WT", ref=70, exponent=0.75)`][nlme_ppl.populations.Power]: allometric,
          p_i = p_pop · (WT_i/70)^0.75; `exponent=None` estimates it as `beta[p,WT]`;
        - [`Exponential("AGE", ref=40)`][nlme_ppl.populations.Exponential]: p_pop · exp(θ (AGE_i − 40));
        - [`Linear("AGE", ref=40, limits=(18, 90))`][nlme_ppl.populations.Linear]: p_pop · (1 + θ (AGE_i − 40)),
          θ constrained so that 1 + θ (x − 40) > 0 on the limits;
        - [`Categorical("SEX", levels=(1, 2))`][nlme_ppl.populations.Categorical]: `beta[p,SEX=2]`
          for each level but the reference.

      Each parameter takes a covariate at most once. The data are checked when the program
      runs: a covariate missing from the data, a non-finite value, a value ≤ 0 for a power
      form, outside a linear form's limits or not among a categorical form's levels raise a
      `ValueError` naming the individual (inside `jit`, an `eqx.error_if` naming the covariate).
    - `beta_prior_scale`: SD of the Normal(0, ·) prior on each estimated covariate coefficient `beta`.
    - `occasions`: parameters with inter-occasion variability (IOV), e.g. `("CL",)`: on data
      whose rows are occasions (`read_nonmem(..., occasion="OCC")`, or
      [`Dataset.with_subjects`][nlme_ppl.Dataset.with_subjects]), each such parameter varies
      between an individual's occasions with SD `sd_occ[p]` around the individual's value; the
      other parameters are shared by its occasions. [`fit_map`][nlme_ppl.fit_map] fits it
      with the same estimator, one occasion per unit (see the [IOV guide](guide/occasions.md)).

    **Returns:** a [`GaussianPopulation`][nlme_ppl.populations.GaussianPopulation], a NumPyro program `population(data)`.
    """
    names = tuple(model) if isinstance(model, (tuple, list)) else tuple(model.param_names)
    if covariance not in ("diag", "full"):
        raise ValueError(f"`covariance` must be 'diag' or 'full'; got {covariance!r}.")
    fixed = tuple(fixed)
    unknown = [f for f in fixed if f not in names]
    if unknown:
        raise ValueError(f"`fixed` names unknown parameter(s) {unknown}; the model's parameters are {names}.")
    loc, scale = [], []
    prior = getattr(model, "prior", {})
    for n in names:
        p = prior.get(n)
        if isinstance(p, dist.Normal):
            loc.append(float(p.loc)), scale.append(float(p.scale))
        else:
            loc.append(0.0), scale.append(3.0)
    for n, (lo, sc) in (mean_prior or {}).items():
        if n not in names:
            raise ValueError(f"`mean_prior` names unknown parameter {n!r}; the model's parameters are {names}.")
        if not sc > 0:
            raise ValueError(f"`mean_prior[{n!r}]` scale must be positive; got {sc}.")
        loc[names.index(n)], scale[names.index(n)] = float(lo), float(sc)
    if not sd_prior_scale > 0:
        raise ValueError(f"`sd_prior_scale` must be positive; got {sd_prior_scale}.")
    exchangeable = tuple(tuple(g) for g in getattr(model, "exchangeable", ()))
    forms, effects = _covariate_forms(covariates, names)
    if not beta_prior_scale > 0:
        raise ValueError(f"`beta_prior_scale` must be positive; got {beta_prior_scale}.")
    return GaussianPopulation(
        names, fixed, covariance, loc, scale, float(sd_prior_scale), float(lkj_concentration), exchangeable,
        effects, float(beta_prior_scale), forms, tuple(occasions),
    )


def _covariate_forms(covariates, names) -> tuple[tuple, tuple]:
    """`((param, name or form), ...)` and the `(param, label)` of each estimated coefficient."""
    forms, seen = [], set()
    for p, specs in (covariates or {}).items():
        if p not in names:
            raise ValueError(f"`covariates` names unknown parameter {p!r}; the model's parameters are {names}.")
        single = isinstance(specs, (str, Power, Linear, Exponential, Categorical))
        if not single and not isinstance(specs, Sequence):
            raise TypeError(f"`covariates[{p!r}]` must be covariate names (strings) or forms, or a sequence of them; got {specs!r}.")
        for spec in (specs,) if single else tuple(specs):
            if isinstance(spec, str) and not spec:
                raise TypeError(f"`covariates[{p!r}]` must be covariate names (strings); got {spec!r}.")
            expand(p, spec)  # refuses anything but a name or a form
            c = spec if isinstance(spec, str) else spec.covariate
            if (p, c) in seen:
                raise ValueError(f"`covariates[{p!r}]` lists {c!r} twice.")
            seen.add((p, c))
            forms.append((p, spec))
    effects = tuple((t.param, t.label) for p, spec in forms for t in expand(p, spec) if t.value is None)
    return tuple(forms), effects
