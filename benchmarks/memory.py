"""Resident memory of each phase of a `fit_map` call (issue 19: what limits N = 10⁶).

    python benchmarks/memory.py [--num-individuals 200000]

`frohlich_simple`, diagonal population with offset and sigma fixed, `num_draws=100`, one start,
`refine=False`, no diagnostics (the call of `benchmarks/million.py`). For each phase it prints
the resident memory at its start and end and its peak (sampled every 50 ms), in GiB. At
N = 200,000 on this 2-core CPU (stop 34): draws end 4.11 and peak 4.34, setup peak 4.47, stderr
peak 4.69 (data alone 1.11).
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time

import jax

import nlme_ppl as nlp
import nlme_ppl.inference.map as fit_module
from nlme_ppl.demo import DEMO_MEAN_PRIOR, DEMO_TRUTH


def _resident_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-individuals", type=int, default=200_000)
    n = p.parse_args().num_individuals
    peak = [0.0]

    def sample():
        while True:
            peak[0] = max(peak[0], _resident_gib())
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    timed = fit_module.phase

    @contextlib.contextmanager
    def phase(name):  # the fit's own phases, with the memory around them
        start, t0 = _resident_gib(), time.perf_counter()
        peak[0] = start
        with timed(name):
            yield
        print(f"{name:10s} start {start:6.2f}  end {_resident_gib():6.2f}  peak {peak[0]:6.2f} GiB  {time.perf_counter() - t0:6.1f} s", flush=True)

    fit_module.phase = phase
    model, post = nlp.models.get("frohlich_simple"), nlp.pretrained("frohlich_simple")
    truth = nlp.populations.gaussian(model, fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    phi = nlp.simulate_population(truth, DEMO_TRUTH, jax.random.key(0), num_individuals=n)
    data = nlp.simulate_data(model, phi, jax.random.key(1))
    print(f"data of {n:,} individuals: {_resident_gib():.2f} GiB resident", flush=True)
    pop = nlp.populations.gaussian(model, covariance="diag", fixed=("offset", "sigma"), mean_prior=DEMO_MEAN_PRIOR)
    nlp.fit_map(pop, post, data, jax.random.key(2), num_draws=100, num_starts=1, refine=False, diagnose=False, max_draws=100)


if __name__ == "__main__":
    main()
