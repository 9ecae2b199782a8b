"""The pieces of the NN-NLME variational autoencoder: the population layout (which sites are
population parameters θ, which are the individual random effects), the joint log-density
log p(y_i | φ_i) + log p(φ_i | θ) that both the ELBO and the importance-sampled marginal
likelihood evaluate, and the encoder q(φ_i | y_i).

The population program is run as it is (DESIGN.md: engines compose with the user's program,
they do not fork it): its population sites are substituted in unconstrained coordinates z; each
latent individual site inside `numpyro.plate("individuals", N)` gives its distribution p(φ | θ),
whose `log_prob` and `mean` the VAE uses; `Delta` sites (parameters without random effect) give
their values, which enter the decoder and carry the gradient to their population parameter.
The individual sites must be independent given θ (as in every Gaussian population program).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jaxtyping import Array, Bool, Float, PRNGKeyArray
from numpyro.infer.util import constrain_fn, unconstrain_fn

from ..estimators import DeepSetSummary, GRUSummary, InputScaling
from ..estimators._encoding import encode, num_channels
from ..estimators._summary import AbstractSummary, to_float32
from .exact import _individual_sites

__all__ = ["Layout", "VAEEncoder", "build_encoder", "build_layout"]


class Layout(eqx.Module):
    """Where θ and the random effects live in a population program.

    - `population`: the program; `param_names`: the individual model's parameters.
    - `pop_sites`: the population sites (sampled, outside the plate), in trace order.
    - `latent`: `(site, parameter names, scalar)` of each latent individual site; the latent
      vector of an individual, `(r,)`, is their columns concatenated in this order.
    - `latent_index`: the column of `param_names` of each latent entry.
    - `template`: the unconstrained population site values (the shapes of z).
    """

    population: Any = eqx.field(static=True)
    param_names: tuple[str, ...] = eqx.field(static=True)
    pop_sites: tuple[str, ...] = eqx.field(static=True)
    latent: tuple[tuple[str, tuple[str, ...], bool], ...] = eqx.field(static=True)
    latent_index: tuple[int, ...] = eqx.field(static=True)
    template: dict

    @property
    def latent_names(self) -> tuple[str, ...]:
        return tuple(self.param_names[j] for j in self.latent_index)

    @property
    def latent_dim(self) -> int:
        return len(self.latent_index)

    def latent_values(self, phi_lat: Float[Array, "... N r"]) -> dict[str, Array]:
        """The latent sites' values from latent vectors `(..., N, r)`."""
        out, j = {}, 0
        for site, names, scalar in self.latent:
            block = phi_lat[..., j : j + len(names)]
            out[site] = block[..., 0] if scalar else block
            j += len(names)
        return out

    def constrain(self, z: dict, data) -> dict:
        """Constrained population site values (deterministic sites, e.g. `corr`, included)."""
        zeros = self.latent_values(jnp.zeros((data.num_individuals, self.latent_dim)))
        params = constrain_fn(self.population, (data,), {}, {**z, **zeros}, return_deterministic=True)
        return {k: v for k, v in params.items() if k not in zeros}

    def evaluate(self, z: dict, data) -> tuple[dict, Float[Array, "N k"], list, Float[Array, "N r"]]:
        """Run the population program at z.

        **Returns:** `(site_values, phi, dists, loc)`: the constrained population site values,
        the `(N, k)` individual parameters with the `Delta` (fixed) values in place and zeros at
        the latent entries, the latent sites' distributions p(φ | θ), and their means `(N, r)`.
        """
        n = data.num_individuals
        zeros = self.latent_values(jnp.zeros((n, self.latent_dim)))
        params = constrain_fn(self.population, (data,), {}, {**z, **zeros}, return_deterministic=True)
        sub = numpyro.handlers.substitute(numpyro.handlers.seed(self.population, 0), data=params)
        tr = numpyro.handlers.trace(sub).get_trace(data)
        phi, _ = _individual_sites(tr, self.param_names, n)
        dists, locs = [], []
        for site, names, scalar in self.latent:
            fn = tr[site]["fn"]
            dists.append(fn)
            loc = jnp.broadcast_to(fn.mean, (n,) if scalar else (n, len(names)))
            locs.append(loc[:, None] if scalar else loc)
        site_values = {k: v for k, v in params.items() if k not in zeros}
        return site_values, phi, dists, jnp.concatenate(locs, axis=-1)

    def log_prior(self, dists, phi_lat: Float[Array, "... N r"]) -> Float[Array, "... N"]:
        """log p(φ_i | θ) of the latent entries `(..., N, r)`, one term per individual."""
        values = self.latent_values(phi_lat)
        return sum(fn.log_prob(values[site]) for fn, (site, _, _) in zip(dists, self.latent))

    def full(self, phi: Float[Array, "N k"], phi_lat: Float[Array, "... N r"]) -> Float[Array, "... N k"]:
        """The `(..., N, k)` individual parameters: `phi`'s fixed values, `phi_lat` at the latent entries."""
        base = jnp.broadcast_to(phi, (*phi_lat.shape[:-1], phi.shape[-1]))
        return base.at[..., jnp.array(self.latent_index)].set(phi_lat)


