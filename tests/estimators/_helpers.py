"""A tiny linear-Gaussian individual model with a closed-form posterior, and an untrained
posterior for it (random weights; enough for shapes, chunking, densities and files)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import nlme_ppl as nlp
from tests.linear_gaussian import conjugate_posterior
from nlme_ppl.estimators import AmortizedPosterior, InputScaling, TrainConfig, TrainingHistory
from nlme_ppl.estimators._posterior import build_networks

SIGMA = 0.5
TIMES = np.linspace(0.0, 1.0, 8)


def program(design, obs=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    numpyro.sample("obs", dist.Normal(a + b * design["times"], SIGMA).mask(design["mask"]).to_event(1), obs=obs)


def linear_model(name="linear_test"):
    return nlp.models.IndividualModel(program, {"times": TIMES}, name=name)


def exact_posterior(times, values, mask):
    """Mean `(N, 2)` and covariance `(N, 2, 2)` of p(a, b | y) for each individual."""
    return conjugate_posterior(times, values, mask, prior_sd=1.0, sigma=SIGMA)


SMALL = TrainConfig(
    summary="deepset", summary_dim=8, hidden_size=16, summary_depth=1, patch_size=2,
    flow_layers=2, knots=5, interval=5.0, nn_width=16, max_epochs=2,
)


def untrained_posterior(model=None, config=SMALL, *, seed=0, loc=(0.3, -0.2), scale=(1.7, 0.6)):
    model = linear_model() if model is None else model
    with jax.enable_x64(False):
        summary, flow = build_networks(
            config, num_params=model.num_params, scaling=InputScaling(1.0, 0.14, 0.1, 1.2), key=jax.random.key(seed)
        )
    return AmortizedPosterior(
        model=model,
        summary=summary,
        flow=flow,
        param_loc=jnp.asarray(loc, jnp.float64),
        param_scale=jnp.asarray(scale, jnp.float64),
        config=config,
        history=TrainingHistory(train_loss=(2.0, 1.5), val_loss=(1.9, 1.6), best_epoch=1, num_train=90, num_val=10),
    )


def some_data(n=7, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 1, (n, 9)), axis=1)
    y = rng.normal(size=(n, 9))
    m = rng.uniform(size=(n, 9)) < 0.8
    m[:, 0] = True
    return nlp.Dataset.from_arrays(t, y, mask=m)
