"""Censored PK data: M3 with the shipped censoring estimator, against dropping the BLQ samples.

    python examples/pk_censored.py [--num-individuals 100] [--lloq 0.5] [--out examples_output]

A synthetic population of `pk_oral_1cmt` (one oral dose of 320 mg, 13 samples over 36 h)
is measured by an assay with a lower limit of quantification (LLOQ). Samples below it are
recorded at the limit and flagged (as a NONMEM file's BLQ/CENS column does). Two fits by MAP:

- **M3**: `pk_oral_1cmt(censoring=True)` and its shipped estimator, on every sample: a flagged
  sample contributes P(y < LLOQ) (the estimator has learnt that from simulations whose
  design prior draws an LLOQ per individual);
- **M1**: `pk_oral_1cmt()` on the samples above the limit only, the BLQ rows removed.

Dropping the low late samples keeps only the high ones, so M1 sees a slower elimination than
there is. The table and `pk_censored.png` put both beside the truth and beside the sample
mean and SD of the true individual values (what a perfect fit of this sample would give).
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import nlme_ppl as nlp  # noqa: E402

TRUTH = {"mean": {"ka": 0.4, "CL": 1.0, "V": 3.4}, "sd": {"ka": 0.3, "CL": 0.3, "V": 0.2}, "sigma_add": np.log(0.3)}
TIMES = np.array([0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 30.0, 36.0])
DOSE_MG = 320.0


def censored_population(key, num_individuals: int, lloq: float) -> tuple[nlp.Dataset, np.ndarray]:
    """A synthetic population measured with limit `lloq` (mg/L): the data (BLQ flagged) and the true φ."""
    model = nlp.models.pk_oral_1cmt(censoring=True)
    k_eta, k_obs = jax.random.split(key)
    means = np.array([TRUTH["mean"][p] for p in ("ka", "CL", "V")])
    sds = np.array([TRUTH["sd"][p] for p in ("ka", "CL", "V")])
    phi = means + sds * np.asarray(jax.random.normal(k_eta, (num_individuals, 3)))
    phi = np.column_stack([phi, np.full(num_individuals, TRUTH["sigma_add"])])
    n, t = num_individuals, TIMES.size
    doses = nlp.Doses.from_individuals([[0.0]] * n, [[DOSE_MG]] * n)
    designs = {"times": jnp.tile(TIMES, (n, 1)), "mask": jnp.ones((n, t), bool), "lloq": jnp.full((n, t), lloq), **doses.design()}
    data = nlp.simulate_data(model, jnp.asarray(phi), k_obs, designs=designs)
    return data, phi


def drop_censored(data: nlp.Dataset) -> nlp.Dataset:
    """The data without its censored samples (the M1 method)."""
    cens = np.zeros(data.times.shape, bool) if data.censored is None else np.asarray(data.censored)
    keep = np.asarray(data.mask) & ~cens
    times = [np.asarray(data.times[i])[keep[i]] for i in range(data.num_individuals)]
    values = [np.asarray(data.values[i])[keep[i]] for i in range(data.num_individuals)]
    return nlp.Dataset.from_individuals(times, values, ids=data.ids, doses=data.doses)


def fit_both(data: nlp.Dataset, key, phi=None) -> pd.DataFrame:
    """MAP by M3 (all samples, the censoring estimator) and by M1 (BLQ samples dropped), beside
    the truth and, given the true individual values `phi`, their sample mean and SD."""
    k3, k1 = jax.random.split(key)
    m3 = nlp.models.pk_oral_1cmt(censoring=True)
    fit3 = nlp.fit_map(nlp.populations.gaussian(m3, fixed=("sigma_add",)), nlp.pretrained("pk_oral_1cmt_censored"), data, k3)
    m1 = nlp.models.pk_oral_1cmt()
    fit1 = nlp.fit_map(nlp.populations.gaussian(m1, fixed=("sigma_add",)), nlp.pretrained("pk_oral_1cmt"), drop_censored(data), k1)
    rows = []
    for kind in ("mean", "sd"):
        for p in ("ka", "CL", "V"):
            name = f"{kind}[{p}]"
            rows.append({"parameter": name, "truth": TRUTH[kind][p], "M3": fit3.params[name], "M1 (BLQ dropped)": fit1.params[name]})
    rows.append({"parameter": "mean[sigma_add]", "truth": TRUTH["sigma_add"], "M3": fit3.params["mean[sigma_add]"],
                 "M1 (BLQ dropped)": fit1.params["mean[sigma_add]"]})
    table = pd.DataFrame(rows).set_index("parameter")
    if phi is not None:
        table.insert(1, "sample", [*phi[:, :3].mean(0), *phi[:, :3].std(0), phi[0, 3]])
    return table


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--num-individuals", type=int, default=100)
    p.add_argument("--lloq", type=float, default=1.0, help="limit of quantification, mg/L")
    p.add_argument("--out", default="examples_output")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data, phi = censored_population(jax.random.key(0), args.num_individuals, args.lloq)
    cens = np.asarray(data.censored)
    print(data, f"({cens.sum() / np.asarray(data.mask).sum():.0%} of samples below {args.lloq} mg/L)")
    table = fit_both(data, jax.random.key(1), phi)
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    table.to_csv(out / "pk_censored.csv")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i in range(min(data.num_individuals, 30)):
        t, y, c = np.asarray(data.times[i]), np.asarray(data.values[i]), cens[i]
        ax1.plot(t, y, "-", color="0.8", lw=0.7)
        ax1.plot(t[~c], y[~c], "k.", ms=3)
        ax1.plot(t[c], y[c], "rv", ms=4)
    ax1.axhline(args.lloq, color="r", lw=0.8, ls="--")
    ax1.set(yscale="log", xlabel="time (h)", ylabel="concentration (mg/L)", title="data (red: below the LLOQ, recorded at it)")
    x = np.arange(len(table))
    ax2.axhline(0, color="k", lw=0.8)
    for j, col in enumerate(("M3", "M1 (BLQ dropped)")):
        ax2.plot(x + 0.12 * (2 * j - 1), table[col] - table["sample"], "o", label=col)
    ax2.set_xticks(x, table.index, rotation=45, ha="right", fontsize=8)
    ax2.set(ylabel="estimate - sample value", title=f"MAP, {data.num_individuals} individuals")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pk_censored.png", dpi=100)
    print(f"wrote {out}/pk_censored.csv and {out}/pk_censored.png")


if __name__ == "__main__":
    main()