def build_layout(population, model, data, init: dict | None = None) -> tuple[Layout, dict]:
    """Trace `population(data)` once and read its layout.

    **Returns:** `(layout, z0)`: the layout and the unconstrained values of `init` (constrained
    population site values), or of the program's own draw where `init` lacks a site.
    """
    tr = numpyro.handlers.trace(numpyro.handlers.seed(population, 0)).get_trace(data)
    _, sites = _individual_sites(tr, model.param_names, data.num_individuals)
    latent = tuple((s, names, scalar) for s, (names, observed, scalar) in sites.items() if not observed)
    if not latent:
        raise ValueError(
            "the population program has no random effect (every individual parameter is a Delta site); the VAE "
            "encodes random effects: give at least one parameter a random effect (e.g. drop it from `fixed`)."
        )
    if "phi" in tr and "phi" not in sites:
        raise ValueError("the population program has a site named 'phi' outside the individual parameters; rename it.")
    pop_sites = tuple(k for k, m in tr.items() if m["type"] == "sample" and not m["is_observed"] and k not in sites)
    index = tuple(model.param_names.index(p) for _, names, _ in latent for p in names)
    values = {k: jnp.asarray(tr[k]["value"]) for k in pop_sites}
    values.update({k: jnp.asarray(v) for k, v in (init or {}).items() if k in pop_sites})
    values.update({s: jnp.asarray(tr[s]["value"]) for s, _, _ in latent})
    z = unconstrain_fn(population, (data,), {}, values)
    z0 = {k: jnp.asarray(z[k], jnp.float64) for k in pop_sites}
    return Layout(population, tuple(model.param_names), pop_sites, latent, index, z0), z0


class VAEEncoder(eqx.Module):
    """The shared encoder of NN-NLME: one individual's rows -> the mean offset and log-SD of its
    Gaussian q(φ_i | y_i) over the random effects.

    q(φ_i | y_i) = N(m_i(θ) + `loc`, diag(exp(`log_scale`))²), where m_i(θ) is the population
    mean of individual i (so the encoder learns each individual's deviation b_i, as in the
    authors' formulation φ_i = θ + b_i). The summary network is one of the project's
    (`GRUSummary`: a recurrent encoder with time gaps and masking, for irregular series;
    `DeepSetSummary`), so padding changes nothing; a linear head gives `2 r` outputs.
    Parameters in float32.
    """

    summary: AbstractSummary
    head: eqx.nn.Linear
    latent_dim: int = eqx.field(static=True)

    def __call__(
        self, times: Float[Array, " T"], values: Float[Array, " T ..."], mask: Bool[Array, " T"]
    ) -> tuple[Float[Array, " r"], Float[Array, " r"]]:
        """**Returns:** `(loc, log_scale)`, each `(r,)`, float32."""
        out = self.head(self.summary(times, values, mask))
        return out[: self.latent_dim], out[self.latent_dim :]


def build_encoder(
    model, data, key: PRNGKeyArray, *, latent_dim: int, kind: str = "gru", hidden_size: int = 32, summary_dim: int = 32,
    patch_size: int | None = None, init_log_scale: float = -2.0,
) -> VAEEncoder:
    """An untrained encoder for `model`'s rows (the estimators' encoding, doses included) of
    `data`, its input standardisation fitted on `data`. The head starts near zero: q starts at
    the population mean with SD exp(`init_log_scale`)."""
    if kind not in ("gru", "deepset"):
        raise ValueError(f"`encoder` must be 'gru' or 'deepset'; got {kind!r}.")
    times = np.asarray(data.times)
    if patch_size is None:
        patch_size = 1 if times.shape[1] <= 32 else 4
    scaling = InputScaling.fit(data.times, data.values, data.mask)
    k_sum, k_head = jax.random.split(key)
    common = dict(summary_dim=summary_dim, hidden_size=hidden_size, patch_size=patch_size, scaling=scaling, num_channels=num_channels(model))
    summary = GRUSummary(k_sum, **common) if kind == "gru" else DeepSetSummary(k_sum, **common)
    head = eqx.nn.Linear(summary_dim, 2 * latent_dim, dtype=jnp.float32, key=k_head)
    bias = jnp.concatenate([jnp.zeros(latent_dim), jnp.full(latent_dim, init_log_scale)]).astype(jnp.float32)
    head = eqx.tree_at(lambda h: (h.weight, h.bias), head, (head.weight * 0.01, bias))
    return VAEEncoder(to_float32(summary), to_float32(head), latent_dim)


def encoder_inputs(model, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `(N, T', ...)` rows the encoder reads (observations, and dose rows for dosing models)."""
    times, values, mask = encode(model, data)
    return np.asarray(times, np.float32), np.asarray(values, np.float32), np.asarray(mask, bool)


def encode_all(encoder: VAEEncoder, inputs, local=None) -> tuple[Float[Array, "N r"], Float[Array, "N r"]]:
    """The encoder on every individual, in float64, plus the per-individual offsets `local`
    `(dloc, dlog_scale)`, each `(N, r)`, of a semi-amortized fit (None: none)."""
    loc, log_scale = jax.vmap(encoder)(*inputs)
    loc, log_scale = loc.astype(jnp.float64), log_scale.astype(jnp.float64)
    if local is None:
        return loc, log_scale
    return loc + local[0], log_scale + local[1]


def log_likelihood(model, designs, values, phi: Float[Array, "... N k"]) -> Float[Array, "... N"]:
    """The exact log p(y_i | φ_i) for `(..., N, k)` parameters."""
    one = jax.vmap(model.log_likelihood)
    if phi.ndim == 2:
        return one(phi, designs, values)
    return jax.vmap(lambda p: log_likelihood(model, designs, values, p))(phi)
