"""Your own individual model, end to end: write it in NumPyro, train an estimator, fit a population.

    python examples/custom_model.py [--num-simulations 20000] [--max-epochs 30] [--out examples_output]

The model: a drug's concentration after an IV bolus, one compartment, log-normal noise.
Individual parameters (log scale): clearance `CL`, volume `V`, and the noise SD `sigma`.
"""

import argparse
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import nlme_ppl as nlp

TIMES = np.array([0.25, 0.5, 1, 2, 4, 6, 8, 12, 24.0])
DOSE = 100.0


def iv_bolus(design, obs=None):
    log_cl = numpyro.sample("CL", dist.Normal(0.0, 1.0))
    log_v = numpyro.sample("V", dist.Normal(2.0, 1.0))
    log_sigma = numpyro.sample("sigma", dist.Normal(-2.0, 0.5))
    conc = DOSE / jnp.exp(log_v) * jnp.exp(-jnp.exp(log_cl - log_v) * design["times"])
    numpyro.sample("obs", dist.Normal(jnp.log(conc), jnp.exp(log_sigma)).mask(design["mask"]).to_event(1), obs=obs)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--num-simulations", type=int, default=20_000)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--num-individuals", type=int, default=100)
    p.add_argument("--out", default="examples_output")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = nlp.models.IndividualModel(iv_bolus, {"times": TIMES}, name="iv_bolus")
    config = replace(nlp.TrainConfig(), max_epochs=args.max_epochs)
    post = nlp.train(model, jax.random.key(0), num_simulations=args.num_simulations, config=config, loss_plot=out / "iv_bolus_loss.png")
    post.save(out / "iv_bolus.nlp")
    post = nlp.load_posterior(out / "iv_bolus.nlp", model=model)  # files are checked against the model

    truth = {"CL": (0.3, 0.3), "V": (2.5, 0.2), "sigma": (-2.0, 0.0)}
    z = jax.random.normal(jax.random.key(1), (args.num_individuals, 3))
    phi = jnp.array([m for m, _ in truth.values()]) + jnp.array([s for _, s in truth.values()]) * z
    data = nlp.simulate_data(model, phi, jax.random.key(2))

    pop = nlp.populations.gaussian(model, fixed=("sigma",))
    fit = nlp.fit_map(pop, post, data, jax.random.key(3))
    table = fit.table(truth={**{f"mean[{k}]": m for k, (m, _) in truth.items()}, **{f"sd[{k}]": s for k, (_, s) in truth.items() if s}})
    print(table)
    table.to_csv(out / "iv_bolus_parameters.csv")


if __name__ == "__main__":
    main()
