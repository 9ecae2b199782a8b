"""The engines side by side (issue 18): the NN-NLME VAE (`fit_vae`), the amortized flow
(`fit_map`, the shipped estimator refined), exact hierarchical NUTS (`fit_exact_nuts`) and R
`nlme`, on the same data sets.

    python benchmarks/engines.py [--quick] [--only theophylline,frohlich] [--no-nuts] [--out FILE]   (or `make bench`)

Cases:
- `theophylline`: R's Theoph (12 subjects), `pk_oral_1cmt` with `sigma_add` without random
  effect, against R nlme's published fit (examples/theophylline_nlme.R ->
  examples/data/theophylline_nlme.csv);
- `frohlich`: a synthetic `frohlich_simple` population of 500 cells (the accuracy study's
  replicate 0, `DEMO_TRUTH`; `offset` and `sigma` without random effect), against the truth.

Figures per engine: estimates, SEs (posterior SDs for NUTS), wall time of the public call (cold:
first call in this process; warm: the same call again, VAE and MAP on Theophylline only), the engine's own
log-likelihood at its estimate, and every estimate's log-likelihood by one common estimator
(importance sampling, 2,000 draws per individual from one fixed proposal: the defensive
mixture around the q_i of the VAE fit with the largest log-likelihood), so the columns compare. Writes benchmarks/engines_results.json
and the tables in docs/guide/vae.md (between the `engines-table` markers).
"""

import os

import numpyro

numpyro.set_host_device_count(2)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import nlme_ppl as nlp  # noqa: E402
from nlme_ppl.inference._vae_marginal import draw_proposal, marginal  # noqa: E402
from nlme_ppl.inference._vae_model import build_layout, encoder_inputs  # noqa: E402

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "guide" / "vae.md"
MARK_START, MARK_END = "<!-- engines-table:start -->", "<!-- engines-table:end -->"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree.leaves(getattr(out, "params", 0)))
    return out, time.perf_counter() - t


def common_loglik(pop, model, data, vfit, site_values, key, num_draws=2000):
    """log p(D | θ) at constrained population `site_values`, by importance sampling with one fixed
    proposal for every θ: the defensive mixture around the reference VAE fit's q_i (its encoder,
    offsets and population at its own estimate), so the draws do not move with θ."""
    layout, z = build_layout(pop, model, data, {k: jnp.asarray(v) for k, v in site_values.items()})
    _, z_ref = build_layout(pop, model, data, {k: jnp.asarray(v) for k, v in vfit.site_values.items()})
    inputs = tuple(jnp.asarray(a) for a in encoder_inputs(model, data))
    draws = draw_proposal(layout, z_ref, vfit.encoder, inputs, data, key, num_draws, vfit.local)
    pw, se = marginal(layout, model, z, draws, data, model.designs_from_data(data))
    return float(jnp.sum(pw)), float(jnp.sqrt(jnp.sum(se**2)))


def nuts_summary(idata):
    post = idata["posterior"]
    params, se, values = {}, {}, {}
    for var, dim in (("mean", "param"), ("sd", "sd_param")):
        da = post[var]
        values[var] = np.asarray(da).reshape(-1, da.shape[-1]).mean(0)
        for name in da[dim].values:
            x = np.asarray(da.sel({dim: name})).reshape(-1)
            params[f"{var}[{name}]"], se[f"{var}[{name}]"] = float(x.mean()), float(x.std())
    return params, se, values


