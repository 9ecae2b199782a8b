"""N = 1,000,000 individuals of `frohlich_simple`, M = 100 (issue 19): the draws and a one-start
MAP in bounded memory, with the time of each phase and the peak resident memory.

    python benchmarks/million.py [--num-individuals 1000000] [--out benchmarks/million_results.json]

The call is `fit_map(pop, post, data, key, num_draws=100, num_starts=1, refine=False,
diagnose=False, max_draws=100)`: draws, the fit, its standard errors and pointwise terms, without
the checks and extra draws (their Pareto fits and extra sampling would add to the same arrays).
Target: within 24 GiB. About 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import jax

import nlme_ppl as nlp
from nlme_ppl.demo import DEMO_MEAN_PRIOR, DEMO_TRUTH

HERE = Path(__file__).parent


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-individuals", type=int, default=1_000_000)
    p.add_argument("--out", default=str(HERE / "million_results.json"))
    args = p.parse_args()
    n = args.num_individuals
    model, post = nlp.models.get("frohlich_simple"), nlp.pretrained("frohlich_simple")
    truth = nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    t0 = time.perf_counter()
    phi = nlp.simulate_population(truth, DEMO_TRUTH, jax.random.key(0), num_individuals=n)
    data = nlp.simulate_data(model, phi, jax.random.key(1))
    t_sim = time.perf_counter() - t0
    print(f"simulated {n} individuals in {t_sim:.1f} s; peak {_peak_gib():.1f} GiB", flush=True)
    pop = nlp.populations.gaussian(model, covariance="diag", fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    t0 = time.perf_counter()
    fit = nlp.fit_map(pop, post, data, jax.random.key(2), num_draws=100, num_starts=1, refine=False, diagnose=False, max_draws=100)
    seconds = time.perf_counter() - t0
    print(fit.timings.table(), flush=True)
    out = {
        "num_individuals": n, "num_draws": 100, "simulation_seconds": round(t_sim, 1), "fit_map_seconds": round(seconds, 1),
        "peak_resident_gib": round(_peak_gib(), 2), "target_gib": 24.0, "converged": bool(fit.converged[fit.best]),
        "iterations": int(fit.iterations[fit.best]), "params": fit.params, "timings": fit.timings.to_dict(),
        "load_average": os.getloadavg()[0], "cpu_count": os.cpu_count(),
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"fit_map {seconds:.1f} s, peak {out['peak_resident_gib']} GiB; wrote {args.out}")


if __name__ == "__main__":
    main()
