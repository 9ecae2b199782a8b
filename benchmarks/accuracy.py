"""Accuracy study: coverage and error of the amortized population posterior, side by side with
exact hierarchical NUTS, and C2ST of individual posteriors against exact NUTS.

    python benchmarks/run.py --only accuracy [--quick]

- **Coverage.** `replicates` synthetic populations of `num_individuals` cells are simulated
  from the known truth `nlme_ppl.demo.DEMO_TRUTH` (offset and sigma without random effect)
  and fitted by `fit_nuts` over the shipped `frohlich_simple` estimator. For every
  population parameter we record whether the equal-tailed 90% posterior interval covers the
  truth, and the error of the posterior mean. Target: coverage 0.8–0.97 for every parameter.
- **Exact side by side.** The first `exact_replicates` data sets are also fitted by
  `fit_exact_nuts` (same population program, same data), with the same summaries.
- **C2ST.** On `c2st_cells` cells of the first data set, the estimator's individual posterior
  q(φ | y_i) against exact NUTS on the individual model (`fit_exact_individual`, symmetrised
  over the exchangeable pair, which is the posterior the estimator learns). Target ≤ 0.65.

Writes `docs/img/accuracy_intervals.png` and `docs/img/accuracy_exact.png`.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nlme_ppl as nlp
from nlme_ppl.demo import DEMO_MEAN_PRIOR, DEMO_TRUTH
from nlme_ppl.inference import map as _map

IMG = Path(__file__).parent.parent / "docs" / "img"
LEVEL = 0.9
COVERAGE_TARGET = (0.8, 0.97)
C2ST_TARGET = 0.65


def _truth(model) -> dict[str, float]:
    out = {f"mean[{p}]": DEMO_TRUTH["mean"][p] for p in model.param_names}
    out.update({f"sd[{p}]": v for p, v in DEMO_TRUTH["sd"].items()})
    return out


def _flat_posterior(idata) -> dict[str, np.ndarray]:
    """label -> flattened posterior draws of the population parameters `mean[...]`, `sd[...]`."""
    post = idata["posterior"]
    out = {}
    for var, dim in (("mean", "param"), ("sd", "sd_param")):
        da = post[var]
        for name in da[dim].values:
            out[f"{var}[{name}]"] = np.asarray(da.sel({dim: name})).reshape(-1)
    return out


def _summaries(idata, truth) -> dict[str, dict]:
    lo_q, hi_q = (1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2
    rows = {}
    for label, x in _flat_posterior(idata).items():
        lo, hi = np.quantile(x, [lo_q, hi_q])
        t = truth[label]
        rows[label] = {"truth": t, "mean": float(x.mean()), "sd": float(x.std()), "lo": float(lo), "hi": float(hi), "covered": bool(lo <= t <= hi), "error": float(x.mean() - t)}
    return rows


def _min_ess(idata) -> tuple[float, float]:
    import arviz as az

    s = az.summary(idata, var_names=["mean", "sd"])
    return float(s["ess_bulk"].min()), float(s["r_hat"].max())


def noise_oracle(model, phi, data) -> dict[str, float]:
    """What the data alone say about `sigma`, with every cell's true parameters known: the log of
    the root mean square of the realised noise, y - log(p(t; φ_i) + offset_i). Its sampling SD is
    1 / sqrt(2 n) for n observations, so an oracle's 90 % interval is that ± 1.645 SDs. A
    population posterior of `mean[sigma]` knows less than this oracle (it must also estimate the
    cells' parameters), so it should sit near the oracle, not nearer the truth."""
    from nlme_ppl.models.frohlich import frohlich_simple_solution

    P = {p: jnp.asarray(phi)[:, j] for j, p in enumerate(model.param_names)}
    e = {p: jnp.exp(P[p]) for p in ("delta", "gamma", "k_m0_scale", "t0", "offset")}
    protein = jax.vmap(frohlich_simple_solution)(data.times, e["delta"], e["gamma"], e["k_m0_scale"], e["t0"])
    residual = np.asarray(data.values - jnp.log(protein + e["offset"][:, None]))[np.asarray(data.mask)]
    estimate, sd = float(np.log(np.sqrt(np.mean(residual**2)))), float(1 / np.sqrt(2 * residual.size))
    truth = DEMO_TRUTH["mean"]["sigma"]
    return {"estimate": estimate, "sd": sd, "error": estimate - truth, "covered": bool(abs(estimate - truth) <= 1.6449 * sd)}


def replicate_data(model, pop, r: int, n: int):
    """Replicate `r` of the study: `n` cells drawn from `DEMO_TRUTH` (key 9000 + r), their
    parameters, data, and the key of the fit: `(phi, data, k_fit)`."""
    k_pop, k_obs, k_fit = jax.random.split(jax.random.key(9000 + r), 3)
    phi = nlp.simulate_population(pop, DEMO_TRUTH, k_pop, num_individuals=n)
    return phi, nlp.simulate_data(model, phi, k_obs), k_fit


def demo_population(model):
    """The study's population model: the demo's, with `offset` and `sigma` without random effect."""
    return nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)


