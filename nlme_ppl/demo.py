"""The demo: a synthetic population of single cells, fitted with the shipped estimator.

`nlme-ppl demo` (and `make demo`) runs [`run_demo`][nlme_ppl.demo.run_demo].
"""

from __future__ import annotations

import json
import warnings
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

__all__ = ["DEMO_MEAN_PRIOR", "DEMO_TRUTH", "run_demo", "sample_truth_table"]

#: The known truth of the demo population (log scale). offset and sigma have no random effect.
DEMO_TRUTH = {
    "mean": {"delta": -0.4, "gamma": -3.2, "k_m0_scale": 5.5, "t0": 0.2, "offset": 1.5, "sigma": -2.0},
    "sd": {"delta": 0.25, "gamma": 0.3, "k_m0_scale": 0.4, "t0": 0.2},
}

#: Prior knowledge that labels the two decay rates: mRNA (delta) decays faster than protein (gamma).
DEMO_MEAN_PRIOR = {"delta": (-1.0, 1.0), "gamma": (-3.0, 1.0)}


def sample_truth_table(model, phi, truth=DEMO_TRUTH) -> dict[str, float]:
    """The population truth and the *sample* truth (mean and SD of the simulated φ_i)."""
    phi = np.asarray(phi)
    out = {}
    for i, n in enumerate(model.param_names):
        out[f"mean[{n}]"] = float(phi[:, i].mean())
        if n in truth["sd"]:
            out[f"sd[{n}]"] = float(phi[:, i].std())
    return out


