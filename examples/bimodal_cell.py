"""One cell, two explanations: the pretrained estimator finds both modes of p(δ, γ | y).

In `frohlich_simple` the mRNA and protein degradation rates δ and γ enter the solution
symmetrically, so a single cell's data cannot tell which is which: the posterior has two
modes, (δ, γ) and (γ, δ). This script simulates one cell with δ and γ well apart, draws from
the pretrained amortized posterior q(φ | y), and plots the data and the (δ, γ) draws.

    python examples/bimodal_cell.py --out examples_output --num-draws 4000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402

import nlme_ppl as nlp  # noqa: E402
from nlme_ppl.models.frohlich import frohlich_simple_solution  # noqa: E402

#: The simulated cell, on the log scale: fast mRNA decay, slow protein decay.
TRUTH = {"delta": -0.5, "gamma": -3.0, "k_m0_scale": 5.5, "t0": 0.5, "offset": 1.0, "sigma": -2.0}


def simulate_cell(model, key):
    """One cell's observations at the model's design, with the parameters in TRUTH."""
    cond = numpyro.handlers.condition(model.fn, data={k: np.float64(v) for k, v in TRUTH.items()})
    tr = numpyro.handlers.trace(numpyro.handlers.seed(cond, key)).get_trace(model.design)
    times = np.asarray(model.design["times"])
    return nlp.Dataset.from_arrays(times, np.asarray(tr[model.obs_site]["value"])[None], ids=["cell"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples_output", help="output directory (default: examples_output/)")
    parser.add_argument("--num-draws", type=int, default=4000, help="draws of q(φ | y) (default 4000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    post = nlp.pretrained("frohlich_simple")
    k_data, k_draws = jax.random.split(jax.random.key(args.seed))
    data = simulate_cell(post.model, k_data)
    draws = np.asarray(post.sample(data, k_draws, num_draws=args.num_draws))[0]
    names = list(post.param_names)
    d, g = draws[:, names.index("delta")], draws[:, names.index("gamma")]
    share = float(np.mean(d > g))
    print(f"truth: delta={TRUTH['delta']}, gamma={TRUTH['gamma']} (log scale)")
    print(f"{args.num_draws} draws: {share:.1%} with delta > gamma, {1 - share:.1%} with delta < gamma")
    for i, n in enumerate(names):
        print(f"  {n:>10}: median {np.median(draws[:, i]):+.3f}, 90% interval "
              f"[{np.quantile(draws[:, i], 0.05):+.3f}, {np.quantile(draws[:, i], 0.95):+.3f}], truth {TRUTH[n]:+.3f}")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    t = np.asarray(data.times)[0]
    ax = axes[0]
    ax.plot(t, np.asarray(data.values)[0], ".", ms=3, color="grey", label="observed log fluorescence")
    p = {k: float(np.exp(v)) for k, v in TRUTH.items()}
    curve = frohlich_simple_solution(t, p["delta"], p["gamma"], p["k_m0_scale"], p["t0"])
    ax.plot(t, np.log(np.asarray(curve) + p["offset"]), "k", lw=1.5, label="true mean")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("y = log(p(t) + offset) + noise")
    ax.set_title("one simulated cell")
    ax.legend(fontsize=8)

    ax = axes[1]
    ax.scatter(d, g, s=2, alpha=0.25, color="C0", rasterized=True)
    ax.plot([TRUTH["delta"]], [TRUTH["gamma"]], "r*", ms=14, label="truth (δ, γ)")
    ax.plot([TRUTH["gamma"]], [TRUTH["delta"]], "*", color="orange", ms=14, label="swapped (γ, δ)")
    lo, hi = min(d.min(), g.min()), max(d.max(), g.max())
    ax.plot([lo, hi], [lo, hi], ":", color="grey", lw=1)
    ax.set_xlabel("log δ (mRNA degradation)")
    ax.set_ylabel("log γ (protein degradation)")
    ax.set_title(f"q(δ, γ | y): {args.num_draws} draws")
    ax.legend(fontsize=8, loc="lower left")

    ax = axes[2]
    bins = np.linspace(lo, hi, 80)
    ax.hist(d, bins=bins, alpha=0.6, density=True, label="log δ")
    ax.hist(g, bins=bins, alpha=0.6, density=True, label="log γ")
    for v in (TRUTH["delta"], TRUTH["gamma"]):
        ax.axvline(v, color="k", ls="--", lw=1)
    ax.set_xlabel("log rate")
    ax.set_title(f"marginals: {share:.0%} of draws have δ > γ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "bimodal_cell.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
