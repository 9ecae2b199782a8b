"""Fidelity of the individual posteriors: the shipped estimators (raw) and their refinement
(`nlp.refine`) against exact NUTS on the same individuals (issue 15, item 1).

    python benchmarks/fidelity.py [--quick] [--only CASES] [--out FILE]      (or `make bench`, which runs it too)

For each case, a handful of individuals: the exact posterior p(φ | y_i) under the training prior
by NumPyro NUTS on the model's own program (`nlp.fit_exact_individual`, 2 chains x 500 + 500).
Exchangeable groups (δ, γ of `frohlich_simple`) are sorted within every draw of both sides: the
figures describe one mode, not the distance between the label-swapped modes. Per parameter:

- the median over individuals of the SD ratio (estimator / exact);
- the mean over individuals of the z-score of the estimator's mean, (mean - exact mean) / exact SD;
- C2ST of the estimator's draws against the exact draws, on each of the first 5 individuals
  (0.5: indistinguishable; the target for refined posteriors is <= 0.65).

Cases: `frohlich_simple` in the demo's population and in a low-noise one (noise SD 0.03 on the
log scale, the rest as in the demo), and `pk_oral_1cmt` on the shipped theophylline data (12
subjects). The cost of the refinement is timed at N = 1,000 and N = 10,000 (warm: the second
call), and the first call at N = 1,000 (with its compilation).

Writes `benchmarks/fidelity_results.json` and the table in `docs/fidelity.md`; with `--only`, the
cases not rerun are kept from the file.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

import nlme_ppl as nlp
from nlme_ppl.demo import DEMO_TRUTH

HERE = Path(__file__).parent
DOCS = HERE.parent / "docs" / "fidelity.md"
NUM_DRAWS = 1000
LOW_NOISE_SIGMA = float(np.log(0.03))


def _frohlich_cells(n: int, seed: int, *, sigma: float | None = None):
    model = nlp.models.frohlich_simple()
    truth = {"mean": dict(DEMO_TRUTH["mean"]), "sd": dict(DEMO_TRUTH["sd"])}
    if sigma is not None:
        truth["mean"]["sigma"] = sigma
    population = nlp.populations.gaussian(model, fixed=("offset", "sigma"))
    phi = nlp.simulate_population(population, truth, jax.random.key(seed), num_individuals=n)
    return nlp.simulate_data(model, phi, jax.random.key(seed + 1))


def _theophylline(n: int, seed: int):
    return nlp.read_nonmem(HERE.parent / "examples" / "data" / "theophylline.csv")


CASES = {
    "frohlich_simple/demo": ("frohlich_simple", lambda n: _frohlich_cells(n, 10)),
    "frohlich_simple/low_noise": ("frohlich_simple", lambda n: _frohlich_cells(n, 20, sigma=LOW_NOISE_SIGMA)),
    "pk_oral_1cmt/theophylline": ("pk_oral_1cmt", lambda n: _theophylline(n, 0)),
}


def _canonical(model, draws: np.ndarray) -> np.ndarray:
    """Each exchangeable group sorted in decreasing order within every draw: one labelling of a
    symmetric posterior, so that SDs and C2ST measure the width of a mode, not the distance
    between the label-swapped modes."""
    out = np.array(draws, np.float64)
    for group in model.exchangeable:
        idx = [model.param_names.index(p) for p in group]
        out[..., idx] = -np.sort(-out[..., idx], axis=-1)
    return out


def _stats(draws: np.ndarray, exact_mean: np.ndarray, exact_sd: np.ndarray, names) -> dict:
    ratio = draws.std(1) / exact_sd
    z = (draws.mean(1) - exact_mean) / exact_sd
    return {p: {"median_sd_ratio": float(np.median(ratio[:, j])), "mean_z": float(np.mean(z[:, j]))} for j, p in enumerate(names)}


def bench_case(label: str, num_individuals: int, num_c2st: int) -> dict:
    name, make = CASES[label]
    post = nlp.pretrained(name)
    model = post.model
    data = make(num_individuals)
    data = data.subset(np.arange(min(num_individuals, data.num_individuals)))
    n = data.num_individuals
    t0 = time.perf_counter()
    exact = [_canonical(model, nlp.fit_exact_individual(model, data, jax.random.fold_in(jax.random.key(1), i), index=i)) for i in range(n)]
    t_exact = time.perf_counter() - t0
    exact_mean = np.stack([e.mean(0) for e in exact])
    exact_sd = np.stack([e.std(0) for e in exact])
    t0 = time.perf_counter()
    refined = nlp.refine(post, data, jax.random.key(2))
    t_refine = time.perf_counter() - t0
    names = model.param_names
    out = {"model": name, "num_individuals": n, "exact_nuts_seconds": t_exact, "refine_seconds_first_call": t_refine,
           "refined_pareto_k_above_0.7": int(np.sum(refined.pareto_k > 0.7)), "refined_ess_median": float(np.median(refined.ess))}  # fmt: skip
    for kind, est in (("raw", post), ("refined", refined)):
        draws = _canonical(model, est.sample(data, jax.random.key(3), num_draws=NUM_DRAWS))
        out[kind] = {"parameters": _stats(draws, exact_mean, exact_sd, names)}
        c2st = {str(data.ids[i]): float(nlp.diagnostics.c2st(exact[i], draws[i])) for i in range(min(num_c2st, n))}
        out[kind]["c2st"] = c2st
        worst = max(v["median_sd_ratio"] for v in out[kind]["parameters"].values())
        print(f"  {label} {kind}: worst median SD ratio {worst:.2f}, C2ST {min(c2st.values()):.2f}-{max(c2st.values()):.2f}", flush=True)
    return out


def bench_refine_cost(sizes) -> dict:
    post = nlp.pretrained("frohlich_simple")
    out = {}
    for n in sizes:
        data = _frohlich_cells(n, 30)
        t0 = time.perf_counter()
        nlp.refine(post, data, jax.random.key(0))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = nlp.refine(post, data, jax.random.key(1))
        warm = time.perf_counter() - t0
        out[f"n_{n}"] = {"num_individuals": n, "seconds_first_call": first, "seconds": warm, "per_individual_ms": 1e3 * warm / n,
                         "pareto_k_above_0.7": int(np.sum(ref.pareto_k > 0.7))}  # fmt: skip
        print(f"  refine N={n}: {warm:.1f} s warm ({first:.1f} s first call)", flush=True)
    return out


def write_markdown(results: dict, path: Path = DOCS) -> None:
    lines = [
        "# Fidelity of the individual posteriors",
        "",
        "Produced by `python benchmarks/fidelity.py` (part of `make bench`), which writes `benchmarks/fidelity_results.json` "
        "and this page. The reference is exact NUTS on each individual (`nlp.fit_exact_individual`); exchangeable "
        "groups are sorted within every draw of both sides (δ > γ), so the figures describe one mode. **raw** is the shipped estimator (`nlp.pretrained(...).sample`: one summary-network pass "
        "and the flow); **refined** is [`nlp.refine`](api.md) of it, the default of `fit_map` and `fit_nuts` where the "
        "likelihood is tractable. SD ratio: the median over individuals of estimator SD / exact SD (target: raw ≤ 1.5, "
        "refined in [0.8, 1.25]). z: the mean over individuals of (estimator mean − exact mean) / exact SD. C2ST: "
        "classifier accuracy on each of the first individuals (0.5 = indistinguishable; target for refined ≤ 0.65)."
        + (" **Quick mode (fewer individuals).**" if results.get("quick") else ""),
        "",
    ]
    for label, r in results["cases"].items():
        lines += [f"## {label}", "", f"{r['num_individuals']} individuals; exact NUTS {r['exact_nuts_seconds']:.0f} s, "
                  f"refinement {r['refine_seconds_first_call']:.1f} s (first call, with compilation); "
                  f"{r['refined_pareto_k_above_0.7']} individuals with Pareto k > 0.7 in the refinement's weights "
                  f"(median ESS {r['refined_ess_median']:.0f} of 1,000).", "",
                  "| parameter | raw SD ratio | raw z | refined SD ratio | refined z |", "|---|---|---|---|---|"]  # fmt: skip
        for p, raw in r["raw"]["parameters"].items():
            ref = r["refined"]["parameters"][p]
            ok = 0.8 <= ref["median_sd_ratio"] <= 1.25
            lines.append(f"| {p} | {raw['median_sd_ratio']:.2f} | {raw['mean_z']:+.2f} | {ref['median_sd_ratio']:.2f}{'' if ok else ' **(out of range)**'} | {ref['mean_z']:+.2f} |")
        lines += ["", "| C2ST | " + " | ".join(r["raw"]["c2st"]) + " |", "|---|" + "---|" * len(r["raw"]["c2st"])]
        for kind in ("raw", "refined"):
            lines.append(f"| {kind} | " + " | ".join(f"{v:.2f}" for v in r[kind]["c2st"].values()) + " |")
        lines.append("")
    if "refine_cost" in results:
        lines += ["## Cost of the refinement", "", "`frohlich_simple`, the demo's population, 1,000 proposals per individual, default settings.", "",
                  "| N | first call | warm | per individual | Pareto k > 0.7 |", "|---|---|---|---|---|"]  # fmt: skip
        for r in results["refine_cost"].values():
            lines.append(f"| {r['num_individuals']:,} | {r['seconds_first_call']:.1f} s | {r['seconds']:.1f} s | {r['per_individual_ms']:.0f} ms | {r['pareto_k_above_0.7']} |")
        lines.append("")
    path.write_text("\n".join(lines))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer individuals, refinement cost at N = 1,000 only")
    ap.add_argument("--out", default=str(HERE / "fidelity_results.json"))
    ap.add_argument("--only", default=",".join(CASES) + ",cost", help="comma-separated cases (and 'cost')")
    args = ap.parse_args(argv)
    n, n_c2st = (5, 3) if args.quick else (10, 5)
    only = args.only.split(",")
    results = {"quick": args.quick, "cases": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nlp.diagnostics.SurrogateWarning)
        for label in CASES:
            if label in only:
                results["cases"][label] = bench_case(label, n, n_c2st)
        if "cost" in only:
            results["refine_cost"] = bench_refine_cost((1000,) if args.quick else (1000, 10_000))
    path = Path(args.out)
    previous = json.loads(path.read_text()) if path.exists() else {}
    if previous.get("quick") == args.quick:  # keep the cases (and the cost) that were not rerun
        results["cases"] = {**previous.get("cases", {}), **results["cases"]}
        if "refine_cost" not in results and "refine_cost" in previous:
            results["refine_cost"] = previous["refine_cost"]
    path.write_text(json.dumps(results, indent=2))
    write_markdown(results)
    print(f"wrote {args.out} and {DOCS}")


if __name__ == "__main__":
    main()
