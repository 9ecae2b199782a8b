"""Ready population programs: Gaussian on the individual parameters' (log) scale.

Each is an ordinary NumPyro program `population(data)`; `nlp.amortize` turns it into the
surrogate model, and composed with the individual model it is the exact hierarchical model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

__all__ = ["GaussianPopulation", "gaussian"]


class GaussianPopulation(eqx.Module):
    """φ_i ~ Normal(mean, diag(sd)² or Σ) on the individual model's scale.

    Sites (all outside the individuals plate):

    - `mean` `(k,)`, one per parameter: Normal(prior mean, prior SD) per component.
      Default: the training prior's mean and SD (weakly informative by construction).
    - `sd` `(r,)` for the `r` parameters with a random effect: HalfNormal(`sd_prior_scale`).
      The default scale 1.0 on the log scale allows CVs from 0 to several hundred percent.
    - `corr_chol` (full covariance only): LKJCholesky(r, `lkj_concentration`), with the
      correlation matrix recorded as the deterministic site `corr`.

    - `beta` `(e,)` (only with covariate effects): one coefficient per (parameter, covariate)
      pair of `effects`, Normal(0, `beta_prior_scale`). Individual i's mean of parameter p is
      `mean[p] + Σ_c beta[p,c] · x_ic`, with x_ic taken from `data.covariates[c]`.

    Inside `numpyro.plate("individuals", N)`: one site per random-effect parameter (diagonal)
    or one vector site `phi` (full), and for each parameter in `fixed` a `Delta` site at its
    (covariate-shifted) mean: no random effect, so individuals with the same covariates share
    one value.
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
        return out

    def covariate_matrix(self, data) -> jnp.ndarray:
        """The `(N, e)` covariate values of `effects`, from `data.covariates`."""
        have = getattr(data, "covariates", {}) or {}
        missing = sorted({c for _, c in self.effects if c not in have})
        if missing:
            raise ValueError(
                f"the population model has covariate effects on {missing} but the data has "
                f"covariates {sorted(have)}; add them (e.g. Dataset.from_arrays(..., covariates=...), "
                "read_nonmem(..., covariates=...) or data.with_covariates(...))."
            )
        return jnp.stack([jnp.asarray(have[c], jnp.result_type(float)) for _, c in self.effects], axis=-1)

    def individual_means(self, mean, beta, data) -> jnp.ndarray:
        """Each individual's mean `(N, k)`: `mean` shifted by the covariate effects."""
        n, k = data.num_individuals, len(self.param_names)
        loc = jnp.broadcast_to(mean, (n, k))
        if not self.effects:
            return loc
        onehot = np.zeros((len(self.effects), k))
        for e, (p, _) in enumerate(self.effects):
            onehot[e, self.param_names.index(p)] = 1.0
        return loc + (self.covariate_matrix(data) * beta) @ jnp.asarray(onehot)

    def __call__(self, data):
        names, random = self.param_names, self.random
        ridx = jnp.array([names.index(n) for n in random], dtype=int)
        mean = numpyro.sample("mean", dist.Normal(jnp.array(self.mean_loc), jnp.array(self.mean_scale)).to_event(1))
        n = data.num_individuals
        beta = None
        if self.effects:
            scale = self.beta_prior_scale * jnp.ones(len(self.effects))
            beta = numpyro.sample("beta", dist.Normal(jnp.zeros(len(self.effects)), scale).to_event(1))
        loc = self.individual_means(mean, beta, data)  # (N, k)
        if random:
            sd = numpyro.sample("sd", dist.HalfNormal(self.sd_prior_scale * jnp.ones(len(random))).to_event(1))
        full = self.covariance == "full" and len(random) > 1
        if full:
            chol = numpyro.sample("corr_chol", dist.LKJCholesky(len(random), self.lkj_concentration))
            numpyro.deterministic("corr", chol @ chol.T)
        with numpyro.plate("individuals", n):
            if full:
                numpyro.sample(
                    "phi",
                    dist.MultivariateNormal(loc[:, ridx] if self.effects else mean[ridx], scale_tril=sd[:, None] * chol),
                    infer={"individual_params": random},
                )
            else:
                for j, name in enumerate(random):
                    m = loc[:, names.index(name)] if self.effects else mean[names.index(name)]
                    numpyro.sample(name, dist.Normal(m, sd[j]))
            for name in self.fixed:
                m = loc[:, names.index(name)]
                numpyro.sample(name, dist.Delta(m), obs=m)

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
        med = jnp.median(self.label(draws), axis=1)  # (N, k)
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
    covariates: Mapping[str, Sequence[str] | str] | None = None,
    beta_prior_scale: float = 1.0,
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
    - `covariates`: covariate effects on the means, `{param: covariate name or names}`; each
      name is a key of `data.covariates`. Effects are linear on the parameter's (log) scale,
      so a power model CL = CL_pop · (WT/70)^θ is `{"CL": "log_wt70"}` with the covariate
      `log(WT/70)`. Centre covariates so that `mean[p]` is a typical individual's value.
      A binary covariate (0/1) gives a group difference, e.g. two experiments that share
      every parameter except γ: `{"gamma": "experiment"}`.
    - `beta_prior_scale`: SD of the Normal(0, ·) prior on each covariate coefficient `beta`.

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
    effects = []
    for p, covs in (covariates or {}).items():
        if p not in names:
            raise ValueError(f"`covariates` names unknown parameter {p!r}; the model's parameters are {names}.")
        for c in (covs,) if isinstance(covs, str) else tuple(covs):
            if not isinstance(c, str) or not c:
                raise TypeError(f"`covariates[{p!r}]` must be covariate names (strings); got {c!r}.")
            if (p, c) in effects:
                raise ValueError(f"`covariates[{p!r}]` lists {c!r} twice.")
            effects.append((p, c))
    if not beta_prior_scale > 0:
        raise ValueError(f"`beta_prior_scale` must be positive; got {beta_prior_scale}.")
    return GaussianPopulation(
        names, fixed, covariance, loc, scale, float(sd_prior_scale), float(lkj_concentration), exchangeable,
        tuple(effects), float(beta_prior_scale),
    )
