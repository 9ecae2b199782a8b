"""`nlme-ppl`: the command line, for people who do not write Python.

    nlme-ppl demo [--out DIR]
    nlme-ppl fit --model NAME --data FILE.csv [--covariance diag|full] [--fixed a,b] [--method map|nuts|vae] --out DIR
    nlme-ppl train --model NAME [--designs-from FILE.csv] [--prior NAME=MEAN,SD ...] --out FILE
    nlme-ppl report --fit DIR --out report.html [--compare DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ._cli_train import _file_source, _pair, _priors, _train  # noqa: F401 - _file_source, _pair: re-exported
from ._cli_vae import _frame_dict, fit_vae_command


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
    f.add_argument("--occasion", default=None, metavar="COLUMN",
                   help="column numbering each individual's occasions (e.g. OCC): each (ID, OCC) becomes one unit (map and nuts)")
    f.add_argument("--iov", default="", help="with --occasion: comma-separated parameters with inter-occasion variability, e.g. CL")
    f.add_argument("--method", choices=("map", "nuts", "vae"), default="map",
                   help="map: the amortized surrogate's MAP (default); nuts: its posterior; vae: the NN-NLME variational "
                   "autoencoder on the exact likelihood (tractable models; no estimator)")
    f.add_argument("--estimator", default=None, help="estimator file (default: the shipped pretrained one); its training "
                   "prior is read back from the file")
    f.add_argument("--prior", action="append", default=[], metavar="NAME=MEAN,SD",
                   help="the training prior of a parameter (log scale; repeatable), to rebuild the model the estimator was "
                   "trained with; not needed with --estimator, whose file records it (given, it must match)")
    f.add_argument("--num-draws", type=int, default=100)
    f.add_argument("--num-starts", type=int, default=None, help="random starts (default 10 for map, 4 for vae)")
    f.add_argument("--num-steps", type=int, default=2000, help="Adam steps of --method vae")
    f.add_argument("--local-steps", type=int, default=0, help="--method vae: Adam steps of per-individual refinement of q after the "
                   "encoder's (semi-amortized; default 0, NN-NLME as published)")
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
    f.add_argument("--profile", action="store_true", help="profile likelihoods of every population parameter (profile.csv, profiles.png)")
    f.add_argument("--bootstrap", type=int, default=0, metavar="R", help="R bootstrap replicates (bootstrap.csv; 0: none)")
    f.add_argument("--bootstrap-kind", choices=("nonparametric", "parametric"), default="nonparametric")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--verbose", action="store_true", help="print the wall and compile seconds of each phase (also in fit.json's timings)")

    t = sub.add_parser("train", help="train an estimator for a built-in model (the shipped recipe by default)")
    t.add_argument("--model", required=True)
    t.add_argument("--out", required=True, help="estimator file to write, e.g. est.nlp")
    t.add_argument("--num-simulations", type=int, default=None, help="default: the shipped estimator's recipe")
    t.add_argument("--max-epochs", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--loss-plot", default=None, help="PNG of the loss curves (default: next to --out)")
    t.add_argument("--designs-from", default=None, metavar="FILE.csv",
                   help="train on the designs of this NONMEM CSV (its individuals' doses, routes, sampling times, covariates, "
                   "limits), resampled (nlp.designs.like); default: the model's built-in design prior")
    t.add_argument("--time-jitter", type=float, default=0.0, help="with --designs-from: relative SD of the times (e.g. 0.1)")
    t.add_argument("--amount-jitter", type=float, default=0.0, help="with --designs-from: relative SD of the dose amounts")
    t.add_argument("--samples", default=None, metavar="LO,HI",
                   help="with --designs-from: scale each individual's number of samples by a factor in [LO, HI], e.g. 0.5,1.5")
    t.add_argument("--prior", action="append", default=[], metavar="NAME=MEAN,SD",
                   help="the training prior of a parameter, Normal(MEAN, SD) on the log scale (repeatable), e.g. CL=0,1.5")
    r = sub.add_parser("report", help="write one self-contained HTML report of a fit made by `nlme-ppl fit`")
    r.add_argument("--fit", required=True, help="the folder `nlme-ppl fit --out` wrote")
    r.add_argument("--out", required=True, help="HTML file to write, e.g. report.html")
    r.add_argument("--compare", nargs="*", default=(), help="other fit folders for the model-comparison section")
    c = sub.add_parser("compare", help="compare population models fitted by `nlme-ppl fit` to the same data (OFV, AIC, BIC, LOO)")
    c.add_argument("fits", nargs="+", help="folders `nlme-ppl fit --out` wrote; each is refitted from its fit.json settings")
    c.add_argument("--out", default=None, help="CSV of the table (default: print only)")
    c.add_argument("--no-loo", action="store_true", help="skip the Laplace PSIS-LOO columns")
    c.add_argument("--seed", type=int, default=0, help="seed of the LOO's Laplace draws")
    s = sub.add_parser("covariates", help="stepwise covariate search (forward inclusion, backward elimination) on a fit's draws")
    s.add_argument("--fit", required=True, help="the folder `nlme-ppl fit --out` wrote (its model, estimator, data and settings)")
    s.add_argument("--candidate", action="append", required=True, metavar="PARAM:COVARIATE",
                   help="a candidate relation, e.g. CL:WT (repeatable); the covariate is a column of the data")  # fmt: skip
    s.add_argument("--criterion", choices=("lrt", "bic"), default="lrt")
    s.add_argument("--alpha-forward", type=float, default=0.05)
    s.add_argument("--alpha-backward", type=float, default=0.01)
    s.add_argument("--out", required=True, help="output folder (covariates.json, steps.csv, parameters.csv)")
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


def _estimator(args, model, nlp):
    """The estimator of `nlme-ppl fit` (--estimator's file, else the shipped one) and its model."""
    if args.estimator and not args.prior:  # the file records the training prior: rebuild the model with it
        post = nlp.load_posterior(args.estimator)
        if post.model.name != model.name:
            raise ValueError(f"the estimator {args.estimator} was trained for model {post.model.name!r}, not {model.name!r}; "
                             f"pass --model {post.model.name}, or another estimator.")
        return post, post.model
    if args.estimator:
        post = nlp.load_posterior(args.estimator, model=model)
    elif args.prior:
        raise ValueError("--prior changes the training prior, and the shipped estimator was trained under the default one; "
                         "train an estimator with it (nlme-ppl train --prior ...) and pass --estimator.")
    else:
        post = nlp.pretrained(args.model)
    return post, model


def _fit(args) -> int:
    from ._timing import record

    with record() as timings:
        code = _fit_timed(args, timings)
    if getattr(args, "verbose", False) and args.method != "vae":
        print(timings.table())
    return code


def _fit_timed(args, timings) -> int:
    from ._timing import phase

    if args.method == "vae":
        return fit_vae_command(args, prior=_priors(args.prior))
    if args.num_starts is None:
        args.num_starts = 10
    if args.method == "nuts":
        _set_devices(args.num_chains)
    import jax
    import numpy as np

    import nlme_ppl as nlp

    model = nlp.models.get(args.model, prior=_priors(args.prior))
    with phase("estimator"):
        post, model = _estimator(args, model, nlp)
    iov = tuple(s.strip() for s in args.iov.split(",") if s.strip())
    if iov and not args.occasion:
        raise ValueError("--iov needs --occasion COLUMN, the column that numbers each individual's occasions (e.g. OCC).")
    if args.occasion and (args.profile or args.bootstrap):
        raise ValueError("--profile and --bootstrap do not take occasions yet; fit without them (the SEs are in parameters.csv).")
    with phase("read"):
        data = nlp.read_nonmem(args.data, occasion=args.occasion)
    fixed = tuple(s.strip() for s in args.fixed.split(",") if s.strip())
    population = nlp.populations.gaussian(model, covariance=args.covariance, fixed=fixed, occasions=iov)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    refine = "auto" if args.refine is None else args.refine
    fit = nlp.fit_map(population, post, data, key, num_draws=args.num_draws, num_starts=args.num_starts, refine=refine, fixed=args.fixed_treatment,
                      max_draws=args.max_draws)  # fmt: skip
    absolute = fit.absolute.to_dict() if fit.absolute is not None else {}
    result = {
        "model": args.model,
        "method": args.method,
        "num_individuals": len(fit.ids),
        "num_occasions": data.num_individuals if args.occasion else None,
        "population_parameters": fit.params,
        "standard_errors": fit.stderr,
        "robust_standard_errors": fit.robust_stderr,
        "correlation": _frame_dict(fit.correlation()),
        "loglik": absolute.get("loglik"),
        "loglik_mc_se": absolute.get("loglik_mc_se"),
        "ofv": absolute.get("ofv"),
        "aic": absolute.get("aic"),
        "bic": absolute.get("bic"),
        "objective_function": absolute or "not computed: the absolute scale needs a refined fit (a tractable model with --refine)",
        "log_likelihood": fit.log_likelihood,
        "log_likelihood_note": "surrogate log p(D|theta) minus sum_i log p_train(y_i) (the training prior's marginal likelihood), at the MAP",
        "settings": {
            "model": args.model, "estimator": str(Path(args.estimator).resolve()) if args.estimator else None,
            "data": str(Path(args.data).resolve()), "covariance": args.covariance, "fixed": list(fixed),
            "fixed_treatment": args.fixed_treatment, "refine": args.refine, "seed": args.seed, "num_draws": args.num_draws,
            "num_starts": args.num_starts, "max_draws": args.max_draws, "method": args.method, "occasion": args.occasion,
            "iov": list(iov),
        },  # what `nlme-ppl report` needs to redo the fit (the same key gives the same fit)
        "refined": fit.refined is not None,
        "fixed_treatment": fit.fixed_treatment,
        "raised": list(fit.raised),
        "converged": bool(fit.converged[fit.best]),
        "iterations": int(fit.iterations[fit.best]),
        "surrogate_check": fit.diagnostics_summary(),
    }
    fit.diagnostics_table().to_csv(out / "diagnostics.csv")
    table = fit.table()
    if args.profile:
        prof = nlp.profile(fit, data)
        prof.intervals().to_csv(out / "profile.csv")
        prof.plot(path=out / "profiles.png")
        result["profile_intervals"] = _frame_dict(prof.intervals())
        result["profile_seconds"] = round(prof.seconds, 2)
    if args.bootstrap:
        boot = nlp.bootstrap(fit, data, jax.random.fold_in(key, 0xB007), kind=args.bootstrap_kind, num_replicates=args.bootstrap)
        boot.estimates.to_csv(out / "bootstrap.csv")
        result["bootstrap"] = {"kind": boot.kind, "replicates": len(boot.estimates), "converged_share": boot.converged_share,
                               "seconds": round(boot.seconds, 2), "intervals": _frame_dict(boot.intervals())}  # fmt: skip
    if args.method == "nuts":
        import arviz as az

        # the refinement of the MAP fit is reused (its draws are the exact individual posteriors)
        with phase("nuts"):
            idata = nlp.fit_nuts(population, fit.refined if fit.refined is not None else post, data, key, refine=refine, fixed=args.fixed_treatment, num_draws=args.num_draws, num_chains=args.num_chains, num_warmup=args.num_warmup, num_samples=args.num_samples, init=fit, max_draws=args.max_draws)
        idata.to_netcdf(out / "posterior.nc", engine="h5netcdf")
        summary = az.summary(idata, var_names=["mean", "sd"] + (["corr"] if "corr" in idata.posterior else []), ci_prob=0.9)
        table = summary.join(table[["value", "cv_percent"]].add_prefix("map_"), how="left")
        result["posterior_mean"] = {k: float(v) for k, v in summary["mean"].items()}
        result["max_r_hat"] = float(np.nanmax(summary["r_hat"]))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["timings"] = timings.to_dict(total=timings.elapsed())
    table.to_csv(out / "parameters.csv")
    (out / "fit.json").write_text(json.dumps(result, indent=2))
    print(table.to_string(float_format=lambda x: f"{x:.4g}"))
    print(f"wrote {out}/parameters.csv, {out}/fit.json, {out}/diagnostics.csv" + (f", {out}/posterior.nc" if args.method == "nuts" else ""))
    return 0


def _report(args) -> int:
    import nlme_ppl as nlp

    path = nlp.io.report_from_dir(args.fit, path=args.out, compare=tuple(args.compare or ()))
    print(f"wrote {path}")
    return 0


def _compare(args) -> int:
    import jax

    import nlme_ppl as nlp

    fits, data = {}, None
    for d in args.fits:
        name = Path(d).name
        if name in fits:
            raise ValueError(f"two fit folders are named {name!r}; give folders with distinct names.")
        fits[name], _, data_d, _, settings = nlp.io.fit_from_dir(d)
        if data is not None and data_d.ids != data.ids:
            raise ValueError(f"{d} was fitted to {settings['data']}, not to the data of {args.fits[0]}; compare fits of the same data.")
        data = data_d
    table = nlp.compare(fits, data, jax.random.key(args.seed), loo=not args.no_loo)
    if args.out:
        table.to_csv(args.out)
    print(table.to_string(float_format=lambda x: f"{x:.4g}"))
    return 0


def _covariates(args) -> int:
    import json

    import nlme_ppl as nlp

    fit, post, data, key, settings = nlp.io.fit_from_dir(args.fit)
    candidates = []
    for item in args.candidate:
        param, sep, cov = item.partition(":")
        if not sep or not param.strip() or not cov.strip():
            raise ValueError(f"--candidate {item!r}: give PARAM:COVARIATE, e.g. CL:WT.")
        candidates.append((param.strip(), cov.strip()))
    population_options = {"covariance": settings["covariance"], "fixed": tuple(settings["fixed"])}
    fit_options = {"num_draws": settings["num_draws"], "num_starts": settings["num_starts"], "fixed": settings["fixed_treatment"]}
    if settings["refine"] is not None:
        fit_options["refine"] = bool(settings["refine"])
    result = nlp.covariate_search(nlp.models.get(settings["model"]), post, data, key,
                                  candidates=candidates, criterion=args.criterion, alpha_forward=args.alpha_forward,
                                  alpha_backward=args.alpha_backward, population_options=population_options, fit_options=fit_options)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.steps.to_csv(out / "steps.csv", index=False)
    result.final_fit.table().to_csv(out / "parameters.csv")
    summary = {"selected": [f"{p}~{c}" for p, c in result.selected], "criterion": args.criterion, "candidates": [f"{p}~{c}" for p, c in candidates],
               "population_parameters": result.final_fit.params, "fit": str(Path(args.fit).resolve())}  # fmt: skip
    (out / "covariates.json").write_text(json.dumps(summary, indent=2))
    print(result.steps.to_string(float_format=lambda x: f"{x:.4g}"))
    print(f"selected: {summary['selected'] or 'none'}; wrote {out}/covariates.json, {out}/steps.csv, {out}/parameters.csv")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from ._cache import enable_compilation_cache

    enable_compilation_cache()  # JAX_COMPILATION_CACHE_DIR, else ~/.cache/nlme_ppl; NLME_PPL_NO_CACHE=1 turns it off
    try:
        commands = {"demo": _demo, "fit": _fit, "train": _train, "report": _report, "compare": _compare, "covariates": _covariates}
        return commands[args.command](args)
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
    "report": "What to do: check that the fit folder was written by this version of `nlme-ppl fit`, or rerun that fit.",
    "compare": "What to do: check that every fit folder was written by this version of `nlme-ppl fit`, or rerun those fits.",
    "covariates": "What to do: check that the covariates are columns of the data, or try --criterion bic.",
}


if __name__ == "__main__":
    sys.exit(main())
