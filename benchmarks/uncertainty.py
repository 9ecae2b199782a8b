"""Issue 16's timing targets, as a user calls the public functions (one process, cold then warm):

- profiles of all 10 population parameters of `frohlich_simple` (offset and sigma without random
  effect) at N = 1,000, after the fit (target ≤ 30 s);
- 200 bootstrap refits at N = 200 (target ≤ 5 minutes), nonparametric and parametric.

    python benchmarks/uncertainty.py [--out benchmarks/uncertainty_results.json] [--replicates 200]

Prints each time and the ratio to its target, and writes them to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax

import nlme_ppl as nlp
from nlme_ppl.demo import DEMO_MEAN_PRIOR, DEMO_TRUTH


def population_fit(n: int, seed: int):
    model = nlp.models.frohlich_simple()
    post = nlp.pretrained("frohlich_simple")
    population = nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    k_pop, k_data, k_fit = jax.random.split(jax.random.key(seed), 3)
    data = nlp.simulate_data(model, nlp.simulate_population(population, DEMO_TRUTH, k_pop, num_individuals=n), k_data)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nlp.diagnostics.SurrogateWarning)
        fit = nlp.fit_map(population, post, data, k_fit)
    return fit, data, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(Path(__file__).with_name("uncertainty_results.json")))
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--skip-parametric", action="store_true")
    args = p.parse_args(argv)
    results = {}

    fit, data, t_fit = population_fit(1000, 0)
    t0 = time.perf_counter()
    prof = nlp.profile(fit, data)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    prof = nlp.profile(fit, data)
    warm = time.perf_counter() - t0
    results["profile_N1000"] = {"num_params": len(prof.profiles), "fit_s": round(t_fit, 1), "cold_s": round(cold, 2), "warm_s": round(warm, 2),
                                "target_s": 30, "cold_over_target": round(cold / 30, 2), "warm_over_target": round(warm / 30, 2),
                                "all_converged": bool(all(p["converged"].all() for p in prof.profiles.values()))}  # fmt: skip
    print("profiles, N=1000:", results["profile_N1000"], flush=True)
    print(prof.intervals().round(3).to_string(), flush=True)

    fit, data, t_fit = population_fit(200, 1)
    for kind in ("nonparametric",) + (() if args.skip_parametric else ("parametric",)):
        t0 = time.perf_counter()
        boot = nlp.bootstrap(fit, data, jax.random.key(2), kind=kind, num_replicates=args.replicates)
        total = time.perf_counter() - t0
        results[f"bootstrap_{kind}_N200"] = {"replicates": args.replicates, "seconds": round(total, 1), "target_s": 300,
                                             "over_target": round(total / 300, 2), "converged_share": boot.converged_share}  # fmt: skip
        print(f"bootstrap {kind}, N=200:", results[f"bootstrap_{kind}_N200"], flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
