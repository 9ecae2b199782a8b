"""NN-NLME: population fits by an identifiability-aware variational autoencoder (Li, Prague,
Thiébaut, Clairon; PAGE 34 (2026) Abstr 12024), on the same two NumPyro programs as every other
engine of nlme_ppl.

- q(φ_i | y_i) is Gaussian, its mean and SD from one shared encoder (an `eqx.Module` built on
  the project's summary networks, so padding and masking are handled);
- the decoder is the individual model's exact likelihood p(y_i | φ_i);
- Adam maximises the ELBO summed over individuals, over θ and the encoder together, from
  `num_starts` random starts at once (`vmap`);
- the marginal log-likelihood at the estimate is estimated by importance sampling with the
  encoder as proposal (loglik, OFV, AIC, BIC on the absolute scale), and its autodiff Hessian
  gives the observed Fisher information and the SEs;
- the starts that reach the best log-likelihood are compared parameter by parameter: the
  identifiability report.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._validate import check_keys, positive_int
from ..data import Dataset
from ..models import IndividualModel
from ._checks import check_data, check_masking, check_model, nonnegative_int, prior_centre
from ._labels import flatten_params
from ._uncertainty import Covariances
from ._vae_marginal import draw_proposal, information, marginal
from ._vae_model import build_encoder, build_layout, encode_all, encoder_inputs
from ._vae_result import VAEResult, identifiability_report
from ._vae_train import train_starts
from .individual import individual_modes
from .loglik import ObjectiveFunction

__all__ = ["VAEResult", "fit_vae"]

#: The stream of a fit's key for the importance-sampling draws (the same for every start).
_IS_STREAM = 0x1A5
#: Individuals whose modes give the starting point.
_INIT_INDIVIDUALS = 50


def fit_vae(
    population,
    model: IndividualModel,
    data: Dataset,
    key,
    *,
    num_starts: int = 4,
    num_steps: int = 2000,
    num_samples: int = 4,
    local_steps: int = 0,
    learning_rate: float = 0.02,
    encoder_learning_rate: float = 3e-3,
    encoder: str = "gru",
    hidden_size: int = 32,
    jitter: float = 0.3,
    num_is_draws: int = 1000,
    num_fisher_draws: int = 200,
    init: dict | None = None,
    loglik_tolerance: float = 1.0,
    site: str = "obs",
) -> VAEResult:
    """Fit a population model by the NN-NLME variational autoencoder.

    **Arguments:**

    - `population`: a NumPyro population program (e.g. `nlp.populations.gaussian(model, ...)`,
      diagonal or full covariance, fixed effects, covariates). Its individual sites must be
      independent given the population parameters; their priors are not used (the fit is
      maximum likelihood, as R `nlme` and NONMEM).
    - `model`: the [`IndividualModel`][nlme_ppl.IndividualModel], with a tractable likelihood.
    - `data`: a [`Dataset`][nlme_ppl.Dataset].
    - `key`: a JAX random key (the same key gives the same fit).
    - `num_starts`: random starts, trained together under `vmap`; start 0 is the
      population's `init_values` at the individual modes (or `init`), the others are jittered
      by `jitter` (SD, in the unconstrained coordinates) and get their own encoder initialisation.
    - `num_steps`: Adam steps (a warm-up then cosine decay to 1% of the rate).
    - `local_steps`: after the amortized phase, this many more Adam steps with the encoder
      frozen and a free offset of each individual's q (mean and log-SD), trained with θ:
      semi-amortized variational inference, which closes the encoder's amortization gap
      where the individual posteriors are narrow (many observations per individual). 0, the
      default, is NN-NLME as published.
    - `num_samples`: reparametrised draws of q per individual per step in the ELBO.
    - `learning_rate`, `encoder_learning_rate`: Adam rates of θ and of the encoder.
    - `encoder`: `"gru"` (recurrent, with time gaps and masking) or `"deepset"`; `hidden_size` its width.
    - `num_is_draws`: importance-sampling draws per individual for the log-likelihood and the
      Fisher information.
    - `num_fisher_draws`: the first this many of those draws give the observed information
      (its autodiff Hessian costs about 2·d likelihood passes per draw, d population parameters).
    - `init`: constrained population site values for start 0 (e.g. `{"mean": ..., "sd": ...}`).
    - `loglik_tolerance`: starts within this of the best log-likelihood count as reaching
      the same solution in the identifiability report.
    - `site`: name of the `log_likelihood` variable of `to_arviz`.

    **Returns:** a [`VAEResult`][nlme_ppl.VAEResult].
    """
    t0 = time.perf_counter()
    check_keys(key)
    check_model(model)
    check_data(data)
    num_starts = positive_int(num_starts, name="num_starts")
    num_steps = positive_int(num_steps, name="num_steps")
    num_samples = positive_int(num_samples, name="num_samples")
    local_steps = nonnegative_int(local_steps, name="local_steps")
    num_is_draws = positive_int(num_is_draws, name="num_is_draws")
    num_fisher_draws = min(positive_int(num_fisher_draws, name="num_fisher_draws"), num_is_draws)
    for name, value in (("learning_rate", learning_rate), ("encoder_learning_rate", encoder_learning_rate)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"`{name}` must be a positive number; got {value!r}.")
    if not (isinstance(jitter, (int, float)) and jitter >= 0):
        raise ValueError(f"`jitter` must be a non-negative number; got {jitter!r}.")
    k_init, k_enc, k_jit, k_train = jax.random.split(key, 4)
    designs = model.designs_from_data(data)  # checks the data against the model
    check_masking(model, data, prior_centre(model, k_init))

    if init is None and hasattr(population, "init_values"):
        # the individual modes of at most `_INIT_INDIVIDUALS` evenly spaced individuals (their
        # medians and spread are all `init_values` reads; at N = 500 all of them took 72 s)
        sub = data if data.num_individuals <= _INIT_INDIVIDUALS else data.subset(np.linspace(0, data.num_individuals - 1, _INIT_INDIVIDUALS).round().astype(int))
        modes = model.canonicalize(individual_modes(model, sub, k_init, num_starts=4))
        init = dict(population.init_values(modes[:, None, :]))
    layout, z0 = build_layout(population, model, data, init)
    flat0, unravel = ravel_pytree(z0)
    noise = jitter * jax.random.normal(k_jit, (num_starts, flat0.size))
    starts = jax.vmap(unravel)(flat0 + noise.at[0].set(0.0))

    inputs = tuple(jnp.asarray(a) for a in encoder_inputs(model, data))
    encoders = [build_encoder(model, data, k, latent_dim=layout.latent_dim, kind=encoder, hidden_size=hidden_size) for k in jax.random.split(k_enc, num_starts)]
    static = eqx.partition(encoders[0], eqx.is_array)[1]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[eqx.partition(e, eqx.is_array)[0] for e in encoders])
    z_fin, enc_fin, local_fin, history = train_starts(
        layout, model, starts, eqx.combine(stacked, static), inputs, data, designs, jax.random.split(k_train, num_starts),
        num_steps=num_steps, num_samples=num_samples, lr_theta=float(learning_rate), lr_encoder=float(encoder_learning_rate),
        local_steps=local_steps,
    )  # fmt: skip

    # every start: its estimates and its marginal log-likelihood (common random numbers)
    k_is = jax.random.fold_in(key, _IS_STREAM)
    start_labels, start_ll, per_start = [], np.full(num_starts, -np.inf), []
    for s in range(num_starts):
        z_s = jax.tree.map(lambda x: x[s], z_fin)
        enc_s = jax.tree.map(lambda x: x[s] if eqx.is_array(x) else x, enc_fin)
        local_s = jax.tree.map(lambda x: x[s], local_fin)
        start_labels.append({k: float(v) for k, v in flatten_params(population, layout.constrain(z_s, data)).items()})
        draws = draw_proposal(layout, z_s, enc_s, inputs, data, k_is, num_is_draws, local_s)
        pw, se = marginal(layout, model, z_s, draws, data, designs)
        total = float(jnp.sum(pw))
        start_ll[s] = total if np.isfinite(total) else -np.inf
        per_start.append((z_s, enc_s, local_s, draws, np.asarray(pw), np.asarray(se)))
    if not np.isfinite(start_ll).any():
        raise ValueError(
            "every start of the VAE fit ended with a non-finite log-likelihood; lower `learning_rate`, raise "
            "`num_steps`, or give `init` (population site values) near the data."
        )
    best = int(np.argmax(start_ll))
    z_b, enc_b, local_b, draws_b, pw_b, se_b = per_start[best]

    # observed Fisher information at the best start
    fisher_draws = jax.tree.map(lambda x: x[:num_fisher_draws], draws_b)
    zflat, hess, scores = information(layout, model, z_b, fisher_draws, data, designs)
    _, unravel_b = ravel_pytree(z_b)
    params = start_labels[best]
    labels = list(params)

    def flat(zf):
        values = flatten_params(population, layout.constrain(unravel_b(zf), data))
        return jnp.stack([jnp.asarray(values[k], jnp.float64) for k in labels])

    cov = _covariances(-hess, scores, np.asarray(jax.jacfwd(flat)(jnp.asarray(zflat))), labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.diag(cov.hessian))
        corr = cov.hessian / np.outer(sd, sd)

    # individual estimates: one encoder pass
    site_values, phi, _, loc = layout.evaluate(z_b, data)
    mu, log_s = encode_all(enc_b, inputs, local_b)
    idx = np.asarray(layout.latent_index)
    ebe_mean = np.asarray(layout.full(phi, loc + mu))
    ebe_sd = np.zeros_like(ebe_mean)
    ebe_sd[:, idx] = np.exp(np.asarray(log_s))

    n_obs = int(np.sum(np.asarray(data.mask)))
    mc_se = float(np.sqrt(np.sum(se_b**2)))
    absolute = ObjectiveFunction(float(np.sum(pw_b)), mc_se, len(params), n_obs, 0.0, 0.0, mc_se, "vae-encoder")
    start_params = {k: np.array([sp[k] for sp in start_labels]) for k in labels}
    report = identifiability_report(start_params, start_ll, best, cov.stderr(), corr, loglik_tolerance=loglik_tolerance)
    return VAEResult(
        params=params, stderr=cov.stderr(), robust_stderr=cov.stderr(robust=True), covariance=cov.hessian, robust_covariance=cov.robust,
        site_values={k: np.asarray(v) for k, v in site_values.items()}, ebe_mean=ebe_mean, ebe_sd=ebe_sd,
        elbo_history=np.asarray(history), start_params=start_params, start_loglik=start_ll, best=best, absolute=absolute,
        pointwise=pw_b, pointwise_mc_se=se_b, identifiability=report, encoder=enc_b,
        local=local_b if local_steps else None, seconds=time.perf_counter() - t0,
        ids=tuple(data.ids), param_names=tuple(model.param_names), population=population, site=site,
    )  # fmt: skip


def _covariances(info: np.ndarray, scores: np.ndarray, jac: np.ndarray, labels, *, rtol: float = 1e-8) -> Covariances:
    """The inverse-information and sandwich covariances of the labelled estimates, from the
    observed information `info` `(d, d)` in z, the scores `(N, d)` and the Jacobian `(L, d)` of
    the labels in z.

    Where the information is singular (an eigenvalue at most `rtol` times the largest, or
    negative: a direction the data do not identify, e.g. two parameters entering as a product),
    the generalised inverse is taken on the identified directions, and the labels that load on
    an unidentified direction get NaN variances (their SEs are not finite), while the others
    keep theirs."""
    info = 0.5 * (info + info.T)
    w, v = np.linalg.eigh(info)
    good = w > rtol * max(float(np.max(np.abs(w))), 1e-300)
    cov_z = (v[:, good] / w[good]) @ v[:, good].T
    robust_z = cov_z @ (scores.T @ scores) @ cov_z
    cov, robust = jac @ cov_z @ jac.T, jac @ robust_z @ jac.T
    if not good.all():
        load = np.abs(jac @ v[:, ~good]).max(axis=1)
        bad = load > 1e-6 * np.maximum(np.abs(jac).max(axis=1), 1e-300)
        cov[bad, :], cov[:, bad], robust[bad, :], robust[:, bad] = np.nan, np.nan, np.nan, np.nan
    return Covariances(labels, cov, robust)