def coverage_replicates(model, post, *, replicates: int, n: int, warm: int, num_draws: int = 100, **fit_options) -> tuple[list[dict], list]:
    """`fit_nuts` (default settings unless `fit_options` says otherwise) on `replicates` synthetic
    populations of `n` cells (`replicate_data`): per replicate, the time, ESS, R-hat, the 90 %
    interval of every population parameter against the truth, and the noise oracle of `sigma`
    (`noise_oracle`)."""
    truth = _truth(model)
    pop = demo_population(model)
    reps, datasets = [], []
    for r in range(replicates):
        phi, data, k_fit = replicate_data(model, pop, r, n)
        datasets.append(data)
        t0 = time.perf_counter()
        idata = nlp.fit_nuts(pop, post, data, k_fit, num_draws=num_draws, num_chains=2, num_warmup=warm, num_samples=warm, progress=False, diagnose=False,
                             **fit_options)  # fmt: skip
        seconds = time.perf_counter() - t0
        ess, rhat = _min_ess(idata)
        reps.append({"seconds": seconds, "min_ess_bulk": ess, "max_r_hat": rhat, "parameters": _summaries(idata, truth),
                     "fixed_treatment": idata.posterior.attrs.get("fixed_treatment"), "refined": idata.posterior.attrs.get("refined"),
                     "num_raised": idata.posterior.attrs.get("num_raised"), "sigma_oracle": noise_oracle(model, phi, data)})  # fmt: skip
        print(f"  accuracy replicate {r}: {seconds:.1f} s, covered {sum(v['covered'] for v in reps[-1]['parameters'].values())}/{len(truth)}, max R-hat {rhat:.3f}", flush=True)
    return reps, datasets


