"""Benchmarks of the spine (issue 2 figures). Run with `make bench`; writes benchmarks/results.json.

    python benchmarks/run.py [--only recovery,map,nuts] [--quick]

- recovery: 1000 synthetic cells (offset, sigma without random effect), MAP; error of each
  population mean (target |error| <= 0.1) and relative error of each SD (target <= 25%)
  against the *sample* truth (mean and SD of the simulated individual parameters).
- map: fit_map wall time at N = 10,000, M = 100, one start and ten starts (compile included,
  and a second call with the compiled function cached).
- nuts: fit_nuts wall time at N = 1,000, 4 chains x (500 + 500).
"""

import os

import numpyro

numpyro.set_host_device_count(4)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import nlme_ppl as nlp  # noqa: E402
from nlme_ppl.demo import DEMO_MEAN_PRIOR, DEMO_TRUTH, sample_population, sample_truth_table  # noqa: E402

HERE = Path(__file__).parent


def _data(model, n, seed):
    phi = sample_population(model, jax.random.key(seed), n)
    return phi, nlp.simulate_data(model, phi, jax.random.key(seed + 1))


def bench_recovery(model, post, quick):
    n = 200 if quick else 1000
    phi, data = _data(model, n, 100)
    pop = nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    t0 = time.perf_counter()
    fit = nlp.fit_map(pop, post, data, jax.random.key(7), num_draws=100, num_starts=10)
    seconds = time.perf_counter() - t0
    truth = sample_truth_table(model, phi)
    rows = {}
    for label, true in truth.items():
        est = fit.params[label]
        err = est - true if label.startswith("mean[") else (est - true) / true
        target = 0.1 if label.startswith("mean[") else 0.25
        rows[label] = {"sample_truth": true, "estimate": est, "error": err, "target": target, "ok": abs(err) <= target}
    return {"num_individuals": n, "seconds": seconds, "converged": bool(fit.converged[fit.best]), "parameters": rows}


def bench_map(model, post, quick):
    n = 1000 if quick else 10_000
    _, data = _data(model, n, 200)
    pop = nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    key = jax.random.key(3)
    t0 = time.perf_counter()
    draws = nlp.prepare_draws(post, data, key, num_draws=100)
    jax.block_until_ready(draws.values)
    t_draws = time.perf_counter() - t0
    out = {"num_individuals": n, "num_draws": 100, "sampling_seconds": t_draws}
    from nlme_ppl.inference.map import fit_map_draws

    for starts in (1, 10):
        times = []
        for _ in range(2):  # first call compiles, second reuses nothing cached across closures: both reported
            t0 = time.perf_counter()
            fit = fit_map_draws(pop, draws, data, key, num_starts=starts)
            times.append(time.perf_counter() - t0)
        out[f"starts_{starts}"] = {"seconds_first": times[0], "seconds_second": times[1], "iterations": fit.iterations.tolist(), "converged": fit.converged.tolist()}
    t0 = time.perf_counter()
    nlp.fit_map(pop, post, data, key, num_draws=100, num_starts=1)
    out["fit_map_end_to_end_1_start_seconds"] = time.perf_counter() - t0
    return out


def bench_nuts(model, post, quick):
    n = 200 if quick else 1000
    _, data = _data(model, n, 300)
    pop = nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    t0 = time.perf_counter()
    idata = nlp.fit_nuts(pop, post, data, jax.random.key(4), num_draws=100, num_chains=4, num_warmup=500, num_samples=500, progress=False)
    seconds = time.perf_counter() - t0
    import arviz as az

    s = az.summary(idata, var_names=["mean", "sd"])
    return {"num_individuals": n, "chains": 4, "warmup": 500, "samples": 500, "seconds": seconds, "chain_method": idata.posterior.attrs.get("chain_method"), "min_ess_bulk": float(s["ess_bulk"].min()), "max_r_hat": float(s["r_hat"].max()), "divergences": int(idata.sample_stats["diverging"].sum())}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--only", default="recovery,map,nuts")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(HERE / "results.json"))
    args = p.parse_args()
    model = nlp.models.frohlich_simple()
    post = nlp.pretrained("frohlich_simple")
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__, "devices": jax.local_device_count()}, "quick": args.quick}
    for name in args.only.split(","):
        fn = {"recovery": bench_recovery, "map": bench_map, "nuts": bench_nuts}[name]
        t0 = time.perf_counter()
        results[name] = fn(model, post, args.quick)
        print(f"[{name}] {time.perf_counter() - t0:.1f} s")
        print(json.dumps(results[name], indent=1, default=float))
    Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
