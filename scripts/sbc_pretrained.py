"""Simulation-based calibration of a shipped (pretrained) estimator.

    python scripts/sbc_pretrained.py --model frohlich_simple --num-simulations 500 \
        --num-draws 100 --out docs/img/sbc_frohlich_simple.png

Loads `nlme_ppl.estimators.pretrained(NAME)`, simulates held-out data from its model, prints
the per-parameter table, writes the ECDF-difference plot with the 99% simultaneous band, and
exits with status 1 if any parameter fails.
"""

from __future__ import annotations

import argparse
import sys
import time


def _load(name: str):
    """The shipped estimator called `name` (kept separate so tests can substitute one)."""
    from nlme_ppl.estimators import pretrained

    return pretrained(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="frohlich_simple", help="name of the pretrained estimator")
    parser.add_argument("--num-simulations", type=int, default=500, help="held-out simulated data sets (n)")
    parser.add_argument("--num-draws", type=int, default=100, help="posterior draws per data set (L)")
    parser.add_argument("--prob", type=float, default=0.99, help="simultaneous band coverage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="where to write the plot (PNG); default: no plot")
    args = parser.parse_args(argv)

    import jax
    import pandas as pd

    from nlme_ppl.diagnostics import sbc

    post = _load(args.model)
    t0 = time.perf_counter()
    result = sbc(
        post,
        post.model,
        jax.random.key(args.seed),
        num_simulations=args.num_simulations,
        num_draws=args.num_draws,
        prob=args.prob,
    )
    elapsed = time.perf_counter() - t0
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 3):
        print(result.table().to_string())
    print(
        f"\nSBC of {args.model!r}: n={result.num_simulations}, L={result.num_draws}, "
        f"{args.prob:.0%} simultaneous band, {elapsed:.1f} s; "
        f"{sum(result.passed.values())}/{len(result.passed)} parameters pass."
    )
    if args.out:
        result.plot(args.out)
        print(f"plot written to {args.out}")
    failed = [p for p, ok in result.passed.items() if not ok]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
