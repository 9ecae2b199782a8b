"""Seconds as the user feels them (issue 19): the CLI from a new process, and `fit_map` at
N = 10,000 called twice in one process, each with the wall and compile seconds of its phases.

    python benchmarks/speed.py [--quick] [--out benchmarks/speed_results.json]

- cli: `nlme-ppl fit --model pk_oral_1cmt` on the shipped Theophylline CSV (MAP, 10 starts),
  timed as a subprocess: with an empty persistent compilation cache, then again with the cache
  it filled (warm), then with the cache off (`NLME_PPL_NO_CACHE=1`). Targets 15 s and 5 s.
- fit_map: `fit_map(pop, post, data, key, num_draws=100, num_starts=1, refine=False)` on
  `frohlich_simple` (diagonal, every parameter random) at N = 10,000, first and second call in
  one process (target: second call <= 5 s), and the same call with the default refinement
  (target: within 10x of the unrefined one).

Growth with N, the surrogate kernel and the scipy comparison are in `benchmarks/run.py`
(P5, P7, P1). Every figure is printed with the machine's load average at its start: on a
shared machine the times are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
CLI = [sys.executable, "-m", "nlme_ppl.cli"]


def _cli_run(cache_dir: str | None, out: str) -> dict:
    env = {**os.environ}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if cache_dir is None:
        env["NLME_PPL_NO_CACHE"] = "1"
    else:
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        env.pop("NLME_PPL_NO_CACHE", None)
    args = ["fit", "--model", "pk_oral_1cmt", "--data", str(ROOT / "examples/data/theophylline.csv"), "--fixed", "sigma_add", "--out", out]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(CLI + args, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    timings = json.loads((Path(out) / "fit.json").read_text())["timings"]
    return {"wall_seconds": round(wall, 2), "load_average_at_start": load, "in_process_seconds": timings["total_seconds"], "timings": timings}


def bench_cli() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        out = {"cold_empty_cache": _cli_run(cache, str(Path(tmp) / "a")), "warm_cache": _cli_run(cache, str(Path(tmp) / "b"))}
        out["cache_off"] = _cli_run(None, str(Path(tmp) / "c"))
    out["targets"] = {"cold_empty_cache": 15.0, "warm_cache": 5.0}
    for name, row in out.items():
        if name != "targets":
            print(f"  cli {name}: {row['wall_seconds']:.1f} s wall (load {row['load_average_at_start']:.1f})", flush=True)
    return out


def bench_fit_map(n: int, save=None, *, refined: bool = True) -> dict:
    import jax

    import nlme_ppl as nlp
    from nlme_ppl.demo import DEMO_MEAN_PRIOR, DEMO_TRUTH

    model, post = nlp.models.get("frohlich_simple"), nlp.pretrained("frohlich_simple")
    truth_pop = nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    phi = nlp.simulate_population(truth_pop, DEMO_TRUTH, jax.random.key(0), num_individuals=n)
    data = nlp.simulate_data(model, phi, jax.random.key(1))
    pop = nlp.populations.gaussian(model, covariance="diag", mean_prior=DEMO_MEAN_PRIOR)
    out = {"num_individuals": n}
    runs = (("unrefined", False, (0, 1)), ("refined", "auto", (2, 3)))
    for name, refine, keys in runs if refined else runs[:1]:
        for call, k in enumerate(keys):
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            fit = nlp.fit_map(pop, post, data, jax.random.key(k), num_draws=100, num_starts=1, refine=refine)
            wall = time.perf_counter() - t0
            label = f"{name}_call_{call + 1}"
            out[label] = {"seconds": round(wall, 2), "load_average_at_start": load, "raised": len(fit.raised), "timings": fit.timings.to_dict()}
            print(f"  fit_map N={n} {label}: {wall:.1f} s (load {load:.1f})\n{fit.timings.table()}", flush=True)
            if save is not None:
                save(out)
    if refined:
        # the same call, second in the process, with and without refinement (another key each time)
        out["refined_over_unrefined"] = out["refined_call_2"]["seconds"] / out["unrefined_call_2"]["seconds"]
    out["targets"] = {"unrefined_call_2": 5.0, "refined_over_unrefined": 10.0}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fit_map at N = 1,000 instead of 10,000")
    p.add_argument("--only", default="cli,fit_map")
    p.add_argument("--no-refined", action="store_true", help="skip the refined fit_map call (minutes at N = 10,000)")
    p.add_argument("--out", default=str(HERE / "speed_results.json"))
    args = p.parse_args()
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update({"cpu_count": os.cpu_count(), "quick": args.quick})
    only = set(args.only.split(","))
    if "cli" in only:
        results["cli"] = bench_cli()
        path.write_text(json.dumps(results, indent=2))
    if "fit_map" in only:

        def save(part):  # after every call: the refined one takes minutes
            results["fit_map"] = part
            path.write_text(json.dumps(results, indent=2))

        results["fit_map"] = bench_fit_map(1000 if args.quick else 10_000, save, refined=not args.no_refined)
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
