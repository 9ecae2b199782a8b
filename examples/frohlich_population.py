"""Fit a population of single cells with the shipped estimator, and compare two population models.

    python examples/frohlich_population.py [--num-individuals 300] [--out examples_output]

1. Simulate cells from a known Gaussian population (log scale).
2. Fit a diagonal and a full-covariance population model by NUTS over the amortized surrogate.
3. Compare them by PSIS-LOO (one log-likelihood term per cell), and plot the estimates.
"""

import argparse
from pathlib import Path

import arviz as az
import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import nlme_ppl as nlp  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--num-individuals", type=int, default=300)
    p.add_argument("--num-warmup", type=int, default=300)
    p.add_argument("--num-samples", type=int, default=300)
    p.add_argument("--out", default="examples_output")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = nlp.models.frohlich_simple()
    post = nlp.pretrained("frohlich_simple")
    truth = nlp.populations.gaussian(model, fixed=("offset", "sigma"))  # the demo's truth: no random effect on offset, sigma
    phi = nlp.simulate_population(truth, nlp.demo.DEMO_TRUTH, jax.random.key(0), num_individuals=args.num_individuals)
    data = nlp.simulate_data(model, phi, jax.random.key(1))

    fits = {}
    for covariance in ("diag", "full"):
        pop = nlp.populations.gaussian(model, covariance=covariance, fixed=("offset", "sigma"), mean_prior=nlp.demo.DEMO_MEAN_PRIOR)
        fits[covariance] = nlp.fit_nuts(pop, post, data, jax.random.key(2), num_chains=2, num_warmup=args.num_warmup, num_samples=args.num_samples, progress=False)
        print(f"--- covariance={covariance}")
        print(az.summary(fits[covariance], var_names=["mean", "sd"], ci_prob=0.9))

    comparison = az.compare(fits)
    print(comparison)
    comparison.to_csv(out / "loo_comparison.csv")

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, idata) in enumerate(fits.items()):
        m = idata.posterior["mean"]
        ax.errorbar(range(m.sizes["param"]), m.mean(("chain", "draw")), yerr=2 * m.std(("chain", "draw")), fmt="o", label=name, alpha=0.8)
    ax.plot(range(model.num_params), [nlp.demo.DEMO_TRUTH["mean"][n] for n in model.param_names], "k_", ms=20, label="truth")
    ax.set_xticks(range(model.num_params), model.param_names, rotation=30)
    ax.set_ylabel("population mean (log scale)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "population_means.png", dpi=110)
    print(f"wrote {out}/loo_comparison.csv and {out}/population_means.png")


if __name__ == "__main__":
    main()
