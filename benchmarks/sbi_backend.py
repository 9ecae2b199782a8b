"""The sbi backend against the flowjax backend, on the same budget and the same population.

    python benchmarks/sbi_backend.py [--num-simulations 20000] [--max-epochs 30] [--num-individuals 200]
                                     [--sbi-lr-schedule cosine|constant] [--out FILE.json]

Both estimators of `pk_oral_1cmt` are trained on the same simulations (from the torch
simulator) for the same number of epochs, with the batch size and learning rate of the
shipped recipe. Then each fits the same synthetic population (means at the training-prior
means, SD 0.3 on ka, CL and V, the noise without random effect) by 10-start MAP, and SBC runs
on 500 held-out simulations for each.

The reference is the exact individual posteriors, by importance sampling with each estimator as
the proposal (`nlp.diagnostics.compare_with_exact`): the estimators' SDs against the exact ones
per parameter, and the same population fit on exact draws. Each fit is repeated on 4 more
draw keys to give its Monte Carlo spread. Writes `benchmarks/sbi_results.json`,
`docs/img/sbc_{sbi,flowjax}_pk_oral_1cmt.png` and `docs/img/exact_{sbi,flowjax}_pk_oral_1cmt.png`. Both estimators use the recipe's cosine schedule
unless `--sbi-lr-schedule constant` (sbi's own `NPE.train` keeps the rate constant).
"""

import argparse
import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

import jax
import numpy as np

import nlme_ppl as nlp
from nlme_ppl.backends.sbi import SbiConfig, simulate_torch
from nlme_ppl.diagnostics import compare_with_exact, sbc
from nlme_ppl.estimators import PRETRAINED_CONFIGS

HERE = Path(__file__).parent


