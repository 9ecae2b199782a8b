"""`nlme-ppl fit --method vae`, and the JSON helpers the fit commands share."""

from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["fit_vae_command"]


def _finite(v):
    return float(v) if v == v and abs(v) != float("inf") else None  # JSON has no NaN / inf


def fit_vae_command(args, *, prior) -> int:
    """`nlme-ppl fit --method vae`: the NN-NLME engine on the model's exact likelihood."""
    import jax

    import nlme_ppl as nlp

    if args.occasion or args.iov:
        raise ValueError("--method vae does not take occasions (--occasion, --iov) yet; fit them with --method map or nuts.")
    if args.estimator:
        raise ValueError("--method vae fits with the model's exact likelihood and its own encoder; it takes no --estimator.")
    model = nlp.models.get(args.model, prior=prior)
    data = nlp.read_nonmem(args.data)
    fixed = tuple(s.strip() for s in args.fixed.split(",") if s.strip())
    population = nlp.populations.gaussian(model, covariance=args.covariance, fixed=fixed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    num_starts = 4 if args.num_starts is None else args.num_starts
    t0 = time.perf_counter()
    fit = nlp.fit_vae(population, model, data, jax.random.key(args.seed), num_starts=num_starts, num_steps=args.num_steps,
                       local_steps=args.local_steps)
    absolute = fit.absolute.to_dict()
    ident = fit.identifiability_table()
    result = {
        "model": args.model,
        "method": "vae",
        "num_individuals": data.num_individuals,
        "population_parameters": fit.params,
        "standard_errors": fit.stderr,
        "robust_standard_errors": fit.robust_stderr,
        "correlation": _frame_dict(_correlation(fit)),
        "loglik": absolute["loglik"],
        "loglik_mc_se": absolute["loglik_mc_se"],
        "ofv": absolute["ofv"],
        "aic": absolute["aic"],
        "bic": absolute["bic"],
        "objective_function": absolute,
        "identifiability": {p: {c: (v if isinstance(v, (str, bool)) else _finite(v)) for c, v in row.items()}
                            for p, row in ident.to_dict(orient="index").items()},
        "identifiability_flags": [str(p) for p in ident.index[ident["flag"]]],
        "start_loglik": [_finite(v) for v in fit.start_loglik],
        "best_start": fit.best,
        "settings": {
            "model": args.model, "data": str(Path(args.data).resolve()), "covariance": args.covariance, "fixed": list(fixed),
            "seed": args.seed, "num_starts": num_starts, "num_steps": args.num_steps, "local_steps": args.local_steps,
            "method": "vae",
        },
    }  # fmt: skip
    table = fit.table()
    table.to_csv(out / "parameters.csv")
    ident.to_csv(out / "identifiability.csv")
    fit.ebe().to_csv(out / "ebe.csv")
    fit.plot_elbo(out / "elbo.png")
    result["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "fit.json").write_text(json.dumps(result, indent=2))
    print(table.to_string(float_format=lambda x: f"{x:.4g}"))
    print(f"loglik {fit.loglik:.3f} (MC SE {fit.absolute.loglik_mc_se:.2f}); identifiability flags: {result['identifiability_flags'] or 'none'}")
    print(f"wrote {out}/parameters.csv, {out}/fit.json, {out}/identifiability.csv, {out}/ebe.csv, {out}/elbo.png")
    return 0


def _correlation(fit):
    from .inference._uncertainty import correlation_frame

    return correlation_frame(fit.covariance, list(fit.params))


def _frame_dict(frame) -> dict:
    return {k: {c: _finite(v) for c, v in row.items()} for k, row in frame.to_dict(orient="index").items()}
