"""Model selection on one set of draws: a comparison table of population models, and the
stepwise covariate search (forward inclusion, backward elimination) of PsN's SCM.

Every population model fitted with the same estimator and key is fitted on the same draws
φ_ij, and the surrogate's log-likelihood is log p(D | θ) − Σ_i log p_train(y_i): the constant
does not depend on the population model, so differences of log-likelihoods between population
models (likelihood-ratio statistics, ΔAIC, ΔBIC) need no absolute scale.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from numpyro.infer.util import potential_energy
from scipy import stats

from .._validate import check_keys, positive_int
from ..data import Dataset
from ..populations import gaussian
from ._objective import Objective
from .map import objective_at_fit
from .map import fit_map, refined_posterior

__all__ = ["CovariateSearchResult", "compare", "covariate_search"]


# ---------------------------------------------------------------------------------------- compare
def compare(
    fits, data: Dataset | None = None, key=None, *, loo: bool = True, num_observations: int | None = None, num_loo_draws: int = 500
) -> pd.DataFrame:
    """A table comparing population models fitted to the same data (ideally with the same
    estimator and key, so on the same draws).

    Columns: `num_params` (estimated population parameters), `loglik` (on the absolute scale
    where every fit has `absolute`, else the surrogate's relative log-likelihood; `scale` says
    which), `mc_se` (its Monte Carlo SE, absolute scale only), `ofv` (−2 `loglik`),
    `aic` (`ofv` + 2p), `bic` (`ofv` + p log n, n observations), `delta_aic`, `delta_bic`
    (to the best model). Differences are exact on either scale (the constant cancels).
    With `loo=True`, also `elpd_loo`, `se`, `p_loo`, `weight` (stacking) from `az.compare`,
    and `loo_pareto_k_max` (above 0.7 the PSIS estimate is unreliable for some individual);
    `elpd_loo` is on the scale of `loglik` (the absolute one adds the constant Σ log p_train(y_i)).
    A MAP fit is one point, so its leave-one-individual-out ELPD is estimated by PSIS-LOO
    over `num_loo_draws` draws of the Laplace approximation of its posterior (in the
    unconstrained parameters, at the estimate, with the fit's Hessian), corrected to the
    surrogate posterior by importance weights (`az.loo_approximate_posterior`).
    Rows are sorted by AIC.

    **Arguments:**

    - `fits`: a mapping name → [`MAPResult`][nlme_ppl.MAPResult], or a sequence (named
      `model_0`, `model_1`, ...).
    - `data`: the [`Dataset`][nlme_ppl.Dataset] they were fitted to (needed for `loo`; gives n).
    - `key`: a JAX random key (the Laplace draws; needed for `loo`).
    - `loo`: add the PSIS-LOO columns.
    - `num_observations`: n for BIC where neither `data` nor the fits' `absolute` give it.
    - `num_loo_draws`: Laplace draws per fit for LOO.

    **Returns:** a `pandas.DataFrame` indexed by model name.
    """
    fits = _named(fits)
    if loo and (data is None or key is None):
        raise ValueError("loo=True needs the data the fits were made on and a key: compare(fits, data, key); or pass loo=False.")
    _same_data(fits, data)
    scales = {name: ("absolute" if fit.absolute is not None else "relative") for name, fit in fits.items()}
    if len(set(scales.values())) > 1:
        absolute = [n for n, s in scales.items() if s == "absolute"]
        raise ValueError(
            f"fits {absolute} have an absolute log-likelihood and {[n for n in fits if n not in absolute]} only the surrogate's "
            "relative one; the two scales differ by Σ log p_train(y_i) and cannot be mixed. Fit them all the same way "
            "(refine='auto' on a tractable model gives the absolute scale), or compute `absolute` for every fit "
            "(nlp.inference.objective_function)."
        )
    n = _num_observations(fits, data, num_observations)
    rows = {}
    for name, fit in fits.items():
        p = len(fit.params)
        ll = float(fit.absolute.loglik) if fit.absolute is not None else float(fit.log_likelihood)
        se = float(fit.absolute.loglik_mc_se) if fit.absolute is not None else float("nan")
        rows[name] = {"num_params": p, "loglik": ll, "mc_se": se, "scale": scales[name], "ofv": -2.0 * ll,
                      "aic": -2.0 * ll + 2.0 * p, "bic": -2.0 * ll + p * math.log(n)}  # fmt: skip
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    table["delta_aic"] = table["aic"] - table["aic"].min()
    table["delta_bic"] = table["bic"] - table["bic"].min()
    if loo:
        import arviz as az  # arviz 1.x imports matplotlib: not when nlme_ppl is imported

        check_keys(key)
        num_loo_draws = positive_int(num_loo_draws, name="num_loo_draws")
        keys = jax.random.split(key, len(fits))
        elpd = {name: _laplace_loo(fit, data, k, num_draws=num_loo_draws, name=name) for (name, fit), k in zip(fits.items(), keys)}
        ranked = az.compare(elpd) if len(elpd) > 1 else None
        for name, e in elpd.items():  # on the scale of `loglik`: the absolute one adds C to each term
            shift = float(fits[name].absolute.constant) if scales[name] == "absolute" else 0.0
            table.loc[name, "elpd_loo"] = float(e.elpd) + shift
            table.loc[name, "se"] = float(e.se)
            table.loc[name, "p_loo"] = float(e.p)
            table.loc[name, "weight"] = 1.0 if ranked is None else float(ranked.loc[name, "weight"])
            table.loc[name, "loo_pareto_k_max"] = float(np.max(np.asarray(e.pareto_k)))
    return table.sort_values("aic", kind="stable")


def _named(fits) -> dict:
    if isinstance(fits, Mapping):
        out = {str(k): v for k, v in fits.items()}
    elif isinstance(fits, Sequence) and not isinstance(fits, str):
        out = {f"model_{i}": f for i, f in enumerate(fits)}
    else:
        raise TypeError(f"`fits` must be a mapping name -> MAPResult or a sequence of MAPResults; got {type(fits).__name__}.")
    if not out:
        raise ValueError("`fits` is empty; pass at least one MAPResult.")
    bad = [n for n, f in out.items() if not all(hasattr(f, a) for a in ("params", "log_likelihood", "ids", "absolute"))]
    if bad:
        raise TypeError(f"fits {bad} are not MAPResults (from nlp.fit_map); compare MAP fits.")
    return out


def _same_data(fits: dict, data: Dataset | None) -> None:
    names = list(fits)
    ref = fits[names[0]].ids
    other = [n for n in names if tuple(fits[n].ids) != tuple(ref)]
    if other:
        raise ValueError(
            f"fits {other} were made on different data (other individuals) than {names[0]!r}; log-likelihoods, AIC and BIC "
            "compare only fits of one data set. Refit them on the same Dataset."
        )
    if data is not None and tuple(data.ids) != tuple(ref):
        raise ValueError(f"`data` has individuals {list(data.ids)[:5]}... but the fits {names} were made on {list(ref)[:5]}...; pass the fits' data.")


def _num_observations(fits: dict, data: Dataset | None, given: int | None) -> int:
    counts = {n: int(f.absolute.num_observations) for n, f in fits.items() if f.absolute is not None}
    if data is not None:
        counts["data"] = int(np.sum(np.asarray(data.mask)))
    if given is not None:
        counts["num_observations"] = positive_int(given, name="num_observations")
    if not counts:
        raise ValueError("BIC needs the number of observations: pass the data (compare(fits, data, ...)) or num_observations=.")
    if len(set(counts.values())) > 1:
        raise ValueError(f"the numbers of observations disagree: {counts}; the fits were made on different data.")
    return next(iter(counts.values()))


def _laplace_loo(fit, data: Dataset, key, *, num_draws: int = 500, name: str = "this fit"):
    """PSIS-LOO (leave one individual out) of a MAP fit: `num_draws` draws z_s ~ N(ẑ, H⁻¹) of the
    unconstrained population parameters (ẑ the estimate, H the Hessian of the fit's objective),
    importance-corrected to the surrogate posterior by `az.loo_approximate_posterior`.
    Returns an ArviZ `ELPDData`."""
    check_keys(key)
    _, k_draw = jax.random.split(key)  # the second half, as before objective_at_fit took over the first
    objective, _, z_hat = objective_at_fit(fit, data)
    hess = np.asarray(objective.hessian(z_hat, fit.draws, data), np.float64)
    hess = 0.5 * (hess + hess.T)
    try:
        chol = np.linalg.cholesky(np.linalg.inv(hess))
    except np.linalg.LinAlgError:
        raise ValueError(
            f"the Hessian at the estimate of fit {name!r} is not positive definite (its standard errors are NaN), so its "
            "Laplace approximation for LOO does not exist; check that fit's convergence, or compare with loo=False."
        ) from None
    eps = jax.random.normal(k_draw, (num_draws, z_hat.shape[0]))
    log_p, log_q, loglik = _laplace_terms(objective, z_hat, jnp.asarray(chol), eps, fit.draws, data)
    import arviz as az  # arviz 1.x imports matplotlib: not when nlme_ppl is imported

    tree = az.from_dict(
        {"log_likelihood": {fit.site: np.asarray(loglik)[None]}}, dims={fit.site: ["individual"]}, coords={"individual": list(fit.ids)}
    )
    with warnings.catch_warnings():  # reported by the `loo_pareto_k_max` column instead
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        return az.loo_approximate_posterior(tree, np.asarray(log_p), np.asarray(log_q), pointwise=True, var_name=fit.site)


@eqx.filter_jit
def _laplace_terms(objective: Objective, z_hat, chol, eps, draws, data):
    """At z_s = ẑ + L ε_s: the surrogate's log posterior density in z (with the Jacobian), the
    Laplace density (up to the same constant for every s) and the `(S, N)` pointwise log-likelihood."""
    surrogate, args, kwargs = objective.surrogate, (data,), {"draws": draws}

    def one(e):
        z = z_hat + chol @ e
        log_p = -potential_energy(surrogate, args, kwargs, objective.unravel(z))
        return log_p, -0.5 * jnp.sum(e**2), objective.pointwise(objective.constrain(z, draws, data), draws, data)

    return jax.lax.map(one, eps, batch_size=16)


# ------------------------------------------------------------------------------ covariate search
class CovariateSearchResult(eqx.Module):
    """The result of [`covariate_search`][nlme_ppl.inference.covariate_search].

    **Fields:**

    - `selected`: the (parameter, covariate) relations kept, in the order they were added.
    - `steps`: the log, one row per tested relation: `step`, `direction` (`"forward"` or
      `"backward"`), `relation` (`"CL~WT"`), `ofv` (−2 surrogate log-likelihood of the model
      tested: the current one with the relation added, or removed), `delta` (its OFV minus the
      current model's), `p_value` of the likelihood-ratio test (`"lrt"`) or `delta_bic` (its
      BIC minus the current model's, `"bic"`), and `accepted` (the relation was added, or removed).
    - `final_fit`: the [`MAPResult`][nlme_ppl.MAPResult] of the selected model
      (`nlp.populations.gaussian(model, covariates=<selected>, ...)`, same key and options).
    - `fits`: every fit of the search, by its relation set (a `frozenset` of pairs). These are
      fits of the search's one program, which has every candidate's coefficient
      `beta[p,p~c]` with the covariate set to zero for the relations left out (their
      coefficients stay at 0 and do not change the likelihood; see `covariate_search`).
    """

    selected: tuple[tuple[str, str], ...] = eqx.field(static=True)
    steps: pd.DataFrame = eqx.field(static=True)
    final_fit: object
    fits: dict

    def __repr__(self) -> str:
        return f"CovariateSearchResult(selected={list(self.selected)})\n{self.steps.to_string()}"


def covariate_search(
    model,
    posterior,
    data: Dataset,
    key,
    *,
    candidates: Sequence[tuple[str, str]],
    criterion: str = "lrt",
    alpha_forward: float = 0.05,
    alpha_backward: float = 0.01,
    population_options: Mapping | None = None,
    fit_options: Mapping | None = None,
) -> CovariateSearchResult:
    """Stepwise covariate modelling (SCM, as in PsN): forward inclusion, then backward elimination.

    Each model is `nlp.populations.gaussian(model, covariates=..., **population_options)`,
    fitted by [`fit_map`][nlme_ppl.fit_map] with the same `key` (so on the same draws; the
    estimator is refined once, where `refine` resolves to on, and re-used). Forward: from the
    base model, each remaining candidate is added in turn; the best one (the largest drop of
    the objective) is kept if it passes, and this repeats until none passes. Backward: from
    the forward model, each kept relation is removed in turn; the one whose removal costs
    least is dropped if it does not pass, until every kept relation passes.

    With `criterion="lrt"` a relation passes when the likelihood-ratio test
    ΔOFV = −2(ℓ_without − ℓ_with) ~ χ²(1) gives p < `alpha_forward` (inclusion) or
    p < `alpha_backward` (to be kept); with `"bic"` when it lowers BIC = OFV + p log n
    (n observations). ℓ is the surrogate log-likelihood (the absolute constant cancels).
    Fits are cached by relation set, so no model is fitted twice. All models of the search are
    one program, `gaussian(model, covariates=<every candidate>)`, on copies of the data whose
    covariate column for a relation left out is zero: its coefficient then has no effect on
    the likelihood, so the fit is that of the model without it, and every fit re-uses one
    compiled objective (a model of its own would compile anew, about 10 s each here). The
    selected model is then refitted as itself (`final_fit`).

    By default the intermediate fits skip the surrogate checks (`diagnose=False`) and the
    extra draws of high-k individuals (`max_draws=num_draws`), so that every model is fitted on
    exactly the same draws; `fit_options` overrides these.

    **Arguments:**

    - `model`: the [`IndividualModel`][nlme_ppl.models.IndividualModel].
    - `posterior`: its estimator.
    - `data`: a [`Dataset`][nlme_ppl.Dataset] whose `covariates` hold the candidates' covariates.
    - `key`: a JAX random key, the same for every fit.
    - `candidates`: (parameter, covariate) pairs, e.g. `[("CL", "log_wt70"), ("V", "log_wt70")]`.
    - `criterion`: `"lrt"` or `"bic"`.
    - `alpha_forward`, `alpha_backward`: the LRT levels of inclusion and elimination.
    - `population_options`: keywords of `nlp.populations.gaussian` (e.g. `fixed`, `covariance`).
    - `fit_options`: keywords of `fit_map` (e.g. `num_draws`).

    **Returns:** a [`CovariateSearchResult`][nlme_ppl.inference.CovariateSearchResult].
    """
    check_keys(key)
    candidates = _check_candidates(model, data, candidates)
    if criterion not in ("lrt", "bic"):
        raise ValueError(f"`criterion` must be 'lrt' or 'bic'; got {criterion!r}.")
    for name, a in (("alpha_forward", alpha_forward), ("alpha_backward", alpha_backward)):
        if not 0 < a < 1:
            raise ValueError(f"`{name}` must be in (0, 1); got {a}.")
    population_options = dict(population_options or {})
    if "covariates" in population_options:
        raise ValueError("`population_options` must not set `covariates`: the search chooses them; list the relations in `candidates`.")
    fit_options = dict(fit_options or {})
    fit_options.setdefault("diagnose", False)
    fit_options.setdefault("max_draws", fit_options.get("num_draws", 100))
    posterior = refined_posterior(posterior, data, key, fit_options.pop("refine", "auto"))
    n_obs = int(np.sum(np.asarray(data.mask)))
    # One program for every model of the search: each candidate has its own covariate column
    # ("p~c"), zero where the relation is left out, so that its coefficient has no effect on the
    # likelihood (and sits at its prior mode 0). Every fit then re-uses one compilation.
    columns = [f"{p}~{c}" for p, c in candidates]
    search_population = gaussian(model, covariates=_grouped(candidates, columns), **population_options)
    zeros = np.zeros(data.num_individuals)
    fits: dict = {}

    def fitted(relations: frozenset):
        if relations not in fits:
            masked = {col: (np.asarray(data.covariates[c]) if (p, c) in relations else zeros) for (p, c), col in zip(candidates, columns)}
            fits[relations] = fit_map(search_population, posterior, data.with_covariates(**masked), key, **fit_options)
        return fits[relations]

    def score(with_rel: frozenset, without: frozenset) -> tuple[float, float, float]:
        """(OFV of the larger model, ΔOFV = OFV_with − OFV_without, p-value or ΔBIC of adding)."""
        ofv_big, ofv_small = -2.0 * fitted(with_rel).log_likelihood, -2.0 * fitted(without).log_likelihood
        df = len(with_rel) - len(without)  # one coefficient per relation
        if criterion == "lrt":
            return ofv_big, ofv_big - ofv_small, float(stats.chi2.sf(max(ofv_small - ofv_big, 0.0), df))
        return ofv_big, ofv_big - ofv_small, (ofv_big - ofv_small) + df * math.log(n_obs)

    rows, current, step = [], frozenset(), 0
    passes = (lambda v, alpha: v < alpha) if criterion == "lrt" else (lambda v, alpha: v < 0.0)
    stat = "p_value" if criterion == "lrt" else "delta_bic"
    while remaining := [r for r in candidates if r not in current]:  # forward inclusion
        step += 1
        tried = [(r, *score(current | {r}, current)) for r in remaining]
        best = min(tried, key=lambda t: (t[3], t[2]))
        ok = passes(best[3], alpha_forward)
        rows += [_row(step, "forward", r, ofv, d, stat, v, ok and r == best[0]) for r, ofv, d, v in tried]
        if not ok:
            break
        current = current | {best[0]}
    while current:  # backward elimination: the relation whose removal costs least goes, unless it passes
        step += 1
        tried = [(r, *score(current, current - {r})) for r in sorted(current, key=candidates.index)]
        worst = max(tried, key=lambda t: (t[3], t[2]))
        drop = not passes(worst[3], alpha_backward)
        sign = 1.0 if criterion == "lrt" else -1.0  # ΔBIC of the step taken: removing
        rows += [_row(step, "backward", r, ofv - d, -d, stat, sign * v, drop and r == worst[0]) for r, ofv, d, v in tried]
        if not drop:
            break
        current = current - {worst[0]}
    selected = tuple(r for r in candidates if r in current)
    steps = pd.DataFrame(rows, columns=["step", "direction", "relation", "ofv", "delta", stat, "accepted"])
    final = gaussian(model, covariates=_grouped(selected, [c for _, c in selected]), **population_options)
    final_fit = fit_map(final, posterior, data, key, **fit_options)
    return CovariateSearchResult(selected=selected, steps=steps, final_fit=final_fit, fits=fits)


def _grouped(relations, names) -> dict[str, tuple[str, ...]]:
    """`{parameter: covariate names}` for `gaussian(covariates=...)`, in the order of `relations`."""
    out: dict[str, tuple[str, ...]] = {}
    for (p, _), name in zip(relations, names):
        out[p] = out.get(p, ()) + (name,)
    return out


def _row(step, direction, relation, ofv, delta, stat, value, accepted) -> dict:
    return {"step": step, "direction": direction, "relation": f"{relation[0]}~{relation[1]}", "ofv": float(ofv),
            "delta": float(delta), stat: float(value), "accepted": bool(accepted)}  # fmt: skip


def _check_candidates(model, data: Dataset, candidates) -> list[tuple[str, str]]:
    if isinstance(candidates, str) or not isinstance(candidates, Sequence) or not candidates:
        raise ValueError(f"`candidates` must be a non-empty list of (parameter, covariate) pairs; got {candidates!r}.")
    names, have = tuple(model.param_names), sorted(getattr(data, "covariates", {}) or {})
    out = []
    for pair in candidates:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ValueError(f"each candidate must be a (parameter, covariate) pair of names; got {pair!r}.")
        p, c = pair
        if p not in names:
            raise ValueError(f"candidate ({p!r}, {c!r}) names unknown parameter {p!r}; the model's parameters are {names}.")
        if c not in have:
            raise ValueError(
                f"candidate ({p!r}, {c!r}) names covariate {c!r}, which the data lacks (it has {have}); add it with "
                "data.with_covariates(...) or read_nonmem(..., covariates=[...])."
            )
        if (p, c) in out:
            raise ValueError(f"candidate ({p!r}, {c!r}) is listed twice.")
        out.append((p, c))
    return out