def run_case(name, model, pop, data, key, *, vae_variants, map_options, nuts_options, reference, warm, with_nuts):
    """`vae_variants`: `{row label: fit_vae options}`; the common log-likelihood uses the encoder
    of the variant with the largest log-likelihood."""
    rows, k_common, fits = {}, jax.random.key(77), {}
    print(f"== {name}: N = {data.num_individuals}", flush=True)
    for label, options in vae_variants.items():
        vfit, cold = timed(lambda: nlp.fit_vae(pop, model, data, key, **options))
        seconds_warm = timed(lambda: nlp.fit_vae(pop, model, data, key, **options))[1] if warm else None
        fits[label] = (vfit, cold, seconds_warm)
    best = max(fits, key=lambda k: fits[k][0].loglik)
    ref_fit = fits[best][0]
    for label, (vfit, cold, seconds_warm) in fits.items():
        ll = common_loglik(pop, model, data, ref_fit, vfit.site_values, k_common)
        rows[label] = dict(params=vfit.params, se=vfit.stderr, seconds_cold=cold, seconds_warm=seconds_warm, loglik_own=[vfit.loglik, vfit.absolute.loglik_mc_se],
                           loglik_common=ll, flags=[p for p, f in zip(vfit.identifiability["parameter"], vfit.identifiability["flag"]) if f])  # fmt: skip
        print(f"  {label}: {cold:.1f} s cold, {seconds_warm} warm; loglik {vfit.loglik:.2f}; common {ll[0]:.2f}; flags {rows[label]['flags']}", flush=True)
    vfit = ref_fit
    post = nlp.pretrained(model.name)
    mfit, cold = timed(lambda: nlp.fit_map(pop, post, data, key, **map_options))
    map_warm = timed(lambda: nlp.fit_map(pop, post, data, key, **map_options))[1] if warm else None
    ll = common_loglik(pop, model, data, vfit, mfit.site_values, k_common)
    rows["amortized flow (fit_map)"] = dict(params=mfit.params, se=mfit.stderr, seconds_cold=cold, seconds_warm=map_warm,
                                            loglik_own=[mfit.loglik, mfit.absolute.loglik_mc_se if mfit.absolute else None], loglik_common=ll)  # fmt: skip
    print(f"  MAP {cold:.1f} s cold, {map_warm} warm; loglik {mfit.loglik:.2f}; common {ll[0]:.2f}", flush=True)
    if with_nuts:
        init = nlp.exact_init(pop, mfit, mfit.draws, data) if mfit.draws is not None else None
        t = time.perf_counter()
        idata = nlp.fit_exact_nuts(pop, model, data, key, init=init, progress=False, **nuts_options)
        seconds = time.perf_counter() - t
        params, se, values = nuts_summary(idata)
        ll = common_loglik(pop, model, data, vfit, {**mfit.site_values, **values}, k_common)
        rows["exact NUTS (posterior mean, SD)"] = dict(params=params, se=se, seconds_cold=seconds, seconds_warm=None, loglik_own=None, loglik_common=ll)
        print(f"  NUTS {seconds:.1f} s; common loglik at the posterior mean {ll[0]:.2f}", flush=True)
    if reference is not None:
        ref_params, ref_se, ref_values, ref_ll, ref_label = reference
        ll = common_loglik(pop, model, data, vfit, ref_values, k_common) if ref_values is not None else None
        rows[ref_label] = dict(params=ref_params, se=ref_se, seconds_cold=None, seconds_warm=None, loglik_own=[ref_ll, None] if ref_ll is not None else None, loglik_common=ll)
    return rows


def theophylline_reference(model):
    ref = pd.read_csv(ROOT / "examples" / "data" / "theophylline_nlme.csv", index_col=0)
    params = {k: float(ref.loc[k, "estimate"]) for k in ("mean[ka]", "mean[CL]", "mean[V]", "sd[ka]", "sd[CL]", "sd[V]")}
    params["mean[sigma_add]"] = float(np.log(ref.loc["sigma_add_sd", "estimate"]))
    se = {k: float(ref.loc[k, "se"]) for k in ("mean[ka]", "mean[CL]", "mean[V]")}
    names = model.param_names
    mean = [params[f"mean[{n}]"] for n in names]
    values = {"mean": np.array(mean), "sd": np.array([params[f"sd[{n}]"] for n in ("ka", "CL", "V")])}
    return params, se, values, float(ref.loc["loglik", "estimate"]), "R nlme (published fit)"