def bench_accuracy(model, post, quick):
    replicates, n, exact_replicates, cells = (4, 100, 1, 2) if quick else (20, 200, 3, 5)
    warm = 200 if quick else 500
    exact_warm = 200  # exact NUTS costs ~10x more per iteration at N = 200
    truth = _truth(model)
    pop = demo_population(model)
    reps, datasets = coverage_replicates(model, post, replicates=replicates, n=n, warm=warm)
    exact = []
    for r in range(exact_replicates):
        data = datasets[r]
        k_draws, k_map, k_fit = jax.random.split(jax.random.key(9500 + r), 3)
        draws = nlp.prepare_draws(post, data, k_draws, num_draws=100)
        fit = _map.fit_map_draws(pop, draws, data, k_map, num_starts=4)
        t0 = time.perf_counter()
        idata = nlp.fit_exact_nuts(pop, model, data, k_fit, num_chains=2, num_warmup=exact_warm, num_samples=exact_warm, init=nlp.exact_init(pop, fit, draws, data), progress=False)
        seconds = time.perf_counter() - t0
        ess, rhat = _min_ess(idata)
        exact.append({"replicate": r, "seconds": seconds, "min_ess_bulk": ess, "max_r_hat": rhat, "parameters": _summaries(idata, truth)})
        print(f"  exact replicate {r}: {seconds:.1f} s, covered {sum(v['covered'] for v in exact[-1]['parameters'].values())}/{len(truth)}, max R-hat {rhat:.3f}", flush=True)
    # C2ST of individual posteriors against exact NUTS on the individual model
    data = datasets[0]
    reference = {}
    t0 = time.perf_counter()
    for i in range(cells):
        ref = nlp.fit_exact_individual(model, data, jax.random.key(9900 + i), index=i, num_chains=2, num_warmup=500, num_samples=1000, symmetrize=True)
        reference[data.ids[i]] = ref
    t_ref = time.perf_counter() - t0
    c2st = nlp.diagnostics.c2st_individuals(post, data, reference, jax.random.key(9999))
    print(f"  C2ST: {c2st}", flush=True)
    # where q differs: its posterior SD relative to the exact one, per parameter (labels sorted)
    q = np.asarray(post.sample(data.subset(np.arange(cells)), jax.random.key(9998), num_draws=2000))
    sd_ratio = {}
    for i, ident in enumerate(reference):
        ref_c = np.asarray(model.canonicalize(jnp.asarray(reference[ident])[None]))[0]
        q_c = np.asarray(model.canonicalize(jnp.asarray(q[i])[None]))[0]
        sd_ratio[ident] = dict(zip(model.param_names, (q_c.std(0) / ref_c.std(0)).tolist()))

    labels = list(truth)
    coverage = {k: float(np.mean([rep["parameters"][k]["covered"] for rep in reps])) for k in labels}
    rmse = {k: float(np.sqrt(np.mean([rep["parameters"][k]["error"] ** 2 for rep in reps]))) for k in labels}
    bias = {k: float(np.mean([rep["parameters"][k]["error"] for rep in reps])) for k in labels}
    out = {
        "replicates": replicates,
        "num_individuals": n,
        "chains": 2,
        "warmup": warm,
        "samples": warm,
        "exact_warmup": exact_warm,
        "exact_samples": exact_warm,
        "level": LEVEL,
        "coverage_target": list(COVERAGE_TARGET),
        "coverage": coverage,
        "coverage_pooled": float(np.mean(list(coverage.values()))),
        "coverage_ok": {k: COVERAGE_TARGET[0] <= v <= COVERAGE_TARGET[1] for k, v in coverage.items()},
        "bias": bias,
        "rmse": rmse,
        "amortized_seconds_median": float(np.median([rep["seconds"] for rep in reps])),
        "amortized_max_r_hat": float(max(rep["max_r_hat"] for rep in reps)),
        "amortized_replicates": reps,
        "exact_replicates": exact,
        "c2st": c2st,
        "c2st_sd_ratio": sd_ratio,
        "c2st_reference_seconds": t_ref,
        "c2st_target": C2ST_TARGET,
    }
    _plot_intervals(out, labels)
    _plot_exact(out, labels)
    return out


