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


class ExactPosterior:
    """The exact conjugate posterior p(phi | y_i), with the estimator interface."""

    def __init__(self, model):
        self.model = model
        self.param_names = model.param_names

    def moments(self, data):
        means, covs = [], []
        for t, y, m in zip(np.asarray(data.times), np.asarray(data.values), np.asarray(data.mask)):
            X = design_matrix(t[m])
            prec = np.eye(2) / S0**2 + X.T @ X / SIGMA**2
            cov = np.linalg.inv(prec)
            means.append(cov @ (X.T @ y[m]) / SIGMA**2)
            covs.append(cov)
        return np.array(means), np.array(covs)

    def sample(self, data, key, *, num_draws):
        mean, cov = self.moments(data)
        z = jax.random.normal(key, (data.num_individuals, num_draws, 2))
        return jnp.asarray(mean[:, None, :] + jnp.einsum("nij,nmj->nmi", np.linalg.cholesky(cov), z))


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
