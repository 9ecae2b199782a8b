"""How much does an estimator lose against the exact posteriors, and what does that do to the population fit?

    python examples/exact_check.py [--num-individuals 200] [--num-proposals 4000] [--out examples_output]

SBC cannot tell a calibrated estimator from a calibrated but *wide* one (one whose summary
network has lost part of the data). For a model with a tractable likelihood the exact
individual posteriors are within reach by importance sampling, with the estimator as proposal.

A synthetic population of `pk_oral_1cmt` (designs from its design prior, SD 0.3 on ka, CL and
V, the residual error without random effect) is fitted by MAP twice: on the shipped
estimator's draws and on draws from the exact posteriors. Prints the estimator's SD against
the exact SD per parameter, and both fits beside the truth. Writes `exact_check.png`.
"""

import argparse
import warnings
from pathlib import Path

import jax
import numpy as np
import pandas as pd

import nlme_ppl as nlp


def population(model, n: int, key):
    """`n` individuals around the training-prior means (SD 0.3; the residual error fixed), with their data."""
    truth = {"mean": {p: float(model.prior[p].loc) for p in model.param_names}, "sd": {p: 0.3 for p in ("ka", "CL", "V")}}
    k_phi, k_obs, k_design = jax.random.split(key, 3)
    pop = nlp.populations.gaussian(model, fixed=("sigma_add",))
    phi = np.asarray(nlp.simulate_population(pop, truth, k_phi, num_individuals=n))
    return nlp.simulate_data(model, phi, k_obs, designs=model.sample_designs(k_design, n)), phi


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--num-individuals", type=int, default=200)
    p.add_argument("--num-proposals", type=int, default=4000)
    p.add_argument("--out", default="examples_output")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    post = nlp.pretrained("pk_oral_1cmt")
    model = post.model
    data, phi = population(model, args.num_individuals, jax.random.key(0))

    cmp = nlp.diagnostics.compare_with_exact(post, data, jax.random.key(1), num_proposals=args.num_proposals)
    print(cmp)
    print(cmp.table().round(3).to_string())
    cmp.plot(out / "exact_check.png")

    pop = nlp.populations.gaussian(model, fixed=("sigma_add",))
    warnings.simplefilter("ignore", nlp.diagnostics.SurrogateWarning)  # the checks are printed below
    fits = {name: nlp.fit_map(pop, q, data, jax.random.key(2), num_starts=4)
            for name, q in (("estimator", post), ("exact posteriors", cmp.exact))}
    truth = {f"mean[{n}]": phi[:, i].mean() for i, n in enumerate(model.param_names)}
    truth |= {f"sd[{n}]": phi[:, i].std() for i, n in enumerate(model.param_names) if n != "sigma_add"}
    table = pd.DataFrame({"sample truth": truth} | {name: {k: f.params[k] for k in truth} for name, f in fits.items()})
    print(table.round(3).to_string())
    print("posterior SD / training-prior SD of the fixed parameter (median over individuals):",
          {name: round(v, 3) for name, v in fits["estimator"].fixed_widths.items()})
    print(f"wrote {out / 'exact_check.png'}")


if __name__ == "__main__":
    main()
