"""The sbi backend: train sbi's NPE on the torch SDE simulator, then fit a population.

    python examples/sbi_sde.py [--num-simulations 20000] [--max-epochs 30] [--out examples_output]

Needs the `[sbi]` extra (`pip install "nlme_ppl[sbi]"`; `make test` installs it).

1. Simulate `frohlich_sde` (the chemical Langevin single-cell model) in torch
   (`nlme_ppl.backends.sbi.frohlich_sde_torch`: Euler–Maruyama, its own noise per simulation).
2. Train sbi's neural posterior estimation (a neural spline flow with a masked DeepSet
   embedding) on those simulations: `nlp.train(model, key, backend="sbi")`.
3. Fit a synthetic population of cells by MAP and by NUTS over the amortized surrogate, exactly
   as with a flowjax estimator, and write the ArviZ DataTree (`posterior_sbi.nc`), the
   parameter table and the estimator file.
"""

import argparse
from pathlib import Path

import arviz as az
import jax
import numpy as np
import pandas as pd

import nlme_ppl as nlp
from nlme_ppl.backends.sbi import SbiConfig

#: The population: mRNA decays faster than protein (as in the demo); no random effect on the noise.
TRUTH = {"delta": -1.0, "gamma": -3.0, "k": 0.5, "m0": 4.0, "scale": 0.0, "t0": -0.5, "offset": 1.0, "sigma": -3.0}
SD = {"delta": 0.2, "gamma": 0.2, "k": 0.3, "m0": 0.3, "scale": 0.2, "t0": 0.2, "offset": 0.2, "sigma": 0.0}
MEAN_PRIOR = {"delta": (-1.0, 1.0), "gamma": (-3.0, 1.0)}  # labels the two nearly exchangeable rates


def population_data(model, key, n: int):
    """A synthetic population from `TRUTH` and `SD` (log scale): the data and the true φ."""
    k_phi, k_sim = jax.random.split(key)
    loc = np.array([TRUTH[p] for p in model.param_names])
    sd = np.array([SD[p] for p in model.param_names])
    phi = loc + sd * np.asarray(jax.random.normal(k_phi, (n, model.num_params)))
    return nlp.simulate_data(model, phi, k_sim), phi


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--num-simulations", type=int, default=20_000)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--num-individuals", type=int, default=100)
    p.add_argument("--num-warmup", type=int, default=200)
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--out", default="examples_output")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = nlp.models.frohlich_sde()
    post = nlp.train(model, jax.random.key(0), num_simulations=args.num_simulations, backend="sbi",
                     config=SbiConfig(max_epochs=args.max_epochs), progress=False)
    h = post.history
    print(f"{post}: {h['num_simulations']} torch simulations in {h['simulate_seconds']:.0f} s, "
          f"{h['epochs']} epochs in {h['train_seconds']:.0f} s")
    post.save(out / "frohlich_sde_sbi.nlp")

    data, phi = population_data(model, jax.random.key(1), args.num_individuals)
    pop = nlp.populations.gaussian(model, fixed=("sigma",), mean_prior=MEAN_PRIOR)
    fit = nlp.fit_map(pop, post, data, jax.random.key(2), num_draws=200, diagnose=False)
    rows = [{"parameter": f"mean[{n}]", "truth": TRUTH[n], "sample": float(phi[:, i].mean()), "MAP": fit.params[f"mean[{n}]"]}
            for i, n in enumerate(model.param_names)]
    table = pd.DataFrame(rows).set_index("parameter")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    table.to_csv(out / "sbi_sde_map.csv")

    idata = nlp.fit_nuts(pop, post, data, jax.random.key(3), num_draws=200, num_chains=2, num_warmup=args.num_warmup,
                         num_samples=args.num_samples, init=fit, progress=False)
    print(az.summary(idata, var_names=["mean"], ci_prob=0.9))
    idata.to_netcdf(out / "posterior_sbi.nc", engine="h5netcdf")
    print(f"wrote {out}/frohlich_sde_sbi.nlp, {out}/sbi_sde_map.csv and {out}/posterior_sbi.nc")


if __name__ == "__main__":
    main()
