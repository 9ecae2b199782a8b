"""`nlme-ppl train`, and the parsers of the options it shares with `nlme-ppl fit` (`--prior NAME=MEAN,SD`, `--samples LO,HI`)."""

from __future__ import annotations

import time
from pathlib import Path


def _train(args) -> int:
    import jax

    import nlme_ppl as nlp
    from nlme_ppl.estimators import PRETRAINED_CONFIGS, TrainConfig

    model = nlp.models.get(args.model, prior=_priors(args.prior))
    num_sims, config, seed = PRETRAINED_CONFIGS.get(args.model, (100_000, None, 0))  # None: TrainConfig.sized
    if args.max_epochs is not None:
        import dataclasses

        config = dataclasses.replace(config or TrainConfig(), max_epochs=args.max_epochs)
    num_sims = args.num_simulations or num_sims
    seed = seed if args.seed is None else args.seed
    out = Path(args.out)
    loss_plot = args.loss_plot or out.with_suffix(".loss.png")
    t0 = time.perf_counter()
    designs, what = None, "its built-in design prior"
    if args.designs_from:
        designs = nlp.designs.like(nlp.read_nonmem(args.designs_from), time_jitter=args.time_jitter, amount_jitter=args.amount_jitter,
                                   samples=_pair(args.samples, "--samples"), source=_file_source(args.designs_from))  # fmt: skip
        what = f"the designs of {args.designs_from} ({designs.data.num_individuals} individuals)"
    elif args.time_jitter or args.amount_jitter or args.samples:
        raise ValueError("--time-jitter, --amount-jitter and --samples apply to --designs-from FILE.csv; give the file.")
    post = nlp.train(model, jax.random.key(seed), num_simulations=num_sims, config=config, loss_plot=loss_plot, designs=designs)
    post.save(out)
    print(f"trained {args.model} on {num_sims} simulations of {what} (seed {seed}) in {time.perf_counter() - t0:.0f} s; "
          f"wrote {out} and {loss_plot}")
    return 0


def _priors(items) -> dict[str, tuple[float, float]] | None:
    """`--prior NAME=MEAN,SD` options as `{NAME: (MEAN, SD)}` (None when there are none)."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--prior {item!r}: give NAME=MEAN,SD on the log scale, e.g. CL=0,1.5.")
        if name.strip() in out:
            raise ValueError(f"--prior names {name.strip()!r} twice; give each parameter once.")
        out[name.strip()] = _pair(value, f"--prior {name.strip()}")
    return out or None


def _pair(text, what: str):
    if text is None:
        return None
    try:
        a, b = (float(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(f"{what}: expected two numbers separated by a comma, e.g. 0,1.5; got {text!r}.") from None
    return a, b


def _file_source(path) -> dict:
    import hashlib

    p = Path(path)
    return {"file": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]}