def _plot_intervals(out, labels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reps = out["amortized_replicates"]
    cols = 5
    rows = -(-len(labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    for ax, label in zip(axes.ravel(), labels):
        for r, rep in enumerate(reps):
            p = rep["parameters"][label]
            color = "tab:blue" if p["covered"] else "tab:red"
            ax.plot([p["lo"], p["hi"]], [r, r], color=color, lw=2)
            ax.plot(p["mean"], r, "o", color=color, ms=3)
        ax.axvline(reps[0]["parameters"][label]["truth"], color="k", lw=1)
        ax.set_title(f"{label}: {out['coverage'][label]:.2f}", fontsize=9)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(labels):]:
        ax.axis("off")
    fig.suptitle(
        f"{int(100 * out['level'])}% posterior intervals, {out['replicates']} replicate populations of N = {out['num_individuals']} "
        "(fit_nuts over the amortized surrogate); black: truth, red: not covered; title: coverage",
        fontsize=9,
    )
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "accuracy_intervals.png", dpi=110)
    plt.close(fig)


def _plot_exact(out, labels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exact = out["exact_replicates"]
    if not exact:
        return
    fig, axes = plt.subplots(1, len(exact), figsize=(4.2 * len(exact), 0.42 * len(labels) + 1.2), squeeze=False)
    for ax, ex in zip(axes[0], exact):
        am = out["amortized_replicates"][ex["replicate"]]
        for j, label in enumerate(labels):
            t = ex["parameters"][label]["truth"]
            for off, src, color, name in ((-0.15, am, "tab:blue", "amortized"), (0.15, ex, "tab:orange", "exact")):
                p = src["parameters"][label]
                sd = 1.0 if not label.startswith("sd[") else t  # SDs relative to the truth
                ax.plot([(p["lo"] - t) / sd, (p["hi"] - t) / sd], [j + off] * 2, color=color, lw=2, label=name if j == 0 else None)
                ax.plot((p["mean"] - t) / sd, j + off, "o", color=color, ms=3)
        ax.axvline(0, color="k", lw=1)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("estimate − truth (sd[...]: relative)", fontsize=8)
        ax.set_title(f"replicate {ex['replicate']}: exact {ex['seconds']:.0f} s, amortized {am['seconds']:.0f} s", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{int(100 * out['level'])}% intervals, amortized surrogate vs exact hierarchical NUTS (same data)", fontsize=9)
    fig.tight_layout()
    fig.savefig(IMG / "accuracy_exact.png", dpi=110)
    plt.close(fig)


def compare_oracle(results: Path) -> None:
    """Per replicate of a coverage run (`--out` file), the posterior error of `mean[sigma]` beside
    that of the noise oracle on the same data (`noise_oracle`): where both miss, the data set, not
    the fit, is what leaves the interval off the truth."""
    import json

    model = nlp.models.frohlich_simple()
    saved = json.loads(results.read_text())
    pop = demo_population(model)
    rows = []
    print("replicate  posterior error (SD) covered   oracle error (SD) covered")
    for r, fit in enumerate(saved["replicate_results"]):
        phi, data, _ = replicate_data(model, pop, r, saved["num_individuals"])
        s, o = fit["parameters"]["mean[sigma]"], noise_oracle(model, phi, data)
        rows.append((s, o))
        print(f"{r:9d}  {s['error']:+.4f} ({s['sd']:.4f}) {s['covered']!s:5}      {o['error']:+.4f} ({o['sd']:.4f}) {o['covered']}")
    both = sum(not s["covered"] and not o["covered"] for s, o in rows)
    gap = max(abs(s["error"] - o["error"]) for s, o in rows)
    print(f"posterior covers {sum(s['covered'] for s, _ in rows)}/{len(rows)}, oracle {sum(o['covered'] for _, o in rows)}/{len(rows)}, "
          f"both miss {both}; largest |posterior error - oracle error| {gap:.4f}")  # fmt: skip


def main():
    """Coverage only (no exact fits, no C2ST): `python benchmarks/accuracy.py --fixed kernel --out F`;
    `python benchmarks/accuracy.py --oracle F` compares a saved run's `mean[sigma]` with the noise oracle."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--replicates", type=int, default=20)
    p.add_argument("--num-individuals", type=int, default=200)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--num-draws", type=int, default=100)
    p.add_argument("--fixed", default="auto", choices=["auto", "kernel", "likelihood"])
    p.add_argument("--refine", default="auto", choices=["auto", "off"])
    p.add_argument("--max-draws", type=int, default=1000, help="extra draws for cells with Pareto k > 0.7 (equal to --num-draws: off)")
    p.add_argument("--out", type=Path)
    p.add_argument("--oracle", type=Path, help="a saved --out file: compare its mean[sigma] with the noise oracle, and fit nothing")
    a = p.parse_args()
    if a.oracle is not None:
        return compare_oracle(a.oracle)
    if a.out is None:
        p.error("--out is required unless --oracle is given")
    model = nlp.models.frohlich_simple()
    post = nlp.pretrained("frohlich_simple")
    refine = False if a.refine == "off" else "auto"
    reps, _ = coverage_replicates(model, post, replicates=a.replicates, n=a.num_individuals, warm=a.warmup, num_draws=a.num_draws, fixed=a.fixed, refine=refine,
                                  max_draws=a.max_draws)  # fmt: skip
    labels = list(_truth(model))
    covered = {k: int(sum(r["parameters"][k]["covered"] for r in reps)) for k in labels}
    out = {"replicates": a.replicates, "num_individuals": a.num_individuals, "num_draws": a.num_draws, "max_draws": a.max_draws, "fixed": a.fixed,
           "refine": a.refine, "covered": covered, "num_raised": [r["num_raised"] for r in reps],
           "coverage_pooled": float(np.mean([covered[k] / a.replicates for k in labels])),
           "bias": {k: float(np.mean([r["parameters"][k]["error"] for r in reps])) for k in labels},
           "seconds_median": float(np.median([r["seconds"] for r in reps])), "replicate_results": reps}  # fmt: skip
    a.out.write_text(json.dumps(out, indent=1))
    for k in labels:
        print(f"{k:18s} covered {covered[k]:2d}/{a.replicates}  bias {out['bias'][k]:+.4f}")
    print(f"pooled coverage {out['coverage_pooled']:.3f}; median {out['seconds_median']:.1f} s per replicate")


if __name__ == "__main__":
    main()
