"""The optimiser of `fit_map`: the hand-written optax L-BFGS loop against `optimistix.minimise`
(optx.LBFGS and optx.BFGS) on the same objective, start and whitened coordinates.

    python benchmarks/optimiser.py [--num-individuals 500] [--repeats 3]

Prints, per optimiser: the warm wall time of one start (compiled once before timing), the
iterations or steps, and the objective reached; and the ratios to the optax loop measured in
this run. docs/guide/inference.md ("The optimiser") quotes the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

import nlme_ppl as nlp
from nlme_ppl.inference._objective import Objective
from nlme_ppl.inference._optimize import preconditioner
from nlme_ppl.inference.map import _probe, _starts


def _timed(fn, repeats):
    out = jax.block_until_ready(fn())  # compile
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return out, best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-individuals", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    model = nlp.models.frohlich_simple()
    post = nlp.pretrained("frohlich_simple")
    pop = nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=nlp.demo.DEMO_MEAN_PRIOR)
    phi = nlp.simulate_population(pop, nlp.demo.DEMO_TRUTH, jax.random.key(0), num_individuals=args.num_individuals)
    data = nlp.simulate_data(model, phi, jax.random.key(1))
    draws = nlp.prepare_draws(post, data, jax.random.key(2), num_draws=100)

    probe = _probe(pop, draws, data, "obs")
    objective, _ = Objective.build(pop, *probe, jax.random.key(3), site="obs")
    z0 = _starts(objective, draws, jax.random.key(4), 1, 0.5, probe)
    precond = preconditioner(objective.start_hessian(z0[0], draws, data))
    tol = 1e-8

    def optax_loop():
        return objective.minimise(z0, precond, draws, data, 500, tol)

    (z_ox, v_ox, conv_ox, it_ox), t_ox = _timed(optax_loop, args.repeats)
    rows = {"optax.lbfgs loop (fit_map)": {"seconds": t_ox, "steps": int(it_ox[0]), "objective": float(v_ox[0]), "converged": bool(conv_ox[0])}}

    def whitened(u, _):
        return objective(z0[0] + precond @ u, draws, data)

    @jax.jit
    def run_optx(solver_name):
        solver = {"LBFGS": optx.LBFGS(rtol=tol, atol=tol), "BFGS": optx.BFGS(rtol=tol, atol=tol)}[solver_name]
        sol = optx.minimise(whitened, solver, jnp.zeros_like(z0[0]), max_steps=500, throw=False)
        return sol.value, sol.stats["num_steps"], sol.result == optx.RESULTS.successful

    for name in ("LBFGS", "BFGS"):
        fn = jax.jit(lambda name=name: run_optx.__wrapped__(name))
        (u, steps, ok), t = _timed(fn, args.repeats)
        value = float(whitened(u, None))
        rows[f"optimistix.{name}"] = {"seconds": t, "steps": int(steps), "objective": value, "converged": bool(ok)}

    base = rows["optax.lbfgs loop (fit_map)"]
    for name, row in rows.items():
        row["time_over_optax"] = row["seconds"] / base["seconds"]
        row["objective_minus_optax"] = row["objective"] - base["objective"]
    print(json.dumps({"num_individuals": args.num_individuals, "num_draws": 100, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
