"""Issue 16 item 4: coverage of the profile, bootstrap, Wald and NUTS intervals, side by side, on
synthetic replicates of `pk_oral_1cmt`; and how many draws a profile needs.

    python benchmarks/coverage.py [--replicates 20] [--num-individuals 40] [--only coverage|draws]

- **Coverage.** `replicates` populations of `num_individuals` subjects are simulated from a
  Theophylline-like truth (`TRUTH`: log-normal ka, CL, V; additive error without random
  effect) at designs from the model's training design prior (1–3 oral doses, 6–16 samples).
  Each is fitted once with `fit_map` over the shipped estimator (refined, the default), and
  four 90% intervals are taken per population parameter: the likelihood-ratio profile
  (`nlp.profile`), the nonparametric bootstrap percentile interval (`nlp.bootstrap`, 200
  replicates), the Wald interval (`fit.table(level=0.9)`), and the equal-tailed NUTS credible
  interval (`nlp.fit_nuts`, 2 chains × (500 + 500)). Each coverage is given with its binomial
  SE, sqrt(p (1 − p) / R). Targets (profile): every parameter ≥ 15/20, pooled 0.85–0.95.
- **Draws.** On the shipped Theophylline data, 90% profile intervals at M = 25 … 1000 draws
  per individual, unrefined and refined, against the refined fit at M = 2000.

Per-replicate results are appended to `benchmarks/coverage_pk_results.json` as they come, so a
stopped run resumes where it was. Writes `docs/coverage.md` and `docs/img/coverage_pk_intervals.png`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

import nlme_ppl as nlp

HERE = Path(__file__).parent
OUT = HERE / "coverage_pk_results.json"
DOCS = HERE.parent / "docs" / "coverage.md"
IMG = HERE.parent / "docs" / "img" / "coverage_pk_intervals.png"
LEVEL = 0.9
METHODS = ("profile", "bootstrap", "wald", "nuts")
# Theophylline-like (the shipped fit's estimates, rounded), log scale; sigma_add = log a.
TRUTH = {"mean": {"ka": 0.45, "CL": 1.0, "V": 3.45, "sigma_add": -0.35}, "sd": {"ka": 0.6, "CL": 0.25, "V": 0.15}}


def _labels() -> dict[str, float]:
    out = {f"mean[{p}]": v for p, v in TRUTH["mean"].items()}
    out.update({f"sd[{p}]": v for p, v in TRUTH["sd"].items()})
    return out


def _population(model):
    return nlp.populations.gaussian(model, fixed=("sigma_add",))


def _nuts_intervals(idata) -> dict[str, tuple[float, float]]:
    post, out = idata["posterior"], {}
    for var, dim in (("mean", "param"), ("sd", "sd_param")):
        for name in post[var][dim].values:
            x = np.asarray(post[var].sel({dim: name})).reshape(-1)
            out[f"{var}[{name}]"] = tuple(float(q) for q in np.quantile(x, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
    return out


def one_replicate(r: int, n: int) -> dict:
    model, post = nlp.models.pk_oral_1cmt(), nlp.pretrained("pk_oral_1cmt")
    population = _population(model)
    k_pop, k_data, k_fit, k_boot, k_nuts = jax.random.split(jax.random.key(1000 + r), 5)
    phi = nlp.simulate_population(population, TRUTH, k_pop, num_individuals=n)
    data = nlp.simulate_data(model, phi, k_data)
    times, out = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nlp.diagnostics.SurrogateWarning)
        t0 = time.perf_counter()
        fit = nlp.fit_map(population, post, data, k_fit)
        times["fit"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        prof = nlp.profile(fit, data, levels=(LEVEL,)).intervals()
        times["profile"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        boot = nlp.bootstrap(fit, data, k_boot, num_replicates=200)
        bint = boot.intervals(levels=(LEVEL,))
        times["bootstrap"] = time.perf_counter() - t0
        wald = fit.table(level=LEVEL)
        t0 = time.perf_counter()
        idata = nlp.fit_nuts(population, post, data, k_nuts, num_chains=2, num_warmup=500, num_samples=500, progress=False,
                             chain_method="sequential", posterior_predictive=False)  # fmt: skip
        times["nuts"] = time.perf_counter() - t0
    nuts = _nuts_intervals(idata)
    pct = round(100 * LEVEL)
    for label in _labels():
        out[label] = {
            "estimate": float(wald.loc[label, "estimate"]),
            "profile": [float(prof.loc[label, f"lower_{pct}"]), float(prof.loc[label, f"upper_{pct}"])],
            "bootstrap": [float(bint.loc[label, f"lower_{pct}"]), float(bint.loc[label, f"upper_{pct}"])],
            "wald": [float(wald.loc[label, "ci_lower"]), float(wald.loc[label, "ci_upper"])],
            "nuts": list(nuts[label]),
        }
    import arviz as az

    rhat = float(az.summary(idata, var_names=["mean", "sd"])["r_hat"].max())
    return {"replicate": r, "intervals": out, "seconds": {k: round(v, 2) for k, v in times.items()},
            "bootstrap_converged_share": boot.converged_share, "max_pareto_k": float(np.max(fit.importance.pareto_k)) if fit.importance is not None else None,
            "rhat_max": rhat}  # fmt: skip


def summarise(reps: list[dict]) -> dict:
    truth = _labels()
    R = len(reps)
    table = {}
    for method in METHODS:
        cov = {}
        for label, t in truth.items():
            hits = [rep["intervals"][label][method][0] <= t <= rep["intervals"][label][method][1] for rep in reps]
            width = [rep["intervals"][label][method][1] - rep["intervals"][label][method][0] for rep in reps]
            cov[label] = {"covered": int(sum(hits)), "coverage": sum(hits) / R, "se": float(np.sqrt(max(sum(hits) / R * (1 - sum(hits) / R), 1e-12) / R)),
                          "median_width": float(np.median(width))}  # fmt: skip
        pooled = sum(c["covered"] for c in cov.values()) / (R * len(truth))
        table[method] = {"by_parameter": cov, "pooled": pooled, "pooled_se": float(np.sqrt(pooled * (1 - pooled) / (R * len(truth))))}
    prof = table["profile"]
    table["targets"] = {
        "profile_every_parameter_ge_15_of_20": bool(all(c["covered"] >= 0.75 * R for c in prof["by_parameter"].values())),
        "profile_pooled_in_0.85_0.95": bool(0.85 <= prof["pooled"] <= 0.95),
    }
    return table


def plot(reps: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = _labels()
    fig, axes = plt.subplots(1, len(truth), figsize=(2.3 * len(truth), 4.2), sharey=True)
    for ax, (label, t) in zip(axes, truth.items()):
        for m, method in enumerate(METHODS):
            for i, rep in enumerate(reps):
                lo, hi = rep["intervals"][label][method]
                y = i + (m - 1.5) * 0.2
                ax.plot([lo, hi], [y, y], color=f"C{m}", lw=1.2, label=method if i == 0 else None)
        ax.axvline(t, color="k", lw=0.8)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("replicate")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"90% intervals on {len(reps)} synthetic pk_oral_1cmt populations (truth: black line)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_markdown(results: dict, path: Path = DOCS) -> None:
    s, reps = results["summary"], results["replicates"]
    R, n = len(reps), results["num_individuals"]
    secs = {k: float(np.median([r["seconds"][k] for r in reps])) for k in reps[0]["seconds"]}
    lines = [
        "# Coverage of the interval methods",
        "",
        "Written by `python benchmarks/coverage.py` (issue 16 item 4; `benchmarks/coverage_pk_results.json`).",
        "",
        f"{R} synthetic populations of {n} subjects from `pk_oral_1cmt`, simulated at a Theophylline-like truth (log-normal",
        "ka, CL and V; an additive error without random effect) and at designs from the model's training design prior",
        "(1–3 oral doses, 6–16 samples). Each is fitted once by `fit_map` over the shipped estimator (refined, the",
        "default), and four 90% intervals are taken per population parameter:",
        "",
        "- **profile**: the likelihood-ratio interval of `nlp.profile` (on the fit's draws);",
        "- **bootstrap**: the percentile interval of `nlp.bootstrap`, nonparametric, 200 replicates;",
        "- **Wald**: estimate ± 1.645 SE from the Hessian (`fit.table(level=0.9)`);",
        "- **NUTS**: the equal-tailed credible interval of `nlp.fit_nuts` (2 chains × (500 + 500), the population",
        "  program's weak priors).",
        "",
        f"Each cell is covered/{R}, the coverage and its binomial SE sqrt(p (1 − p) / {R}). The nominal value is 0.90.",
        "",
        "| parameter | truth | " + " | ".join(METHODS) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for label, t in results["truth"].items():
        cells = []
        for m in METHODS:
            c = s[m]["by_parameter"][label]
            cells.append(f"{c['covered']}/{R} ({c['coverage']:.2f} ± {c['se']:.2f})")
        lines.append(f"| {label} | {t:g} | " + " | ".join(cells) + " |")
    lines.append("| **pooled** | | " + " | ".join(f"**{s[m]['pooled']:.3f} ± {s[m]['pooled_se']:.3f}**" for m in METHODS) + " |")
    lines += [
        "",
        "Median width of the 90% intervals:",
        "",
        "| parameter | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for label in results["truth"]:
        lines.append(f"| {label} | " + " | ".join(f"{s[m]['by_parameter'][label]['median_width']:.3f}" for m in METHODS) + " |")
    t = s["targets"]
    lines += [
        "",
        "Targets (profile intervals): every parameter covered in at least 15 of 20 replicates: "
        + ("**met**" if t["profile_every_parameter_ge_15_of_20"] else "**missed**")
        + f"; pooled coverage within 0.85–0.95: {s['profile']['pooled']:.3f}, " + ("**met**." if t["profile_pooled_in_0.85_0.95"] else "**missed**."),
        "",
        "Median seconds per replicate: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()) + " (2-core CPU, one process).",
        "",
        "![intervals](img/coverage_pk_intervals.png)",
        "",
    ]
    if "draws" in results:
        lines += [
            "## How many draws a profile needs",
            "",
            "Profiles are evaluated on the fit's own draws, so they are smooth at any number of draws M; M sets how",
            "close they are to the exact profile. On the shipped Theophylline data, the 90% profile intervals at M draws",
            f"per individual are compared with those of the {results['draws']['reference']} fit: the largest endpoint",
            "error over the seven parameters, as a fraction of the reference interval's half-width.",
            "",
            "| refined | M | worst endpoint error / half-width | worst parameter | median |",
            "|---|---|---|---|---|",
        ]
        for row in results["draws"]["rows"]:
            lines.append(f"| {'yes' if row['refine'] else 'no'} | {row['num_draws']} | {row['max_endpoint_error_over_halfwidth']:.3f} | "
                         f"{row['worst_parameter']} | {row['median']:.3f} |")  # fmt: skip
        lines.append("")
    path.write_text("\n".join(lines))


def draws_study() -> dict:
    """90% profile intervals on Theophylline by number of draws, against the refined M = 2000 fit."""
    model, post = nlp.models.pk_oral_1cmt(), nlp.pretrained("pk_oral_1cmt")
    data = nlp.read_nonmem(HERE.parent / "examples" / "data" / "theophylline.csv")
    population = _population(model)
    pct = round(100 * LEVEL)

    def intervals(m: int, refine: bool):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nlp.diagnostics.SurrogateWarning)
            fit = nlp.fit_map(population, post, data, jax.random.key(0), num_draws=m, refine=refine, max_draws=max(m, 1000))
            prof = nlp.profile(fit, data, levels=(LEVEL,))
        return prof.intervals(), {k: bool(v["converged"].all()) for k, v in prof.profiles.items()}

    ref, _ = intervals(2000, True)
    half = (ref[f"upper_{pct}"] - ref[f"lower_{pct}"]) / 2
    out = {"reference": "refined, M = 2000", "rows": []}
    for refine in (False, True):
        for m in (25, 50, 100, 200, 500, 1000):
            iv, conv = intervals(m, refine)
            err = np.maximum(np.abs(iv[f"lower_{pct}"] - ref[f"lower_{pct}"]), np.abs(iv[f"upper_{pct}"] - ref[f"upper_{pct}"])) / half
            row = {"refine": refine, "num_draws": m, "max_endpoint_error_over_halfwidth": float(err.max()),
                   "worst_parameter": str(err.idxmax()), "median": float(err.median()), "all_converged": all(conv.values())}  # fmt: skip
            print(row, flush=True)
            out["rows"].append(row)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--replicates", type=int, default=20)
    p.add_argument("--num-individuals", type=int, default=40)
    p.add_argument("--only", choices=("coverage", "draws"), default=None)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--batch", type=int, default=5, help="replicates per process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    if results.get("num_individuals") not in (None, args.num_individuals):
        results = {}
    results.update({"num_individuals": args.num_individuals, "level": LEVEL, "truth": _labels()})
    if args.worker:  # a batch of replicates in this process, then exit (see below)
        reps = [r for r in results.get("replicates", []) if r["replicate"] < args.replicates]
        todo = sorted(set(range(args.replicates)) - {r["replicate"] for r in reps})[: args.batch]
        for r in todo:
            t0 = time.perf_counter()
            reps.append(one_replicate(r, args.num_individuals))
            print(f"replicate {r}: {time.perf_counter() - t0:.0f} s {reps[-1]['seconds']}", flush=True)
            results["replicates"] = sorted(reps, key=lambda x: x["replicate"])
            out_path.write_text(json.dumps(results, indent=1))
        return 0
    if args.only in (None, "coverage"):
        # Replicates run in batches, each in a new process: one process accumulating the compiled
        # programs of every replicate's shapes failed in an XLA compile ("Cannot allocate memory")
        # after 12 replicates. Every batch appends to the results file.
        out_path.write_text(json.dumps(results, indent=1))
        while len({r["replicate"] for r in results.get("replicates", []) if r["replicate"] < args.replicates}) < args.replicates:
            before = len(results.get("replicates", []))
            subprocess.run([sys.executable, __file__, "--worker", "--replicates", str(args.replicates), "--num-individuals",
                            str(args.num_individuals), "--batch", str(args.batch), "--out", str(out_path)], check=False)  # fmt: skip
            results = json.loads(out_path.read_text())
            if len(results.get("replicates", [])) == before:
                raise RuntimeError("a batch of replicates made no progress; see its output above.")
        reps = [r for r in results["replicates"] if r["replicate"] < args.replicates]
        results["summary"] = summarise(reps)
        plot(results["replicates"], IMG)
        for method in METHODS:
            s = results["summary"][method]
            print(method, f"pooled {s['pooled']:.3f} ± {s['pooled_se']:.3f}",
                  {k: f"{v['covered']}/{len(reps)}" for k, v in s["by_parameter"].items()}, flush=True)  # fmt: skip
        print("targets:", results["summary"]["targets"], flush=True)
    if args.only in (None, "draws"):
        results["draws"] = draws_study()
    out_path.write_text(json.dumps(results, indent=1))
    if "summary" in results:
        write_markdown(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
