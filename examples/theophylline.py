"""Theophylline: a population PK fit to real data, compared with R `nlme`.

    python examples/theophylline.py [--num-samples 500] [--out examples_output]

The data are R's `datasets::Theoph` (Boeckmann, Sheiner & Beal 1994): 12 subjects, one oral
dose of theophylline each (AMT = 3.1–5.9 mg/kg × body weight), 11 plasma concentrations
over 25 h. They ship as a NONMEM-format CSV, `examples/data/theophylline.csv`.

Model: `pk_oral_1cmt` (ka, CL, V on the log scale, additive error), with a log-normal
random effect on each of ka, CL and V and a diagonal covariance. This is the model that
`examples/theophylline_nlme.R` fits by maximum likelihood with `nlme`; its estimates ship in
`examples/data/theophylline_nlme.csv`. Here the shipped amortized estimator fits it by MAP and
by NUTS, with no simulation and no ODE at fit time.
"""

import argparse
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import nlme_ppl as nlp  # noqa: E402
from nlme_ppl.models.pk import one_compartment_concentration  # noqa: E402

DATA = Path(__file__).parent / "data"


def population(model):
    """Random effects on ka, CL and V; the additive error SD is one shared value, as in nlme."""
    return nlp.populations.gaussian(model, fixed=("sigma_add",))


def compare(fit_params: dict, reference: pd.DataFrame) -> pd.DataFrame:
    """Side by side with the nlme estimates (log scale; the error as an SD in mg/L)."""
    ref = reference.set_index("parameter")["estimate"]
    rows = []
    for p in ("mean[ka]", "mean[CL]", "mean[V]", "sd[ka]", "sd[CL]", "sd[V]"):
        rows.append({"parameter": p, "nlme_ppl": fit_params[p], "R nlme": ref[p]})
    rows.append({"parameter": "sigma_add (mg/L)", "nlme_ppl": float(np.exp(fit_params["mean[sigma_add]"])), "R nlme": ref["sigma_add_sd"]})
    out = pd.DataFrame(rows).set_index("parameter")
    out["difference"] = out["nlme_ppl"] - out["R nlme"]
    out["relative"] = out["difference"] / out["R nlme"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--num-warmup", type=int, default=500)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--out", default="examples_output")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = nlp.read_nonmem(DATA / "theophylline.csv")
    print(data)
    model = nlp.models.pk_oral_1cmt()
    post = nlp.pretrained("pk_oral_1cmt")
    pop = population(model)
    reference = pd.read_csv(DATA / "theophylline_nlme.csv")

    fit = nlp.fit_map(pop, post, data, jax.random.key(0), num_draws=200)
    print(fit.table())
    table = compare(fit.params, reference)
    print("\nMAP against R nlme (maximum likelihood):")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    table.to_csv(out / "theophylline_vs_nlme.csv")

    idata = nlp.fit_nuts(pop, post, data, jax.random.key(1), num_draws=200, num_chains=2,
                         num_warmup=args.num_warmup, num_samples=args.num_samples, init=fit, progress=False)
    import arviz as az

    print(az.summary(idata, var_names=["mean", "sd"], ci_prob=0.9))

    # Individual fits: each subject's data with the curve at its posterior median (estimator draws)
    draws = np.median(np.asarray(post.sample(data, jax.random.key(2), num_draws=500)), axis=1)
    fig, axes = plt.subplots(3, 4, figsize=(11, 7), sharex=True)
    grid = np.linspace(0, 25, 200)
    d = data.doses
    for i, ax in enumerate(axes.flat):
        m = np.asarray(data.mask[i])
        ax.plot(np.asarray(data.times[i])[m], np.asarray(data.values[i])[m], "ko", ms=3)
        c = one_compartment_concentration(grid, d.times[i], d.amounts[i], d.rates[i], d.cmt[i], d.mask[i], *np.exp(draws[i, :3]))
        ax.plot(grid, np.asarray(c), "C0")
        ax.set_title(f"subject {data.ids[i]}", fontsize=9)
    fig.supxlabel("time (h)")
    fig.supylabel("theophylline (mg/L)")
    fig.tight_layout()
    fig.savefig(out / "theophylline_fits.png", dpi=100)
    print(f"wrote {out}/theophylline_vs_nlme.csv and {out}/theophylline_fits.png")


if __name__ == "__main__":
    main()
