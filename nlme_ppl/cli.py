"""`nlme-ppl`: the command line, for people who do not write Python.

    nlme-ppl demo [--out DIR]
    nlme-ppl fit --model NAME --data FILE.csv [--covariance diag|full] [--fixed a,b] [--method map|nuts] --out DIR
    nlme-ppl train --model NAME --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nlme-ppl", description="Amortized NLME inference (nlme_ppl).")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="fit a synthetic population of 500 cells with the shipped estimator")
    d.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    d.add_argument("--num-individuals", type=int, default=500)
    d.add_argument("--num-warmup", type=int, default=500)
    d.add_argument("--num-samples", type=int, default=500)
    d.add_argument("--num-chains", type=int, default=4)
    d.add_argument("--seed", type=int, default=0)

    f = sub.add_parser("fit", help="fit a population model to a NONMEM-format CSV (or a plain long CSV: ID, TIME, DV)")
    f.add_argument("--model", required=True, help="built-in model name, e.g. frohlich_simple")
    f.add_argument("--data", required=True, help="NONMEM-format CSV (ID, TIME, DV, AMT, EVID, MDV, CMT, ...) or a CSV with columns ID, TIME, DV")
    f.add_argument("--covariance", choices=("diag", "full"), default="diag")
    f.add_argument("--fixed", default="", help="comma-separated parameters without random effect, e.g. offset,sigma")
    f.add_argument("--method", choices=("map", "nuts"), default="map")
    f.add_argument("--estimator", default=None, help="estimator file (default: the shipped pretrained one)")
    f.add_argument("--num-draws", type=int, default=100)
    f.add_argument("--num-starts", type=int, default=10)
    f.add_argument("--num-chains", type=int, default=4)
    f.add_argument("--num-warmup", type=int, default=500)
    f.add_argument("--num-samples", type=int, default=500)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument(
        "--refine", action=argparse.BooleanOptionalAction, default=None,
        help="refine the estimator into the exact individual posteriors (default: on where the model's likelihood is tractable)",
    )  # fmt: skip
    f.add_argument(
        "--max-draws", type=int, default=1000,
        help="draws per individual, in all, for individuals whose importance weights at the fit have Pareto k > 0.7 "
        "(the fit is redone with them; default 1000; equal to --num-draws: off)",
    )
    f.add_argument(
        "--fixed-treatment", choices=["auto", "kernel", "likelihood"], default="auto",
        help="how parameters without random effect enter the surrogate: 'likelihood' (an expansion of the exact "
        "likelihood; the default on refined draws), 'kernel' (a Gaussian kernel; any model)",
    )  # fmt: skip
    f.add_argument("--out", required=True, help="output folder")

    t = sub.add_parser("train", help="train an estimator for a built-in model (the shipped recipe by default)")
    t.add_argument("--model", required=True)
    t.add_argument("--out", required=True, help="estimator file to write, e.g. est.nlp")
    t.add_argument("--num-simulations", type=int, default=None, help="default: the shipped estimator's recipe")
    t.add_argument("--max-epochs", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--loss-plot", default=None, help="PNG of the loss curves (default: next to --out)")
    return p


def _set_devices(num_chains: int) -> None:
    # Must run before JAX starts its CPU backend: one host device per chain, for parallel chains.
    import numpyro

    numpyro.set_host_device_count(max(1, min(num_chains, os.cpu_count() or 1, 8)) if num_chains > 1 else 1)


def _demo(args) -> int:
    _set_devices(args.num_chains)
    from .demo import run_demo

    run_demo(args.out, num_individuals=args.num_individuals, num_chains=args.num_chains, num_warmup=args.num_warmup, num_samples=args.num_samples, seed=args.seed)
    return 0


def _fit(args) -> int:
    if args.method == "nuts":
        _set_devices(args.num_chains)
    import jax
    import numpy as np

    import nlme_ppl as nlp

    model = nlp.models.get(args.model)
    post = nlp.load_posterior(args.estimator, model=model) if args.estimator else nlp.pretrained(args.model)
    data = nlp.read_nonmem(args.data)
    fixed = tuple(s.strip() for s in args.fixed.split(",") if s.strip())
    population = nlp.populations.gaussian(model, covariance=args.covariance, fixed=fixed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    refine = "auto" if args.refine is None else args.refine
    fit = nlp.fit_map(population, post, data, key, num_draws=args.num_draws, num_starts=args.num_starts, refine=refine, fixed=args.fixed_treatment,
                      max_draws=args.max_draws)  # fmt: skip
    result = {
        "model": args.model,
        "method": args.method,
        "num_individuals": data.num_individuals,
        "population_parameters": fit.params,
        "standard_errors": fit.stderr,
        "log_likelihood": fit.log_likelihood,
        "log_likelihood_note": "surrogate log p(D|theta) minus sum_i log p_train(y_i) (the training prior's marginal likelihood), at the MAP",
        "refined": fit.refined is not None,
        "fixed_treatment": fit.fixed_treatment,
        "raised": list(fit.raised),
        "converged": bool(fit.converged[fit.best]),
        "iterations": int(fit.iterations[fit.best]),
        "surrogate_check": fit.diagnostics_summary(),
    }
    fit.diagnostics_table().to_csv(out / "diagnostics.csv")
    table = fit.table()
    if args.method == "nuts":
        import arviz as az

        # the refinement of the MAP fit is reused (its draws are the exact individual posteriors)
        idata = nlp.fit_nuts(population, fit.refined if fit.refined is not None else post, data, key, refine=refine, fixed=args.fixed_treatment, num_draws=args.num_draws, num_chains=args.num_chains, num_warmup=args.num_warmup, num_samples=args.num_samples, init=fit, max_draws=args.max_draws)
        idata.to_netcdf(out / "posterior.nc", engine="h5netcdf")
        summary = az.summary(idata, var_names=["mean", "sd"] + (["corr"] if "corr" in idata.posterior else []), ci_prob=0.9)
        table = summary.join(table[["value", "cv_percent"]].add_prefix("map_"), how="left")
        result["posterior_mean"] = {k: float(v) for k, v in summary["mean"].items()}
        result["max_r_hat"] = float(np.nanmax(summary["r_hat"]))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    table.to_csv(out / "parameters.csv")
    (out / "fit.json").write_text(json.dumps(result, indent=2))
    print(table.to_string(float_format=lambda x: f"{x:.4g}"))
    print(f"wrote {out}/parameters.csv, {out}/fit.json, {out}/diagnostics.csv" + (f", {out}/posterior.nc" if args.method == "nuts" else ""))
    return 0


def _train(args) -> int:
    import jax

    import nlme_ppl as nlp
    from nlme_ppl.estimators import PRETRAINED_CONFIGS, TrainConfig

    model = nlp.models.get(args.model)
    num_sims, config, seed = PRETRAINED_CONFIGS.get(args.model, (100_000, TrainConfig(), 0))
    if args.max_epochs is not None:
        import dataclasses

        config = dataclasses.replace(config, max_epochs=args.max_epochs)
    num_sims = args.num_simulations or num_sims
    seed = seed if args.seed is None else args.seed
    out = Path(args.out)
    loss_plot = args.loss_plot or out.with_suffix(".loss.png")
    t0 = time.perf_counter()
    post = nlp.train(model, jax.random.key(seed), num_simulations=num_sims, config=config, loss_plot=loss_plot)
    post.save(out)
    print(f"trained {args.model} on {num_sims} simulations (seed {seed}) in {time.perf_counter() - t0:.0f} s; wrote {out} and {loss_plot}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"demo": _demo, "fit": _fit, "train": _train}[args.command](args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"nlme-ppl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, FloatingPointError) as e:  # a fit or a training run that went wrong numerically
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"nlme-ppl {args.command}: {type(e).__name__}: {message} {_WHAT_TO_DO[args.command]}", file=sys.stderr)
        return 1


#: What to try when a command fails with a RuntimeError or FloatingPointError.
_WHAT_TO_DO = {
    "fit": "What to do: check that the data's units and times suit the model, give the parameters without a "
    "random effect with --fixed, or try more --num-starts and --num-draws.",
    "train": "What to do: check the model's simulator and training prior, or try another --seed.",
    "demo": "What to do: rerun with another --seed, and report it if it fails again.",
}


if __name__ == "__main__":
    sys.exit(main())