def fmt(x, digits=3):
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def table(case: str, rows: dict, truth: dict | None) -> str:
    engines = list(rows)
    labels = list(next(iter(rows.values()))["params"])
    head = "| | " + " | ".join(engines) + (" | truth |" if truth else " |")
    lines = [head, "|" + "---|" * (len(engines) + 1 + bool(truth))]
    for label in labels:
        cells = []
        for e in engines:
            p, s = rows[e]["params"].get(label), (rows[e]["se"] or {}).get(label)
            cells.append(f"{fmt(p)} ({fmt(s)})" if s is not None else fmt(p))
        lines.append(f"| `{label}` | " + " | ".join(cells) + (f" | {fmt(truth.get(label))} |" if truth else " |"))
    own = [rows[e]["loglik_own"] for e in engines]
    lines.append("| log-likelihood (own) | " + " | ".join("—" if o is None or o[0] is None else f"{o[0]:.2f}" + (f" ± {o[1]:.2f}" if o[1] else "") for o in own) + (" | |" if truth else " |"))
    com = [rows[e]["loglik_common"] for e in engines]
    lines.append("| log-likelihood (common IS) | " + " | ".join("—" if c is None else f"{c[0]:.2f} ± {c[1]:.2f}" for c in com) + (" | |" if truth else " |"))
    times = [rows[e] for e in engines]
    lines.append("| wall time, s (cold / warm) | " + " | ".join("—" if r["seconds_cold"] is None else f"{r['seconds_cold']:.0f}" + (f" / {r['seconds_warm']:.0f}" if r["seconds_warm"] else "") for r in times) + (" | |" if truth else " |"))
    return f"**{case}** (estimate (SE); NUTS: posterior mean (SD))\n\n" + "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="no warm repeats, fewer steps and samples")
    p.add_argument("--only", default="theophylline,frohlich")
    p.add_argument("--no-nuts", action="store_true", help="skip exact NUTS")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "engines_results.json")
    args = p.parse_args()
    cases = args.only.split(",")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if "theophylline" in cases:
        model = nlp.models.pk_oral_1cmt()
        data = nlp.read_nonmem(ROOT / "examples" / "data" / "theophylline.csv")
        pop = nlp.populations.gaussian(model, fixed=("sigma_add",))
        nuts = dict(num_chains=2, num_warmup=300 if args.quick else 500, num_samples=300 if args.quick else 1000)
        vae = {"VAE (fit_vae, defaults)": {}}
        rows = run_case("Theophylline", model, pop, data, jax.random.key(0), vae_variants=vae, map_options={}, nuts_options=nuts,
                        reference=theophylline_reference(model), warm=not args.quick, with_nuts=not args.no_nuts)  # fmt: skip
        results["theophylline"] = {"rows": rows, "truth": None}
    if "frohlich" in cases:
        from accuracy import demo_population, replicate_data
        from nlme_ppl.demo import DEMO_TRUTH

        model = nlp.models.frohlich_simple()
        pop = demo_population(model)
        _, data, key = replicate_data(model, pop, 0, 500)
        truth = {f"mean[{k}]": v for k, v in DEMO_TRUTH["mean"].items()} | {f"sd[{k}]": v for k, v in DEMO_TRUTH["sd"].items()}
        nuts = dict(num_chains=2, num_warmup=200 if args.quick else 300, num_samples=200 if args.quick else 300)
        steps = 1000 if args.quick else 3000
        vae = {f"VAE ({steps} steps)": dict(num_starts=2, num_steps=steps, num_is_draws=500),
               f"VAE ({2 * steps // 3} + {steps // 3} local steps)": dict(num_starts=2, num_steps=2 * steps // 3, local_steps=steps // 3, num_is_draws=500)}
        rows = run_case("frohlich_simple, 500 cells", model, pop, data, key, vae_variants=vae, map_options={}, nuts_options=nuts,
                        reference=None, warm=False, with_nuts=not args.no_nuts)  # fmt: skip
        results["frohlich"] = {"rows": rows, "truth": truth}
    results["machine"] = {"cpus": os.cpu_count(), "quick": args.quick}
    args.out.write_text(json.dumps(results, indent=1, default=float))
    text = "\n".join(table({"theophylline": "Theophylline, pk_oral_1cmt (12 subjects)", "frohlich": "frohlich_simple, 500 synthetic cells"}[c],
                           results[c]["rows"], results[c]["truth"]) for c in ("theophylline", "frohlich") if c in results)  # fmt: skip
    print(text)
    if DOC.exists():
        doc = DOC.read_text()
        if MARK_START in doc and MARK_END in doc:
            pre, rest = doc.split(MARK_START)
            DOC.write_text(pre + MARK_START + "\n" + text + MARK_END + rest.split(MARK_END, 1)[1])


if __name__ == "__main__":
    main()
