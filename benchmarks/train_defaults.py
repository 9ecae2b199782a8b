"""Training sized to the problem (issue 19, item 6): `nlp.train`'s defaults on a small user model.

    python benchmarks/train_defaults.py [--num-simulations 100000] [--only sized,fixed] [--out FILE]

The model is what a user writes in NumPyro: a two-compartment IV bolus with log-normal noise,
five parameters (CL, V1, Q, V2, sigma; log scale) and eleven observation times. Both estimators
are trained by `nlp.train(model, key, num_simulations=...)` as a user calls it (simulation
included), on the same key:

- `sized`: no `config`, so `TrainConfig.sized` chooses the networks and the epochs (the default now);
- `fixed`: `config=TrainConfig()`, the former default (100 epochs at any size).

Fidelity (docs/fidelity.md's measures) on 200 individuals simulated from the training prior:
each estimator against the exact posteriors by importance sampling
(`nlp.diagnostics.compare_with_exact`), the median over individuals of the SD ratio
(estimator / exact) and of |z| of the estimator's mean, per parameter; and the best validation loss.

Writes `benchmarks/train_defaults_results.json`; run the two cases alone on the machine (they
are timed).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import nlme_ppl as nlp

HERE = Path(__file__).parent
TIMES = np.array([0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24.0])
DOSE = 100.0


def iv_two_compartment(design, obs=None):
    """A user's model: two-compartment IV bolus, log-normal noise, five log-scale parameters."""
    cl = jnp.exp(numpyro.sample("CL", dist.Normal(np.log(2.0), 0.5)))
    v1 = jnp.exp(numpyro.sample("V1", dist.Normal(np.log(10.0), 0.5)))
    q = jnp.exp(numpyro.sample("Q", dist.Normal(np.log(1.5), 0.5)))
    v2 = jnp.exp(numpyro.sample("V2", dist.Normal(np.log(20.0), 0.5)))
    sigma = jnp.exp(numpyro.sample("sigma", dist.Normal(np.log(0.1), 0.4)))
    k10, k12, k21 = cl / v1, q / v1, q / v2
    s = k10 + k12 + k21
    root = jnp.sqrt(s * s - 4 * k10 * k21)
    a, b = (s + root) / 2, (s - root) / 2
    t = design["times"]
    conc = DOSE / v1 * ((a - k21) / (a - b) * jnp.exp(-a * t) + (k21 - b) / (a - b) * jnp.exp(-b * t))
    numpyro.sample("obs", dist.Normal(jnp.log(conc), sigma).mask(design["mask"]).to_event(1), obs=obs)


def user_model() -> nlp.models.IndividualModel:
    return nlp.models.IndividualModel(iv_two_compartment, {"times": TIMES}, name="iv_2cmt_user")


def bench_case(name: str, model, num_simulations: int, data) -> dict:
    config = None if name == "sized" else nlp.TrainConfig()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    post = nlp.train(model, jax.random.key(0), num_simulations=num_simulations, config=config, progress=False)
    wall = time.perf_counter() - t0
    comparison = nlp.diagnostics.compare_with_exact(post, data, jax.random.key(5))
    table = comparison.table()
    h = post.history
    cfg = post.config
    return {
        "wall_seconds": round(wall, 1),
        "load_average_at_start": load,
        "simulate_seconds": round(h.simulate_seconds, 1),
        "train_seconds": round(h.train_seconds, 1),
        "epochs_run": len(h.val_loss),
        "best_epoch": int(h.best_epoch),
        "best_val_loss": round(float(min(h.val_loss)), 4),
        "config": {f: getattr(cfg, f) for f in ("summary_dim", "hidden_size", "patch_size", "flow_layers", "nn_width",
                                                  "learning_rate", "max_epochs", "patience", "batch_size")},
        "median_sd_ratio": {p: round(float(v), 3) for p, v in table["median_sd_ratio"].items()},
        "median_abs_zscore": {p: round(float(v), 3) for p, v in table["median_abs_zscore"].items()},
        "num_reliable": int(table["num_individuals"].iloc[0]),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num-simulations", type=int, default=100_000)
    p.add_argument("--num-individuals", type=int, default=200)
    p.add_argument("--only", default="sized,fixed")
    p.add_argument("--out", default=str(HERE / "train_defaults_results.json"))
    args = p.parse_args(argv)
    model = user_model()
    phi = model.prior_sample(jax.random.key(1), (args.num_individuals,))
    data = nlp.simulate_data(model, phi, jax.random.key(2))
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results.update(num_simulations=args.num_simulations, num_individuals=args.num_individuals, cpu_count=os.cpu_count())
    for name in args.only.split(","):
        results[name] = bench_case(name, model, args.num_simulations, data)
        print(name, json.dumps(results[name]), flush=True)
        out_path.write_text(json.dumps(results, indent=1))
    if "sized" in results and "fixed" in results:
        s, f = results["sized"], results["fixed"]
        print(f"time: sized {s['wall_seconds']} s, fixed {f['wall_seconds']} s ({f['wall_seconds'] / s['wall_seconds']:.1f}x); "
              f"best validation loss {s['best_val_loss']} vs {f['best_val_loss']}")
        for param in s["median_sd_ratio"]:
            print(f"  {param:6s} SD ratio {s['median_sd_ratio'][param]:.3f} vs {f['median_sd_ratio'][param]:.3f}; "
                  f"|z| {s['median_abs_zscore'][param]:.3f} vs {f['median_abs_zscore'][param]:.3f}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