def run_demo(out: str | Path = "demo_output", *, num_individuals: int = 500, num_draws: int = 100, num_chains: int = 4, num_warmup: int = 500, num_samples: int = 500, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Simulate `num_individuals` cells from `DEMO_TRUTH`, fit them by MAP and NUTS with the shipped
    `frohlich_simple` estimator, print the table next to the truth, write plots and `posterior.nc`.

    **Returns:** the comparison table (also written to `out/parameters.csv`).
    """
    import nlme_ppl as nlp

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = nlp.models.frohlich_simple()
    post = nlp.pretrained("frohlich_simple")
    k_pop, k_data, k_map, k_nuts = jax.random.split(jax.random.key(seed), 4)
    population = nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    phi = nlp.simulate_population(population, DEMO_TRUTH, k_pop, num_individuals=num_individuals)
    data = nlp.simulate_data(model, phi, k_data)

    t0 = time.perf_counter()
    with warnings.catch_warnings():  # the checks are summarised below instead
        warnings.simplefilter("ignore", nlp.diagnostics.SurrogateWarning)
        fit = nlp.fit_map(population, post, data, k_map, num_draws=num_draws, num_starts=10)
        t_map = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the MAP fit refined the estimator into exact individual posteriors; NUTS reuses them
        idata = nlp.fit_nuts(population, fit.refined if fit.refined is not None else post, data, k_nuts, num_draws=num_draws, num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples, init=fit, progress=progress, diagnose=False)
        t_nuts = time.perf_counter() - t0

    import arviz as az

    summary = az.summary(idata, var_names=["mean", "sd"], ci_prob=0.9)
    truth = {**{f"mean[{k}]": v for k, v in DEMO_TRUTH["mean"].items()}, **{f"sd[{k}]": v for k, v in DEMO_TRUTH["sd"].items()}}
    sample_truth = sample_truth_table(model, phi)
    table = pd.DataFrame(
        {
            "truth": pd.Series(truth),
            "sample_truth": pd.Series(sample_truth),
            "map": pd.Series(fit.params),
            "map_se": pd.Series(fit.stderr),
            "nuts_mean": summary["mean"],
            "nuts_sd": summary["sd"],
            "nuts_5%": summary.iloc[:, 2],
            "nuts_95%": summary.iloc[:, 3],
            "r_hat": summary["r_hat"],
            "ess_bulk": summary["ess_bulk"],
        }
    ).loc[list(truth)]
    table["map_error"] = table["map"] - table["sample_truth"]
    table.index.name = "parameter"
    table.to_csv(out / "parameters.csv")
    idata.to_netcdf(out / "posterior.nc", engine="h5netcdf")
    _plot_recovery(idata, fit, truth, sample_truth, out / "recovery.png")
    _plot_cells(data, out / "cells.png")
    report = {
        "num_individuals": num_individuals,
        "num_draws": num_draws,
        "map_seconds": round(t_map, 2),
        "nuts_seconds": round(t_nuts, 2),
        "total_seconds": round(time.perf_counter() - t_start, 2),
        "map_converged": bool(fit.converged[fit.best]),
        "log_likelihood_relative": fit.log_likelihood,
        "max_r_hat": float(table["r_hat"].max()),
        "divergences": int(idata.sample_stats["diverging"].sum()),
        "surrogate_check": fit.diagnostics_summary(),
        "map_timings": fit.timings.to_dict(),  # the MAP's phases, wall and compile seconds
    }
    fit.diagnostics_table().to_csv(out / "diagnostics.csv")
    (out / "fit.json").write_text(json.dumps({"report": report, "map": fit.params}, indent=2))
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 3):
        print(f"\nfrohlich_simple: {num_individuals} synthetic cells, estimator shipped with nlme_ppl (no training)")
        print(table)
    print(
        f"\nMAP {t_map:.1f} s (converged: {report['map_converged']}), NUTS {t_nuts:.1f} s "
        f"({num_chains} chains x {num_warmup}+{num_samples}), max R-hat {report['max_r_hat']:.3f}, "
        f"{report['divergences']} divergences. Wrote {out}/parameters.csv, fit.json, diagnostics.csv, posterior.nc, recovery.png, cells.png"
    )
    check = report["surrogate_check"]
    if "refined" in check:
        ref = check["refined"]
        print(
            f"Refinement (exact likelihood, the default): {ref['pareto_k_above_0.7']} of {num_individuals} cells have "
            f"Pareto k > 0.7 in their proposal weights (median ESS {ref['ess_median']:.0f} of {ref['num_proposals']})."
        )
    print(
        f"Surrogate check at the MAP: {check['pareto_k_above_0.7']} of {num_individuals} cells have Pareto k > 0.7 "
        f"(median ESS {check['ess_median']:.1f} of {num_draws} draws; {check['raised']} cells raised to {check['max_draws']} "
        f"draws, and the fit redone); {len(check['summary_outlier_ids'])} cells far "
        "outside the training simulations. See diagnostics.csv and docs/guide/diagnostics.md."
    )
    return table


def _plot_recovery(idata, fit, truth, sample_truth, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(truth)
    fig, axes = plt.subplots(2, (len(labels) + 1) // 2, figsize=(3.2 * ((len(labels) + 1) // 2), 6))
    for ax, label in zip(axes.flat, labels):
        site, name = label[:-1].split("[")
        draws = np.asarray(idata.posterior[site].sel({"param" if site == "mean" else "sd_param": name})).ravel()
        ax.hist(draws, bins=40, density=True, color="C0", alpha=0.6, label="NUTS posterior")
        ax.axvline(truth[label], color="k", lw=2, label="population truth")
        ax.axvline(sample_truth[label], color="k", ls="--", label="sample truth")
        ax.axvline(fit.params[label], color="C3", label="MAP")
        ax.set_title(label)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Recovery of the population parameters (log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_cells(data, path, num=40):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i in range(min(num, data.num_individuals)):
        m = np.asarray(data.mask[i])
        ax.plot(np.asarray(data.times[i])[m], np.asarray(data.values[i])[m], lw=0.6, alpha=0.6)
    ax.set_xlabel("time [h]")
    ax.set_ylabel("log fluorescence")
    ax.set_title(f"{min(num, data.num_individuals)} of {data.num_individuals} simulated cells")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
