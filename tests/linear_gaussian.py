"""A linear-Gaussian individual model whose posterior and marginal likelihoods are closed form.

phi = (a, b) ~ N(0, S0²) under the training prior; y_t = a + b t + sigma·eps at centred times,
so X^T X is diagonal and the population MLE has a closed form.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy import stats

import nlme_ppl as nlp

S0, SIGMA = 3.0, 0.5
TIMES = np.linspace(-1.0, 1.0, 8)


def program(design, obs=None):
    a = numpyro.sample("a", dist.Normal(0.0, S0))
    b = numpyro.sample("b", dist.Normal(0.0, S0))
    numpyro.sample("obs", dist.Normal(a + b * design["times"], SIGMA).mask(design["mask"]).to_event(1), obs=obs)


def model():
    return nlp.models.IndividualModel(program, {"times": TIMES}, name="linear_gaussian")


def design_matrix(t):
    return np.stack([np.ones_like(t), t], -1)


def conjugate_posterior(times, values, mask, *, prior_sd, sigma):
    """The closed-form posterior of (a, b) for y_t = a + b t + sigma·eps under the prior
    N(0, diag(prior_sd²)), for each individual: mean `(N, 2)` and covariance `(N, 2, 2)`.
    The one copy of this closed form in the tests (padded observations do not count)."""
    t, y, m = (np.asarray(x, dtype=np.float64) for x in (times, values, mask))
    X = design_matrix(t) * m[..., None]  # padded rows are zero
    prec = np.diag(np.broadcast_to(np.asarray(prior_sd, np.float64) ** -2.0, (2,))) + np.einsum("ntk,ntl->nkl", X, X) / sigma**2
    cov = np.linalg.inv(prec)
    mean = np.einsum("nkl,nl->nk", cov, np.einsum("ntk,nt->nk", X, y * m)) / sigma**2
    return mean, cov


class ExactPosterior:
    """The exact conjugate posterior p(phi | y_i), with the estimator interface (backend
    "exact": fits use it as it is, without refinement)."""

    backend = "exact"

    def __init__(self, model):
        self.model = model
        self.param_names = model.param_names

    def moments(self, data):
        return conjugate_posterior(data.times, data.values, data.mask, prior_sd=S0, sigma=SIGMA)

    def summaries(self, data):
        return None  # no summary network (the posterior protocol's answer for that)

    def sample(self, data, key, *, num_draws):
        mean, cov = self.moments(data)
        z = jax.random.normal(key, (data.num_individuals, num_draws, 2))
        return jnp.asarray(mean[:, None, :] + jnp.einsum("nij,nmj->nmi", np.linalg.cholesky(cov), z))


class WideEstimator(ExactPosterior):
    """A lossy estimator: the exact posterior with SDs `widen` times too wide and its mean moved
    by `shift` exact SDs, with its density (backend "wide": fits treat it as an estimator)."""

    backend = "wide"

    def __init__(self, model, *, widen: float, shift: float):
        super().__init__(model)
        self.widen, self.shift = widen, shift

    def _moments(self, data):
        mean, cov = self.moments(data)
        return mean + self.shift * np.sqrt(np.diagonal(cov, axis1=1, axis2=2)), cov * self.widen**2

    def sample(self, data, key, *, num_draws):
        mean, cov = self._moments(data)
        z = jax.random.normal(key, (data.num_individuals, num_draws, 2))
        return jnp.asarray(mean[:, None, :] + jnp.einsum("nij,nmj->nmi", np.linalg.cholesky(cov), z))

    def log_prob(self, data, params):
        mean, cov = self._moments(data)
        return jnp.asarray(np.stack([stats.multivariate_normal(m, c).logpdf(np.asarray(p)) for m, c, p in zip(mean, cov, params)]))


def simulate_population(key, n, mean, sd, *, corr=0.0):
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    cov = np.diag(sd) @ np.array([[1, corr], [corr, 1]]) @ np.diag(sd)
    phi = rng.multivariate_normal(mean, cov, size=n)
    y = phi[:, :1] + phi[:, 1:] * TIMES + SIGMA * rng.standard_normal((n, TIMES.size))
    return nlp.Dataset.from_arrays(TIMES, y), phi


def log_marginal(data, mean, cov):
    """Sum over individuals of log N(y_i; X mean, X cov X^T + sigma² I)."""
    total = 0.0
    for t, y, m in zip(np.asarray(data.times), np.asarray(data.values), np.asarray(data.mask)):
        X = design_matrix(t[m])
        total += stats.multivariate_normal(X @ mean, X @ cov @ X.T + SIGMA**2 * np.eye(m.sum())).logpdf(y[m])
    return total


def ols(data):
    """Per-individual least-squares estimates (N, 2)."""
    X = design_matrix(TIMES)
    return np.asarray(data.values) @ X @ np.linalg.inv(X.T @ X)


def closed_form_mle(data):
    """Diagonal-covariance MLE: OLS estimates b_i are sufficient, with independent components."""
    X = design_matrix(TIMES)
    xtx = X.T @ X
    b = ols(data)
    mean = b.mean(0)
    sd = np.sqrt(b.var(0) - SIGMA**2 / np.diag(xtx))
    return mean, sd, b
