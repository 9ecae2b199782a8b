"""The population log-likelihood on the absolute scale: −2 log L, AIC and BIC comparable with
NONMEM, R `nlme` and nlmixr2.

The surrogate estimates log p(D | θ) − Σ_i log p_train(y_i): the constant, the training prior's
marginal likelihood of each individual's data, does not depend on θ nor on the population
model, so it cancels in every comparison on one data set, but it is needed for an OFV on the
usual scale. Where the likelihood p(y | φ) is tractable it is estimated once per data set by
importance sampling with the estimator as proposal,

    p_train(y_i) ≈ (1/P) Σ_p p(y_i | φ_p) p_train(φ_p) / g_i(φ_p),     φ_p ~ g_i,

where g_i is the refinement's defensive mixture (a refined fit: computed during refinement, no
extra cost) or the estimator q(φ | y_i) itself (any estimator with a density). Its Monte Carlo
error is the delta-method SE (P Σ w̃² − 1)^½ / √P of the log of a mean of weights, summed in
quadrature over individuals together with the surrogate's own error at θ̂.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._lse import log_mean_exp
from .._validate import check_keys, positive_int
from ..data import Dataset
from ..likelihood import draws_from_values, log_weights
from ._exact_draws import block_log_target
from .fixed import expand_fixed, fixed_point
from .refine import RefinedPosterior

__all__ = ["ObjectiveFunction", "objective_function", "training_evidence"]


class ObjectiveFunction(eqx.Module):
    """The log-likelihood of a fit on the absolute scale.

    **Fields:**

    - `loglik`: log p(D | θ̂); `loglik_mc_se` its Monte Carlo standard error.
    - `ofv`: −2 `loglik` (NONMEM's objective function value).
    - `aic`: `ofv` + 2 p; `bic`: `ofv` + p log n, with p = `num_params` estimated population
      parameters and n = `num_observations` (as R `nlme` and nlmixr2 count them).
    - `constant`, `constant_mc_se`: Σ_i log p_train(y_i) and its Monte Carlo SE.
    - `surrogate_mc_se`: the Monte Carlo SE of the surrogate's part at θ̂.
    - `method`: how the constant was estimated (`"refinement"` or `"estimator"`).
    """

    loglik: float
    loglik_mc_se: float
    num_params: int
    num_observations: int
    constant: float
    constant_mc_se: float
    surrogate_mc_se: float
    method: str = eqx.field(static=True)

    @property
    def ofv(self) -> float:
        return -2.0 * self.loglik

    @property
    def aic(self) -> float:
        return self.ofv + 2.0 * self.num_params

    @property
    def bic(self) -> float:
        return self.ofv + self.num_params * math.log(self.num_observations)

    def to_dict(self) -> dict:
        """The JSON-able summary written by `nlme-ppl fit` (`loglik`, `loglik_mc_se`, `ofv`, `aic`, `bic`, ...)."""
        return {
            "loglik": float(self.loglik), "loglik_mc_se": float(self.loglik_mc_se), "ofv": float(self.ofv),
            "aic": float(self.aic), "bic": float(self.bic), "num_params": int(self.num_params),
            "num_observations": int(self.num_observations), "constant": float(self.constant),
            "constant_mc_se": float(self.constant_mc_se), "surrogate_mc_se": float(self.surrogate_mc_se), "method": self.method,
        }  # fmt: skip


def training_evidence(posterior, data: Dataset, key=None, *, num_draws: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """log p_train(y_i) for each individual, the training prior's marginal likelihood of its data,
    by importance sampling, with its Monte Carlo SE: `(values, se)`, each `(N,)`.

    A [`RefinedPosterior`][nlme_ppl.RefinedPosterior] of these data already holds it (no cost,
    no key). Otherwise `posterior` must have a density (`log_prob`), the model a tractable
    likelihood, and `num_draws` draws of q(φ | y_i) are the proposals (`key` needed).
    """
    model = posterior.model
    if isinstance(posterior, RefinedPosterior) and posterior.log_evidence is not None:
        rows = posterior._rows(data)
        return np.asarray(posterior.log_evidence)[rows], np.asarray(posterior.log_evidence_se)[rows]
    if not getattr(model, "tractable", False):
        raise ValueError(
            f"model {model.name!r} has no tractable likelihood (tractable=False): the absolute log-likelihood (OFV, AIC, BIC) "
            "cannot be estimated; compare population models on the surrogate's relative scale (nlp.compare uses it)."
        )
    if not hasattr(posterior, "log_prob"):
        raise ValueError(
            f"the estimator ({type(posterior).__name__}) has no density (log_prob) to serve as the importance proposal; "
            "refine it (nlp.refine, or fit_map(..., refine=True)), which estimates the constant on the way."
        )
    check_keys(key)
    num_draws = positive_int(num_draws, name="num_draws")
    values = np.asarray(posterior.sample(data, key, num_draws=num_draws), np.float64)
    log_q = np.asarray(posterior.log_prob(data, values), np.float64)
    designs = model.designs_from_data(data)
    log_w = np.asarray(block_log_target(model, designs, jnp.asarray(data.values, jnp.float64), jnp.asarray(values))) - log_q
    return log_mean_exp(np.where(np.isfinite(log_w), log_w, -np.inf))


def _refined_terms(fit, data: Dataset, *, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """log p(y_i | θ̂) − log p_train(y_i) `(N,)` and its Monte Carlo SE, by importance sampling with
    the refinement's own proposals: Σ_p w̃_p p(φ_p | θ̂) / p_train(φ_p), every weighted proposal
    rather than the fit's M resampled draws (the likelihood treatment of parameters without
    random effect expanded at the estimate). With the refinement's estimate of log p_train(y_i)
    this is (1/P) Σ_p p(y_i | φ_p) p(φ_p | θ̂) / g_i(φ_p). Blocks of individuals bound the memory."""
    ref, model = fit.refined, fit.refined.model
    rows = ref._rows(data)
    point = fixed_point(fit.population, fit.draws, fit.site_values, data) if fit.fixed_treatment == "likelihood" else {}
    terms, ses = [], []
    for start in range(0, data.num_individuals, block):
        idx = np.arange(start, min(start + block, data.num_individuals))
        part = data.subset(idx)
        draws = draws_from_values(np.asarray(ref.values)[rows[idx]], model, cross=bool(fit.draws.has_cross))
        if point:
            draws = expand_fixed(draws, model, part, {n: jnp.asarray(v)[idx] for n, v in point.items()})
        lw = np.asarray(log_weights(fit.population, draws, fit.site_values, part), np.float64) + np.asarray(ref.log_weights)[rows[idx]]
        t, se = log_mean_exp(np.where(np.isfinite(lw), lw, -np.inf))
        terms.append(t + math.log(lw.shape[1]))  # w̃ sums to one: no 1/P
        ses.append(se)
    return np.concatenate(terms), np.concatenate(ses)


def objective_function(fit, data: Dataset, key=None, *, posterior=None, num_draws: int = 1000) -> ObjectiveFunction:
    """The log-likelihood of a [`MAPResult`][nlme_ppl.MAPResult] on the absolute scale, with
    −2 log L, AIC and BIC (see [`ObjectiveFunction`][nlme_ppl.inference.ObjectiveFunction]).

    A refined fit (`fit.refined`) is scored with every weighted proposal of its refinement
    (a direct importance-sampling estimate of each log p(y_i | θ̂); no key needed). Otherwise
    the surrogate's value at θ̂ (the fit's own draws) is put on the absolute scale by the
    constant Σ_i log p_train(y_i) of [`training_evidence`][nlme_ppl.inference.training_evidence].

    **Arguments:**

    - `fit`: a `MAPResult` of these data.
    - `data`: the [`Dataset`][nlme_ppl.Dataset] it was fitted to.
    - `key`: a JAX key (not needed for a refined fit).
    - `posterior`: the estimator, for an unrefined fit (default: `fit.posterior`).
    - `num_draws`: importance draws per individual for the constant (unrefined fits).

    A fit whose parameters without random effect used the kernel treatment
    (`fixed_treatment="kernel"`) estimates a smoothed likelihood; its absolute value is then
    approximate, and `method` says so.
    """
    counts = dict(num_params=len(fit.params), num_observations=int(np.sum(np.asarray(data.mask))))
    if fit.refined is not None and getattr(fit.refined, "log_evidence", None) is not None and posterior is None:
        relative, surrogate_se = _refined_terms(fit, data)
        constant, constant_se = training_evidence(fit.refined, data)
        method = "refinement"
    else:
        posterior = fit.posterior if posterior is None else posterior
        if posterior is None:
            raise ValueError("pass posterior=, the estimator the fit was made with (this fit does not record it).")
        constant, constant_se = training_evidence(posterior, data, key, num_draws=num_draws)
        lw = np.asarray(log_weights(fit.population, fit.draws, fit.site_values, data), np.float64)
        _, surrogate_se = log_mean_exp(np.where(np.isfinite(lw), lw, -np.inf))
        relative, method = np.asarray(fit.log_likelihood), "estimator"
    c_se, s_se = float(np.sqrt(np.sum(constant_se**2))), float(np.sqrt(np.sum(surrogate_se**2)))
    return ObjectiveFunction(
        loglik=float(np.sum(relative) + np.sum(constant)), loglik_mc_se=math.hypot(c_se, s_se), constant=float(np.sum(constant)),
        constant_mc_se=c_se, surrogate_mc_se=s_se, method=_method(fit, method), **counts,
    )  # fmt: skip


def _method(fit, method: str) -> str:
    if fit.fixed_treatment == "kernel" and getattr(fit.population, "fixed", ()):
        return method + " (kernel treatment of the fixed parameters: approximate)"
    return method
