"""Few individuals, parameters without random effect: R's Indometh data against R `nlme`.

    python examples/indometh.py [--num-simulations 20000] [--estimator biexp.nlp] [--out examples_output]

Six subjects, 11 plasma concentrations each over 8 h after an IV bolus of indomethacin
(examples/data/indometh.csv, written by examples/indometh_nlme.R from R's datasets::Indometh).
The individual model, written by the user in NumPyro, is the classic biexponential of Pinheiro
and Bates (2000, section 6.2) on the log scale of its four coefficients, with an additive error:

    C(t) = exp(lA1) exp(-exp(lrc1) t) + exp(lA2) exp(-exp(lrc2) t),   y ~ N(C(t), sigma^2).

The population gives A1 and A2 log-normal random effects; the two rate constants and the error SD
have none (R's fit puts the SD of lrc1 at 1e-4 when it is given one). The estimator is trained with
`nlp.train`'s defaults (20,000 simulations) and the population is fitted with `fit_map`'s
defaults (refined draws, the likelihood treatment of the three parameters); the script prints
the estimates beside R `nlme`'s maximum-likelihood ones (examples/data/indometh_nlme.csv).
Without `--estimator` it trains (a minute or two on two cores) and saves the estimator to
`OUT/indometh_biexp.nlp`; with it, it loads that file.
"""

import argparse
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd

import nlme_ppl as nlp

DATA = Path(__file__).parent / "data"
TIMES = np.array([0.25, 0.5, 0.75, 1, 1.25, 2, 3, 4, 5, 6, 8.0])


def biexp(design, obs=None):
    lA1 = numpyro.sample("lA1", dist.Normal(1.0, 1.0))
    lrc1 = numpyro.sample("lrc1", dist.Normal(1.0, 0.5))
    lA2 = numpyro.sample("lA2", dist.Normal(-0.5, 1.0))
    lrc2 = numpyro.sample("lrc2", dist.Normal(-1.0, 0.5))
    log_sigma = numpyro.sample("log_sigma", dist.Normal(-2.0, 1.0))
    t = design["times"]
    conc = jnp.exp(lA1 - jnp.exp(lrc1) * t) + jnp.exp(lA2 - jnp.exp(lrc2) * t)
    numpyro.sample("obs", dist.Normal(conc, jnp.exp(log_sigma)).mask(design["mask"]).to_event(1), obs=obs)


def model() -> nlp.IndividualModel:
    return nlp.IndividualModel(biexp, {"times": TIMES}, name="indometh_biexp")


def load_data() -> nlp.Dataset:
    df = pd.read_csv(DATA / "indometh.csv")
    groups = [g.sort_values("TIME") for _, g in df.groupby("ID", sort=True)]
    return nlp.Dataset.from_individuals([g.TIME.to_numpy() for g in groups], [g.DV.to_numpy() for g in groups],
                                        ids=[str(i) for i in sorted(df.ID.unique())])


def reference() -> dict[str, float]:
    """R `nlme`'s ML estimates, on the scale of this library's parameter table."""
    ref = pd.read_csv(DATA / "indometh_nlme.csv").set_index("parameter")["estimate"].to_dict()
    ref["mean[log_sigma]"] = float(np.log(ref.pop("sigma")))
    ref.pop("loglik")
    return ref


def fit(posterior, data, key):
    population = nlp.populations.gaussian(posterior.model, fixed=("lrc1", "lrc2", "log_sigma"))
    return nlp.fit_map(population, posterior, data, key)


def compare(result) -> pd.DataFrame:
    """The fit's estimates beside R's, with the difference (means on the log scale) and the ratio (SDs)."""
    ref = reference()
    table = result.table()
    rows = []
    for name, r in ref.items():
        est = float(table.loc[name, "estimate"])
        rows.append({"parameter": name, "nlme_ppl": est, "R nlme": r,
                     "difference": est - r if not name.startswith("sd[") else np.nan,
                     "ratio": est / r if name.startswith("sd[") else np.nan})
    return pd.DataFrame(rows).set_index("parameter")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--estimator", help="a trained estimator file; default: train one")
    p.add_argument("--num-simulations", type=int, default=20_000)
    p.add_argument("--max-epochs", type=int, help="default: nlp.TrainConfig's")
    p.add_argument("--out", default="examples_output")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m = model()
    if args.estimator:
        posterior = nlp.load_posterior(args.estimator, model=m)
    else:
        config = nlp.TrainConfig() if args.max_epochs is None else replace(nlp.TrainConfig(), max_epochs=args.max_epochs)
        posterior = nlp.train(m, jax.random.key(0), num_simulations=args.num_simulations, config=config)
        posterior.save(out / "indometh_biexp.nlp")
    result = fit(posterior, load_data(), jax.random.key(1))
    table = compare(result)
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    summary = result.diagnostics_summary()
    print(f"Pareto k > 0.7 at the estimate: {summary['pareto_k_above_0.7']} of {len(result.ids)} (worst {summary['pareto_k_max']:.2f}); "
          f"treatment of the parameters without random effect: {result.fixed_treatment} ({result.fixed_rounds} fits)")
    table.to_csv(out / "indometh_comparison.csv")
    return result, table


if __name__ == "__main__":
    main()
