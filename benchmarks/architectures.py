"""Summary networks compared on the same simulations and the same budget (issue 15, item 2).

    python benchmarks/architectures.py [--num-simulations 40000] [--max-epochs 20] [--out FILE]
    python benchmarks/architectures.py --model pk_oral_1cmt --num-simulations 30000 --max-epochs 12

A shipped recipe (`PRETRAINED_CONFIGS`) with the summary network swapped and a reduced budget
(the same simulations, split and seed for each network). Per network: the wall time of
training, the best validation loss (mean -log q(phi | y) of held-out simulations: a proper
score, lower is better), and the fidelity of the raw estimator: per parameter the median SD
ratio and the mean z-score against the refined posterior of the shipped estimator (`nlp.refine`,
whose posteriors match exact NUTS: docs/fidelity.md). `frohlich_simple` (the default) is
measured on 30 cells of each regime of benchmarks/fidelity.py (the demo's population and the
low-noise one), `pk_oral_1cmt` on the 12 theophylline subjects.

Writes `benchmarks/architectures_results.json` (`architectures_results_pk_oral_1cmt.json`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from fidelity import LOW_NOISE_SIGMA, _canonical, _frohlich_cells, _theophylline

import nlme_ppl as nlp
from nlme_ppl.estimators import PRETRAINED_CONFIGS

HERE = Path(__file__).parent
#: per model and network: the fields of the shipped recipe it sets (all of the network's, so that a
#: later change of the recipe does not change what is compared); every run trains on the fixed set
_FIXED = {"summary_depth": 2, "online": False}
NETWORKS = {
    "frohlich_simple": {"deepset": {"hidden_size": 128, "patch_size": 4}, "gru": {"hidden_size": 128, "patch_size": 4},
                        "attention": {"hidden_size": 64, "patch_size": 6}},
    "pk_oral_1cmt": {"gru": {"hidden_size": 96, "patch_size": 1}, "deepset": {"hidden_size": 128, "patch_size": 1},
                     "attention": {"hidden_size": 64, "patch_size": 1}},
}  # fmt: skip
NUM_CELLS = 30
NUM_DRAWS = 1000


def _regimes(name: str) -> dict:
    if name == "frohlich_simple":
        return {"demo": _frohlich_cells(NUM_CELLS, 10), "low_noise": _frohlich_cells(NUM_CELLS, 20, sigma=LOW_NOISE_SIGMA)}
    return {"theophylline": _theophylline(0, 0)}


def _reference(name: str, data) -> np.ndarray:
    post = nlp.pretrained(name)
    refined = nlp.refine(post, data, jax.random.key(2))
    return _canonical(post.model, refined.sample(data, jax.random.key(3), num_draws=NUM_DRAWS))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-simulations", type=int, default=40_000)
    ap.add_argument("--max-epochs", type=int, default=20)
    ap.add_argument("--model", default="frohlich_simple", choices=sorted(NETWORKS))
    ap.add_argument("--only", default=None, help="comma-separated networks (default: all of the model's)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    networks = NETWORKS[args.model]
    out = args.out or str(HERE / ("architectures_results.json" if args.model == "frohlich_simple" else f"architectures_results_{args.model}.json"))
    model = nlp.models.get(args.model)
    _, base, seed = PRETRAINED_CONFIGS[args.model]
    sims = nlp.simulate(model, jax.random.key(seed), num_simulations=args.num_simulations, progress=False)
    regimes = _regimes(args.model)
    refs = {k: _reference(args.model, d) for k, d in regimes.items()}
    results = {"model": args.model, "num_simulations": args.num_simulations, "max_epochs": args.max_epochs, "networks": {}}
    for name in (args.only or ",".join(networks)).split(","):
        config = dataclasses.replace(base, summary=name, max_epochs=args.max_epochs, **_FIXED, **networks[name])
        t0 = time.perf_counter()
        post = nlp.train(model, jax.random.key(seed), simulations=sims, config=config, progress=False)
        wall = time.perf_counter() - t0
        row = {"train_seconds": wall, "best_val_loss": float(post.history.best_val_loss), "epochs": post.history.epochs,
               "num_parameters": int(sum(x.size for x in jax.tree.leaves(post.summary) if hasattr(x, "size")))}  # fmt: skip
        for regime, data in regimes.items():
            draws = _canonical(model, post.sample(data, jax.random.key(3), num_draws=NUM_DRAWS))
            ref = refs[regime]
            ratio = np.median(draws.std(1) / ref.std(1), axis=0)
            z = np.mean((draws.mean(1) - ref.mean(1)) / ref.std(1), axis=0)
            row[regime] = {p: {"median_sd_ratio": float(ratio[j]), "mean_z": float(z[j])} for j, p in enumerate(model.param_names)}
        results["networks"][name] = row
        worst = {r: max(v["median_sd_ratio"] for v in row[r].values()) for r in regimes}
        print(f"{name}: {wall:.0f} s, best val loss {row['best_val_loss']:.3f}, worst median SD ratio "
              + ", ".join(f"{r} {v:.2f}" for r, v in worst.items()), flush=True)  # fmt: skip
        Path(out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
