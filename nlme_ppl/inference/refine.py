"""Exact-likelihood refinement: the estimator becomes a proposal, and the individual posteriors exact.

Where p(y | φ) is tractable, each individual's exact posterior under the training prior,

    p(φ | y_i) ∝ p_train(φ) p(y_i | φ),

is what the surrogate needs (DESIGN.md). The amortized q(φ | y_i) approximates it; where q is
several times too wide (informative data), plain importance sampling from q collapses. The
refinement therefore builds, per individual and in parallel (`vmap`):

1. **modes**: L-BFGS on -log p(φ | y_i) from the `num_starts` best of q's draws (q finds the
   modes: both (δ, γ) labellings of an exchangeable model, and each start can land in another);
   every exchangeable permutation of a mode is a mode too, and is added;
2. **a proposal**: the mixture
   `g_i = s_t · Σ_c w_c t_ν(φ | m_c, H_c⁻¹) + s_q · q(φ | y_i) + s_0 · p_train(φ)`
   of multivariate Student-t components at the modes m_c with the Laplace covariances H_c⁻¹
   (heavier tails than the Gaussian: the weights stay bounded where the posterior is skewed),
   the estimator itself, and the training prior as a defensive share (Hesterberg 1995);
3. **weights** `p_train(φ) p(y_i | φ) / g_i(φ)` of `num_proposals` draws from g_i, checked by
   PSIS (Pareto k̂) and their effective sample size.

[`RefinedPosterior.sample`][nlme_ppl.RefinedPosterior.sample] returns equally weighted draws:
resampled from the weighted set where its ESS is at least twice `num_draws` (duplicates stay
rare); otherwise resampled from a fresh weighted set from the same t mixture (with the training
prior's defensive share), sized from the first set's ESS per proposal to reach that ESS, where
it costs under a quarter of the chains below (`FRESH_COST_SHARE`); otherwise, or where the fresh
set still falls short, fresh draws of a short Metropolis–Hastings run started there
(independence proposals from the t mixture alternating with random-walk steps scaled by the
weighted covariance), which leaves the exact posterior invariant. The chains cost 2·40
likelihood evaluations per draw; `fit_map`'s extra draws (900 per high-k individual) made them
most of a refined fit's time (N = 1,000: 194 of 319 s) before the fresh sets.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float, PRNGKeyArray

from .._lse import log_mean_exp
from .._validate import check_keys, positive_int
from ..data import Dataset
from ..diagnostics import importance_diagnostics
from ._exact_draws import block_log_target, fresh_weighted, log_targets, mcmc_chains, resample
from ._proposal import exchange_permutations, find_components, mixture_t_log_prob, sample_mixture_t

__all__ = ["RefinedPosterior", "refine", "wants_refinement"]

#: Backends whose posteriors are exact already (never refined): refined ones, the importance-
#: sampled exact posteriors of `fit_exact_individual`, and user-supplied exact posteriors.
EXACT_BACKENDS = frozenset({"refined", "importance", "exact"})

#: Likelihood evaluations per compiled block of individuals (bounds memory).
_EVALS_PER_BLOCK = 200_000
#: `sample`'s fresh weighted sets (for individuals whose first set's ESS is under twice the draws
#: asked) may cost at most this share of the Metropolis–Hastings chains' likelihood evaluations
#: (0 turns them off: always the chains). With 40 rounds, M draws cost the chains 80·M evaluations.
FRESH_COST_SHARE = 0.25
#: The training prior's share of those fresh sets (defensive, as in `refine`).
FRESH_PRIOR_SHARE = 0.05
#: The stream of `sample`'s key that the fresh sets come from.
_FRESH_STREAM = 0xF5E5


@eqx.filter_jit
def _block_components(model, designs, obs, q_values, perms, prior_precision, num_starts, max_iter, tol, drop_below):
    lt = log_targets(model, designs, obs, q_values)
    top = jax.lax.top_k(jnp.where(jnp.isnan(lt), -jnp.inf, lt), num_starts)[1]
    starts = jnp.take_along_axis(q_values, top[..., None], axis=1)
    comps = find_components(model, designs, obs, starts, perms, prior_precision, max_iter=max_iter, tol=tol, drop_below=drop_below)
    return comps.loc, comps.chol, comps.log_weight, comps.log_density


class RefinedPosterior(eqx.Module):
    """Exact individual posteriors of one data set, with the estimator interface (see
    [`refine`][nlme_ppl.refine]). `fit_map` and `fit_nuts` take it in place of the estimator.

    **Fields:** `base` (the estimator it refines), `data`, `values` `(N, P, k)` proposals,
    `log_weights` `(N, P)` normalised log importance weights, `pareto_k` and `ess` `(N,)` of
    those weights, `modes` `(N, k)` each individual's highest mode, and the mixture components
    (`loc`, `chol`, `component_log_weight`) used by the Metropolis–Hastings fallback.
    `log_evidence` `(N,)`: the importance-sampling estimate of log p_train(y_i), the training
    prior's marginal likelihood of each individual (the mean of the unnormalised weights), and
    `log_evidence_se` its Monte Carlo standard error (delta method).
    """

    base: object
    data: Dataset
    values: Float[np.ndarray, "individuals proposals k"]
    log_weights: Float[np.ndarray, "individuals proposals"]
    pareto_k: Float[np.ndarray, " individuals"]
    ess: Float[np.ndarray, " individuals"]
    modes: Float[np.ndarray, "individuals k"]
    loc: Float[np.ndarray, "individuals components k"]
    chol: Float[np.ndarray, "individuals components k k"]
    component_log_weight: Float[np.ndarray, "individuals components"]
    df: float = eqx.field(static=True)
    num_mcmc_steps: int = eqx.field(static=True)
    log_evidence: Float[np.ndarray, " individuals"] | None = None
    log_evidence_se: Float[np.ndarray, " individuals"] | None = None
    backend: ClassVar[str] = "refined"

    @property
    def model(self):
        return self.base.model

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.model.param_names)

    @property
    def num_individuals(self) -> int:
        return self.values.shape[0]

    def _rows(self, data) -> np.ndarray:
        """The rows of `self.data` that `data` holds: the whole data set, or a subset of it
        (e.g. `data.subset(...)`), matched by id and checked value for value."""
        rows = self.data.rows_of(data)
        if rows is None:
            raise ValueError(
                "this RefinedPosterior holds the exact posteriors of another data set; refine the estimator for "
                "these data: nlp.refine(posterior, data, key), or pass the estimator itself to fit_map / fit_nuts "
                "(refine='auto' refines it there)."
            )
        return rows

    def summaries(self, data, **options):
        """The base estimator's summaries of `data` (`None` without a summary network)."""
        summaries = getattr(self.base, "summaries", None)
        return None if summaries is None else summaries(data, **options)

    def needs_mcmc(self, num_draws: int) -> np.ndarray:
        """`(N,)` mask of the individuals whose weighted set has ESS < 2·`num_draws`: their draws
        come from Metropolis–Hastings instead of resampling."""
        return np.asarray(self.ess) < 2 * int(num_draws)

    def sample(self, data, key: PRNGKeyArray, *, num_draws: int) -> Float[Array, "individuals draws k"]:
        """`num_draws` equally weighted draws of each individual's exact posterior, `(N, M, k)` float64."""
        check_keys(key)
        num_draws = positive_int(num_draws, name="num_draws")
        sel = self._rows(data)
        k_sir, k_mcmc = jax.random.split(key)
        out = np.array(resample(k_sir, jnp.asarray(self.values[sel]), jnp.asarray(self.log_weights[sel]), num_draws), np.float64)
        pos = np.flatnonzero(self.needs_mcmc(num_draws)[sel])
        if pos.size:  # first a larger weighted set from the same t mixture, where that is cheaper than the chains
            fresh, short = self._resample_fresh(sel[pos], num_draws, jax.random.fold_in(key, _FRESH_STREAM))
            if fresh is not None:  # the rows still short keep their first draws to start the chains from
                out[pos[~short]] = fresh[~short]
                pos = pos[short]
        chunk = max(1, _EVALS_PER_BLOCK // num_draws)  # chains per compiled call: bounds memory
        for c, start in enumerate(range(0, pos.size, chunk)):
            part = pos[start : start + chunk]
            out[part] = self._mcmc_rows(sel[part], out[part], jax.random.fold_in(k_mcmc, c))
        return jnp.asarray(out)

    def _resample_fresh(self, rows: np.ndarray, num_draws: int, key) -> tuple[np.ndarray | None, np.ndarray]:
        """Draws `(len(rows), num_draws, k)` resampled from a fresh weighted set per individual,
        sized from the first set's ESS per proposal to reach an ESS of 2·`num_draws`, and the mask
        of the rows that fell short of it anyway (their draws then start the Metropolis–Hastings
        chains). None when that set would cost more than `FRESH_COST_SHARE` of the chains'
        likelihood evaluations (2 per round and draw)."""
        per_proposal = np.asarray(self.ess, np.float64)[rows] / self.values.shape[1]
        budget = int(FRESH_COST_SHARE * 2 * self.num_mcmc_steps * num_draws)
        wanted = 3.0 * num_draws / max(float(np.median(per_proposal)), 1e-12)  # 1.5x the ESS of 2·num_draws
        if wanted > budget:
            return None, np.ones(rows.size, bool)
        num = 1 << int(math.ceil(math.log2(max(wanted, 2 * num_draws))))  # a power of two: few compiled shapes
        block = max(1, min(rows.size, _EVALS_PER_BLOCK // num))
        block = 1 << int(math.ceil(math.log2(block)))
        model = self.model
        designs_all, obs_all = model.designs_from_data(self.data), np.asarray(self.data.values, np.float64)
        out = np.empty((rows.size, num_draws, self.values.shape[2]), np.float64)
        short = np.zeros(rows.size, bool)
        for b, start in enumerate(range(0, rows.size, block)):
            part = rows[start : start + block]
            padded = _padded(part, block)
            designs, obs = _picked(designs_all, obs_all, padded)
            k_b, k_r = jax.random.split(jax.random.fold_in(key, b))
            values, log_w = fresh_weighted(
                model, designs, obs, jnp.asarray(self.loc[padded]), jnp.asarray(self.chol[padded]),
                jnp.asarray(self.component_log_weight[padded]), k_b, num, self.df, FRESH_PRIOR_SHARE,
            )  # fmt: skip
            log_w = log_w - jax.nn.logsumexp(log_w, axis=1, keepdims=True)
            ess = np.asarray(jnp.exp(-jax.nn.logsumexp(2.0 * log_w, axis=1)))[: part.size]
            draws = np.asarray(resample(k_r, values, log_w, num_draws), np.float64)[: part.size]
            out[start : start + part.size] = draws
            short[start : start + part.size] = ~(ess >= 2 * num_draws)  # NaN (no finite weight) counts as short
        return out, short

    def _mcmc_rows(self, rows: np.ndarray, init: np.ndarray, key) -> np.ndarray:
        model = self.model
        size = 1 << int(math.ceil(math.log2(rows.size)))  # padded to a power of two: few compiled shapes
        padded = _padded(rows, size)
        init = np.concatenate([init, np.repeat(init[-1:], size - rows.size, axis=0)])
        designs, obs = _picked(model.designs_from_data(self.data), np.asarray(self.data.values, np.float64), padded)
        w = np.exp(self.log_weights[padded])
        mean = np.einsum("np,npk->nk", w, self.values[padded])
        d = self.values[padded] - mean[:, None, :]
        cov = np.einsum("np,npk,npl->nkl", w, d, d) + 1e-10 * np.eye(d.shape[-1])
        x = mcmc_chains(
            model, designs, obs, jnp.asarray(init), jnp.asarray(self.loc[padded]),
            jnp.asarray(self.chol[padded]), jnp.asarray(self.component_log_weight[padded]), jnp.asarray(np.linalg.cholesky(cov)),
            key, self.num_mcmc_steps, self.df,
        )  # fmt: skip
        return np.asarray(x)[: rows.size]

    def table(self, threshold: float = 0.7) -> pd.DataFrame:
        """One row per individual: `pareto_k`, `ess` of the weighted set, and `flag` (k̂ > `threshold`)."""
        k = np.asarray(self.pareto_k)
        return pd.DataFrame({"pareto_k": k, "ess": np.asarray(self.ess), "flag": k > threshold}, index=pd.Index(self.data.ids, name="id"))

    def __repr__(self) -> str:
        k = np.asarray(self.pareto_k)
        return (
            f"RefinedPosterior({self.num_individuals} individuals, {self.values.shape[1]} proposals each; "
            f"{int(np.sum(k > 0.7))} with Pareto k > 0.7, median ESS {np.median(self.ess):.0f})"
        )


@eqx.filter_jit
def _proposals(model, k_t, k_prior, loc, chol, log_cw, q_part, df: float, num_t: int, num_prior: int):
    """A block's proposals `(n, P, k)`: `num_t` draws of the t mixture, `num_prior` of the
    training prior, then the estimator's draws `q_part` (or None)."""
    extra = [model.prior_sample(k_prior, (loc.shape[0], num_prior))] + ([] if q_part is None else [q_part])
    return jnp.concatenate([sample_mixture_t(k_t, loc, chol, log_cw, df, num_t), *extra], axis=1)


@eqx.filter_jit
def _proposal_log_weights(model, designs, obs, values, loc, chol, log_cw, log_q, df: float, counts: tuple[int, int, int]):
    """log p_train(φ) p(y | φ) − log g(φ) of a block's proposals, g the defensive mixture of the
    t mixture, the training prior and (where `log_q` is given) the estimator, in the shares
    `counts` (t, prior, q) of the proposals."""
    num_t, num_prior, num_q = counts
    total = num_t + num_prior + num_q
    log_terms = [math.log(num_t / total) + mixture_t_log_prob(values, loc, chol, log_cw, df),
                 math.log(num_prior / total) + model.prior_log_prob(values)]  # fmt: skip
    if log_q is not None:
        log_terms.append(math.log(num_q / total) + log_q)
    return block_log_target(model, designs, obs, values) - jax.nn.logsumexp(jnp.stack(log_terms), axis=0)


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """`rows` padded to `size` by repeating the last one, so that a block loop compiles one shape
    per size (the padding's results are dropped)."""
    return np.concatenate([rows, np.full(size - rows.size, rows[-1])])


def _picked(designs_all, obs_all: np.ndarray, rows: np.ndarray) -> tuple:
    """The designs and observations `(rows, T)` of `rows`, as device arrays."""
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[rows]), designs_all), jnp.asarray(obs_all[rows], jnp.float64)


def wants_refinement(refine, posterior) -> bool:
    """Resolve a `refine=` option of a fit: `"auto"` is on where the model's likelihood is tractable."""
    if isinstance(posterior, RefinedPosterior) or getattr(posterior, "backend", None) in EXACT_BACKENDS:
        return False  # already exact posteriors
    if refine == "auto":
        return bool(getattr(posterior.model, "tractable", False))
    if isinstance(refine, bool):
        if refine and not getattr(posterior.model, "tractable", False):
            raise ValueError(
                f"refine=True needs a tractable likelihood, but model {posterior.model.name!r} declares tractable=False "
                "(e.g. an SDE path); use refine='auto' or refine=False."
            )
        return refine
    raise ValueError(f"`refine` must be 'auto', True or False; got {refine!r}.")


def _prior_precision(model, key) -> jnp.ndarray:
    """A floor for the Laplace precisions: the weakest training-prior precision (from 4,000 draws)."""
    var = jnp.var(model.prior_sample(key, (4000,)), axis=0)
    return jnp.full(model.num_params, 1.0 / (4.0 * jnp.max(var)))


def refine(
    posterior,
    data: Dataset,
    key: PRNGKeyArray,
    *,
    num_proposals: int = 1000,
    num_starts: int = 4,
    q_share: float = 0.25,
    prior_share: float = 0.05,
    df: float = 5.0,
    max_iter: int = 50,
    tol: float = 1e-4,
    num_mcmc_steps: int = 40,
    drop_below: float = 10.0,
) -> RefinedPosterior:
    """Refine an estimator into the exact individual posteriors of `data` (tractable models only).

    **Arguments:**

    - `posterior`: an estimator ([`Posterior`][nlme_ppl.estimators.Posterior]); its `log_prob`
      is used where it has one (else q only supplies the starts).
    - `data`: a [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX random key.
    - `num_proposals`: weighted draws per individual, `P`.
    - `num_starts`: L-BFGS starts per individual (the best of q's draws).
    - `q_share`, `prior_share`: the shares of the proposal drawn from q and from the training
      prior; the rest comes from the t mixture at the modes.
    - `df`: degrees of freedom of the t components.
    - `max_iter`, `tol`: L-BFGS iterations per start, and its stopping rule (gradient norm
      ≤ `tol`·(1 + |f|)). The modes only place the proposal: a looser mode costs efficiency
      (ESS), never exactness.
    - `num_mcmc_steps`: Metropolis–Hastings rounds for individuals whose ESS is below twice the
      draws asked of `sample`.
    - `drop_below`: modes whose log density is this far under an individual's best get no component.

    **Returns:** a [`RefinedPosterior`][nlme_ppl.RefinedPosterior].
    """
    check_keys(key)
    model = posterior.model
    if not getattr(model, "tractable", False):
        raise ValueError(
            f"model {model.name!r} declares tractable=False: its likelihood p(y | phi) cannot be evaluated, so the "
            "estimator cannot be refined. Fit with refine=False (the amortized path)."
        )
    if not isinstance(data, Dataset):
        raise TypeError(f"expected an nlp.Dataset; got {type(data).__name__}.")
    model.check_data(data)
    num_proposals = positive_int(num_proposals, name="num_proposals")
    num_starts = positive_int(num_starts, name="num_starts")
    if not (0.0 <= q_share < 1.0 and 0.0 < prior_share < 1.0 and q_share + prior_share < 1.0):
        raise ValueError(f"need 0 <= q_share, 0 < prior_share and q_share + prior_share < 1; got {q_share}, {prior_share}.")
    has_density = hasattr(posterior, "log_prob")
    n = data.num_individuals
    num_prior = max(1, round(prior_share * num_proposals))
    num_q = round(q_share * num_proposals) if has_density else 0
    num_t = num_proposals - num_q - num_prior
    if num_t < 1:
        raise ValueError(f"num_proposals={num_proposals} leaves no draw for the t mixture; raise it.")
    k_q, k_prior, k_t, k_floor = jax.random.split(key, 4)
    q_values = np.asarray(posterior.sample(data, k_q, num_draws=max(num_q, 4 * num_starts, 32)), np.float64)
    perms = exchange_permutations(model)
    floor = _prior_precision(model, k_floor)
    designs_all = model.designs_from_data(data)
    obs_all = np.asarray(data.values, np.float64)
    block = max(1, min(n, _EVALS_PER_BLOCK // num_proposals))
    pieces = []
    for b, start in enumerate(range(0, n, block)):
        rows = _padded(np.arange(start, min(start + block, n)), block)  # the last block padded: one compiled shape
        designs, obs = _picked(designs_all, obs_all, rows)
        loc, chol, log_cw, dens = _block_components(
            model, designs, obs, jnp.asarray(q_values[rows]), jnp.asarray(perms), floor, num_starts, int(max_iter), float(tol), float(drop_below)
        )  # fmt: skip
        q_part = jnp.asarray(q_values[rows, :num_q]) if num_q else None
        values = _proposals(model, jax.random.fold_in(k_t, b), jax.random.fold_in(k_prior, b), loc, chol, log_cw, q_part, float(df), num_t, num_prior)
        log_q = None
        if num_q:
            sub = data.subset(rows[: min(block, n - start)])
            log_q = np.asarray(posterior.log_prob(sub, np.asarray(values)[: len(sub.ids)]), np.float64)
            log_q = jnp.asarray(np.concatenate([log_q, np.repeat(log_q[-1:], block - log_q.shape[0], axis=0)]))
        log_w = _proposal_log_weights(model, designs, obs, values, loc, chol, log_cw, log_q, float(df), (num_t, num_prior, num_q))
        keep = slice(0, min(block, n - start))
        pieces.append(tuple(np.asarray(a)[keep] for a in (values, log_w, loc, chol, log_cw, dens)))
    values, log_w, loc, chol, log_cw, dens = (np.concatenate(p) for p in zip(*pieces))
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    if np.all(log_w == -np.inf, axis=1).any():
        i = int(np.argmax(np.all(log_w == -np.inf, axis=1)))
        raise ValueError(f"individual {data.ids[i]!r}: no proposal has a finite likelihood; check its data (units, dosing) against the model.")
    # the mean of the unnormalised weights estimates p_train(y_i)
    log_evidence, log_evidence_se = log_mean_exp(log_w)
    log_w = np.asarray(log_w - (log_evidence + math.log(log_w.shape[1]))[:, None])
    diag = importance_diagnostics(log_w, ids=data.ids)
    best = np.argmax(dens, axis=1)
    return RefinedPosterior(
        base=posterior, data=data, values=values, log_weights=log_w, pareto_k=np.asarray(diag.pareto_k),
        ess=np.asarray(diag.ess), modes=loc[np.arange(n), best], loc=loc, chol=chol, component_log_weight=log_cw,
        df=float(df), num_mcmc_steps=int(num_mcmc_steps), log_evidence=log_evidence, log_evidence_se=log_evidence_se,
    )  # fmt: skip
