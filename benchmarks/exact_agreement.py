"""The population posterior of `fit_nuts` with its defaults (refined draws, the likelihood
treatment of `offset` and `sigma`) against exact hierarchical NUTS (`fit_exact_nuts`) on the same
data: `frohlich_simple`, N = 200 cells of the accuracy study's replicate r (key 9000 + r).

    python benchmarks/exact_agreement.py [--replicate R] [--out FILE]     (or `make bench`)

Target (issue 15): every population mean and SD within 0.5 exact posterior SD. Prints, per
parameter, both posteriors, their difference in exact SDs and the SD ratio; ~9 min here.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import jax  # noqa: E402
import nlme_ppl as nlp  # noqa: E402
from nlme_ppl.inference import map as _map  # noqa: E402
from accuracy import _flat_posterior, demo_population, replicate_data  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--replicate", type=int, default=0)
p.add_argument("--out", type=Path, default=Path(__file__).parent / "exact_agreement_results.json")
args = p.parse_args()
r = args.replicate
model = nlp.models.frohlich_simple(); post = nlp.pretrained("frohlich_simple")
pop = demo_population(model)
_, data, k_fit = replicate_data(model, pop, r, 200)
t = time.perf_counter()
am = nlp.fit_nuts(pop, post, data, k_fit, num_draws=100, num_chains=2, num_warmup=500, num_samples=500, progress=False, diagnose=False)
t_am = time.perf_counter() - t
k_draws, k_map, k_ex = jax.random.split(jax.random.key(9500 + r), 3)
draws = nlp.prepare_draws(post, data, k_draws, num_draws=100)
fit = _map.fit_map_draws(pop, draws, data, k_map, num_starts=4)
t = time.perf_counter()
ex = nlp.fit_exact_nuts(pop, model, data, k_ex, num_chains=2, num_warmup=500, num_samples=500, init=nlp.exact_init(pop, fit, draws, data), progress=False)
t_ex = time.perf_counter() - t
a, e = _flat_posterior(am), _flat_posterior(ex)
out = {}
for k in a:
    z = (a[k].mean() - e[k].mean()) / e[k].std()
    out[k] = {"amortized": [float(a[k].mean()), float(a[k].std())], "exact": [float(e[k].mean()), float(e[k].std())], "z": float(z), "sd_ratio": float(a[k].std() / e[k].std())}
    print(f"{k:18s} amortized {a[k].mean():+.4f} ± {a[k].std():.4f}   exact {e[k].mean():+.4f} ± {e[k].std():.4f}   diff/SD {z:+.2f}  SD ratio {a[k].std()/e[k].std():.2f}")
import arviz as az  # noqa: E402

print("exact max r_hat", float(az.summary(ex, var_names=["mean", "sd"])["r_hat"].max()), "seconds amortized", round(t_am, 1), "exact", round(t_ex, 1))
worst = max(abs(v["z"]) for v in out.values())
print(f"largest |difference| {worst:.2f} exact posterior SD (target 0.5): {'met' if worst <= 0.5 else 'missed'}")
args.out.write_text(json.dumps({"replicate": r, "num_individuals": 200, "params": out, "seconds_amortized": t_am, "seconds_exact": t_ex,
                                "max_abs_difference_in_sd": worst}, indent=1))
