"""Two experiments that share every parameter except γ: eGFP and the destabilised d2eGFP.

    python examples/multi_experiment.py [--num-individuals 200] [--out examples_output]

Fröhlich et al. (2018) transfected cells with mRNA of two reporters: eGFP and d2eGFP, whose
protein is degraded faster. The two experiments share the mRNA kinetics, the expression
level and the measurement, so a joint fit shares every population parameter except the
protein degradation rate γ.

With amortized inference this needs no new estimator and no new individual model: the
experiment is a 0/1 covariate of each cell, and the population model gives it an effect on
the mean of γ (`covariates={"gamma": "d2egfp"}`). The shipped `frohlich_simple` estimator
serves both experiments.

1. Simulate cells of both experiments from a known population.
2. Fit the joint population model by MAP (and, with --nuts, by NUTS).
3. Print both γ (log scale and half-life) against the truth, and plot the cells' γ.
"""

import argparse
from pathlib import Path

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import nlme_ppl as nlp  # noqa: E402

#: log γ of each experiment: eGFP protein half-life ~17 h, d2eGFP ~3.4 h.
GAMMA = {"eGFP": -3.2, "d2eGFP": -1.6}


def simulate(model, key, num_individuals: int):
    """Cells of both experiments (half each); the covariate `d2egfp` is 1 for d2eGFP cells, whose
    log γ is shifted by `beta`."""
    k_phi, k_data = jax.random.split(key)
    half = num_individuals // 2
    group = np.r_[np.zeros(half), np.ones(num_individuals - half)]
    truth = {**nlp.demo.DEMO_TRUTH, "beta": [GAMMA["d2eGFP"] - GAMMA["eGFP"]]}
    truth["mean"] = {**truth["mean"], "gamma": GAMMA["eGFP"]}
    phi = nlp.simulate_population(population(model), truth, k_phi, num_individuals=num_individuals, covariates={"d2egfp": group})
    return phi, nlp.simulate_data(model, phi, k_data, covariates={"d2egfp": group})


def population(model):
    return nlp.populations.gaussian(
        model, fixed=("offset", "sigma"), mean_prior=nlp.demo.DEMO_MEAN_PRIOR, covariates={"gamma": "d2egfp"}
    )


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--num-individuals", type=int, default=200)
    p.add_argument("--nuts", action="store_true", help="also sample the posterior by NUTS")
    p.add_argument("--out", default="examples_output")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = nlp.models.frohlich_simple()
    post = nlp.pretrained("frohlich_simple")
    phi, data = simulate(model, jax.random.key(0), args.num_individuals)
    pop = population(model)
    fit = nlp.fit_map(pop, post, data, jax.random.key(1))
    print(fit.table())

    g0 = fit.params["mean[gamma]"]
    g1 = g0 + fit.params["beta[gamma,d2egfp]"]
    print("\n            log gamma   truth   half-life (h)")
    for name, est in (("eGFP", g0), ("d2eGFP", g1)):
        print(f"{name:>8}  {est:10.3f}  {GAMMA[name]:6.2f}   {np.log(2) / np.exp(est):8.2f}")

    if args.nuts:
        import arviz as az

        idata = nlp.fit_nuts(pop, post, data, jax.random.key(2), num_chains=2, progress=False)
        print(az.summary(idata, var_names=["mean", "beta", "sd"], ci_prob=0.9))

    group = np.asarray(data.covariates["d2egfp"])
    med = np.median(np.asarray(post.sample(data, jax.random.key(3), num_draws=200)), axis=1)
    # the estimator's draws are symmetric in (delta, gamma): the smaller rate is gamma here
    gamma_i = np.minimum(med[:, 0], med[:, 1])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for g, name in enumerate(GAMMA):
        ax.hist(gamma_i[group == g], bins=25, alpha=0.6, label=f"{name}: cells' posterior median")
        ax.axvline((g0, g1)[g], color=f"C{g}", lw=2, label=f"{name}: population mean (MAP)")
        ax.axvline(GAMMA[name], color="k", ls="--", lw=1)
    ax.set_xlabel("log γ (protein degradation, 1/h); dashed: truth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "multi_experiment_gamma.png", dpi=110)
    print(f"wrote {out}/multi_experiment_gamma.png")


if __name__ == "__main__":
    main()
