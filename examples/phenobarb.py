"""A study outside the shipped designs, from the command line: R's phenobarbital data against R `nlme`.

    python examples/phenobarb.py [--num-simulations 50000] [--estimator est.nlp] [--out examples_output]

59 neonates (examples/data/phenobarb.csv, written by examples/phenobarb_nlme.R from R's
nlme::Phenobarb) received repeated IV boluses of phenobarbital over days (2-15 doses, in ug/kg)
and had 1-6 concentrations measured (ug/L): repeated IV doses and sparse sampling, far from any
shipped estimator's design prior. The model is the built-in `pk_iv_1cmt` (NONMEM's ADVAN1, CMT 1 =
central) in the data's per-kg units, with training priors that suit neonates (CL ~ 0.007 L/h/kg,
V ~ 1 L/kg, an additive error of a few ug/L). It runs the two commands of docs/guide/designs.md:

    nlme-ppl train --model pk_iv_1cmt --designs-from examples/data/phenobarb.csv \\
        --prior CL=-5,1 --prior V=0,1 --prior sigma_add=1,1 --num-simulations 50000 --out OUT/phenobarb.nlp
    nlme-ppl fit --model pk_iv_1cmt --estimator OUT/phenobarb.nlp --data examples/data/phenobarb.csv \\
        --fixed sigma_add --method map --out OUT/phenobarb_fit

and prints the estimates beside R `nlme`'s fit of the same model (examples/data/phenobarb_nlme.csv)
and the exact maximum-likelihood estimate (examples/data/phenobarb_exact_mle.csv, by quadrature:
benchmarks/phenobarb_exact_mle.py). With `--estimator` it skips the training: the estimator
trained by the first command (50,000 simulations, seed 8) ships as
examples/data/phenobarb_pk_iv_1cmt.nlp.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nlme_ppl.cli import main as nlme_ppl

DATA = Path(__file__).parent / "data"
PRIOR = ["--prior", "CL=-5,1", "--prior", "V=0,1", "--prior", "sigma_add=1,1"]


def reference() -> dict[str, float]:
    """R `nlme`'s ML estimates on the scale of fit.json (sigma_add on the log scale)."""
    ref = pd.read_csv(DATA / "phenobarb_nlme.csv").set_index("parameter")["estimate"].to_dict()
    ref["mean[sigma_add]"] = float(np.log(ref.pop("sigma_add_sd")))
    return ref


def exact() -> dict[str, float]:
    """The exact ML estimates (2-D Gauss-Hermite quadrature, benchmarks/phenobarb_exact_mle.py)."""
    return pd.read_csv(DATA / "phenobarb_exact_mle.csv").set_index("parameter")["estimate"].to_dict()


def compare(result: dict) -> pd.DataFrame:
    """Estimates beside R's and the exact MLE; against R: the difference for means (log scale),
    the ratio for SDs."""
    ref, est, ex = reference(), result["population_parameters"], exact()
    rows = []
    for name in ("mean[CL]", "mean[V]", "sd[CL]", "sd[V]", "mean[sigma_add]"):
        row = {"parameter": name, "nlme_ppl": est[name], "se": result["standard_errors"].get(name), "R nlme": ref[name], "exact MLE": ex[name]}
        if name.startswith("sd["):
            row["ratio"] = est[name] / ref[name]
        elif name == "mean[sigma_add]":
            row["ratio"] = float(np.exp(est[name] - ref[name]))  # residual SD ratio
        else:
            row["difference"] = est[name] - ref[name]
        rows.append(row)
    rows.append({"parameter": "loglik", "nlme_ppl": result.get("loglik"), "se": result.get("loglik_mc_se"), "R nlme": ref["loglik"],
                 "exact MLE": ex["loglik"]})  # fmt: skip
    return pd.DataFrame(rows).set_index("parameter")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--num-simulations", type=int, default=50_000)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--estimator", default=None, help="a trained estimator file (skips the training)")
    p.add_argument("--out", default="examples_output")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = str(DATA / "phenobarb.csv")
    est = args.estimator or str(out / "phenobarb.nlp")
    if args.estimator is None:
        t0 = time.perf_counter()
        cmd = ["train", "--model", "pk_iv_1cmt", "--designs-from", data, *PRIOR, "--num-simulations", str(args.num_simulations), "--out", est]
        if args.max_epochs is not None:
            cmd += ["--max-epochs", str(args.max_epochs)]
        assert nlme_ppl(cmd) == 0
        print(f"training: {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    fit_dir = out / "phenobarb_fit"
    assert nlme_ppl(["fit", "--model", "pk_iv_1cmt", "--estimator", est, "--data", data, "--fixed", "sigma_add", "--method", "map", "--out", str(fit_dir)]) == 0
    print(f"fit: {time.perf_counter() - t0:.0f} s")
    table = compare(json.loads((fit_dir / "fit.json").read_text()))
    print(table.to_string(float_format=lambda x: f"{x:.4g}"))
    table.to_csv(out / "phenobarb_vs_nlme.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