def population(model, n: int, seed: int = 0):
    """`n` individuals around the training-prior means (SD 0.3 on ka, CL and V; the noise fixed), with their data."""
    truth = {"mean": {p: float(model.prior[p].loc) for p in model.param_names}, "sd": {p: 0.3 for p in ("ka", "CL", "V")}}
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    phi = np.asarray(nlp.simulate_population(nlp.populations.gaussian(model, fixed=("sigma_add",)), truth, k1, num_individuals=n))
    return nlp.simulate_data(model, phi, k2, designs=model.sample_designs(k3, n)), phi


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--num-simulations", type=int, default=20_000)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--num-individuals", type=int, default=200)
    p.add_argument("--sbi-lr-schedule", default="cosine", choices=("cosine", "constant"),
                   help="cosine: the flowjax recipe's schedule; constant: what sbi's NPE.train does")
    p.add_argument("--out", default=str(HERE / "sbi_results.json"))
    p.add_argument("--save-dir", default=None, help="also save both estimators here (flowjax.nlp, sbi.nlp)")
    p.add_argument("--load-dir", default=None, help="skip training: load flowjax.nlp and sbi.nlp saved by --save-dir")
    args = p.parse_args(argv)
    model = nlp.models.pk_oral_1cmt()
    t0 = time.perf_counter()
    sims = simulate_torch(model, jax.random.key(0), num_simulations=args.num_simulations)
    sim_seconds = time.perf_counter() - t0
    recipe = PRETRAINED_CONFIGS["pk_oral_1cmt"][1]
    flowjax_config = dataclasses.replace(recipe, max_epochs=args.max_epochs, patience=args.max_epochs)
    sbi_config = SbiConfig(embedding="gru", max_epochs=args.max_epochs, patience=args.max_epochs,
                           batch_size=recipe.batch_size, learning_rate=recipe.learning_rate, lr_schedule=args.sbi_lr_schedule,
                           final_lr_fraction=recipe.final_lr_fraction, clip_norm=recipe.clip_norm)
    posts, results = {}, {"num_simulations": len(sims), "torch_simulate_seconds": sim_seconds, "max_epochs": args.max_epochs,
                          "sbi_lr_schedule": args.sbi_lr_schedule, "load_average_at_start": os.getloadavg()[0]}
    for backend, config in (("flowjax", flowjax_config), ("sbi", sbi_config)):
        if args.load_dir:  # the training time is the one recorded when the file was trained
            posts[backend] = nlp.load_posterior(Path(args.load_dir) / f"{backend}.nlp")
            h = posts[backend].history
            results[backend] = {"train_seconds": h["train_seconds"] if isinstance(h, dict) else h.train_seconds, "loaded_from": args.load_dir}
            continue
        t = time.perf_counter()
        posts[backend] = nlp.train(model, jax.random.key(1), simulations=sims, config=config, backend=backend, progress=False)
        results[backend] = {"train_seconds": time.perf_counter() - t}
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        for backend, post in posts.items():
            post.save(Path(args.save_dir) / f"{backend}.nlp")
    data, phi = population(model, args.num_individuals)
    # per individual: how far apart the two estimators' posterior means are, in flowjax posterior SDs
    d = {b: np.asarray(post.sample(data, jax.random.key(4), num_draws=1000)) for b, post in posts.items()}
    z = np.abs(d["sbi"].mean(1) - d["flowjax"].mean(1)) / d["flowjax"].std(1)
    ratio = d["sbi"].std(1) / d["flowjax"].std(1)
    results["per_individual"] = {
        name: {"median_abs_mean_difference_in_sd": float(np.median(z[:, i])), "max_abs_mean_difference_in_sd": float(z[:, i].max()),
               "median_sd_ratio": float(np.median(ratio[:, i]))}
        for i, name in enumerate(model.param_names)
    }
    fixed = ("sigma_add",)
    pop = nlp.populations.gaussian(model, fixed=fixed)
    # the reference: the exact individual posteriors (importance sampling, each estimator as proposal)
    exact = {}
    for backend, post in posts.items():
        cmp = compare_with_exact(post, data, jax.random.key(5))
        cmp.plot(HERE.parent / "docs" / "img" / f"exact_{backend}_pk_oral_1cmt.png")
        exact[backend] = cmp
        tab = cmp.table()
        results[backend]["against_exact"] = {
            c: {k: float(v) for k, v in tab[c].items()} for c in ("median_sd_ratio", "mean_zscore")
        } | {"num_unreliable": int(tab["num_unreliable"].iloc[0])}
    # the two importance samplers (one per proposal) estimate the same exact posteriors: how closely
    a, b = exact["flowjax"], exact["sbi"]
    ok = a.reliable() & b.reliable()
    results["exact_proposals_agree"] = {
        "median_abs_mean_difference_in_sd": float(np.median(np.abs(a.exact_mean - b.exact_mean)[ok] / a.exact_sd[ok])),
        "median_sd_ratio": float(np.median(b.exact_sd[ok] / a.exact_sd[ok])),
    }
    fits = posts | {"exact": exact["flowjax"].exact}
    for backend, post in fits.items():
        with warnings.catch_warnings():  # the check that matters here is recorded: fixed_widths
            warnings.simplefilter("ignore", nlp.diagnostics.SurrogateWarning)
            fit = nlp.fit_map(pop, post, data, jax.random.key(2), num_draws=100, num_starts=10)
        r = results.setdefault(backend, {})
        r["estimates"] = {k: float(v) for k, v in fit.params.items()}
        r["fixed_posterior_over_prior_sd"] = fit.fixed_widths
        # a fit's spread over draw keys (the surrogate's Monte Carlo error), from 4 more keys
        again = [nlp.fit_map(pop, post, data, jax.random.key(20 + i), num_draws=100, num_starts=4, diagnose=False).params
                 for i in range(4)]
        r["draw_key_sd"] = {k: float(np.std([a[k] for a in again], ddof=1)) for k in fit.params}
        r["errors"] = {}
        for i, name in enumerate(model.param_names):
            r["errors"][f"mean[{name}]"] = fit.params[f"mean[{name}]"] - float(phi[:, i].mean())
            if name not in fixed:
                r["errors"][f"sd[{name}]"] = fit.params[f"sd[{name}]"] / float(phi[:, i].std()) - 1
    for backend, post in posts.items():
        r = results[backend]
        t = time.perf_counter()
        res = sbc(post, model, jax.random.key(3), num_simulations=500, num_draws=100)
        r["sbc_seconds"] = time.perf_counter() - t
        r["sbc_passed"] = {k: bool(v) for k, v in res.passed.items()}
        r["sbc_max_deviation"] = {k: float(v) for k, v in res.table()["max_deviation"].items()}
        res.plot(HERE.parent / "docs" / "img" / f"sbc_{backend}_pk_oral_1cmt.png")
    est = {b: results[b]["estimates"] for b in fits}
    results["difference_sbi_minus_flowjax"] = {k: est["sbi"][k] - est["flowjax"][k] for k in est["flowjax"]}
    results["difference_from_exact"] = {b: {k: est[b][k] - est["exact"][k] for k in est[b]} for b in posts}
    results["load_average_at_end"] = os.getloadavg()[0]
    path = Path(args.out)
    path.write_text(json.dumps(results, indent=1))
    for b in posts:
        r = results[b]
        print(f"{b}: train {r['train_seconds']:.0f} s; SBC {sum(r['sbc_passed'].values())}/{len(r['sbc_passed'])}; "
              + ", ".join(f"{k} {v:+.3f}" for k, v in r["errors"].items()))
        print(f"   SD ratio to exact: {r['against_exact']['median_sd_ratio']}")
    print("exact draws:", ", ".join(f"{k} {v:+.3f}" for k, v in results["exact"]["errors"].items()))
    print("sbi - flowjax:", {k: round(v, 3) for k, v in results["difference_sbi_minus_flowjax"].items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
