"""Extra draws for the individuals whose importance weights are heavy-tailed at a fit
(`fit_map`'s and `fit_nuts`'s `max_draws`): which individuals, how many, and their draws."""

from __future__ import annotations

import numpy as np

from .._validate import positive_int
from ..data import Dataset
from ..diagnostics import importance_from_fit
from ..likelihood import SurrogateDraws

__all__ = ["RAISE_THRESHOLD", "bucket_size", "high_k_rows", "with_extra_draws"]

#: The stream of a fit's key that the extra draws of high-k individuals come from.
_RAISE_STREAM = 0x5EF2
#: The fewest individuals that get extra draws when any does (see `bucket_size`).
_MIN_BUCKET = 8
#: Pareto k above which an individual gets extra draws (Vehtari et al. 2024: unreliable above 0.7).
RAISE_THRESHOLD = 0.7


def _max_draws(max_draws, num_draws: int) -> int:
    max_draws = positive_int(max_draws, name="max_draws")
    if max_draws < num_draws:
        raise ValueError(f"`max_draws` ({max_draws}) is the cap of an individual's draws in all: it must be at least num_draws ({num_draws}).")
    return max_draws


def high_k_rows(population, draws: SurrogateDraws, params: dict, data: Dataset, *, threshold: float = RAISE_THRESHOLD, site: str = "obs") -> np.ndarray:
    """Rows of the individuals whose importance weights at `params` have Pareto k > `threshold`,
    then the next-highest k up to a bucketed count (see `bucket_size`), in row order."""
    k = np.asarray(importance_from_fit(population, draws, params, data, site=site).pareto_k)
    num = int(np.sum(k > threshold))
    if num == 0:
        return np.zeros(0, int)
    return np.sort(np.argsort(-k, kind="stable")[: bucket_size(num, len(k))])


def bucket_size(num: int, total: int) -> int:
    """`num` rounded up to a quarter-octave step (at most 25% more; 385 -> 448), and to
    min(8, ⌈total/16⌉) at least, capped at `total` (small data sets keep their exact count: at
    N = 12, 8 raised individuals would be most of them).

    The extra draws' shapes enter every compiled step of the fit, so each new count of raised
    individuals compiled the L-BFGS loop, the Hessian and the scores anew (about 10 s at N = 10,000,
    in every call). Rounding the count up, with the next-highest k filling the bucket, lets
    fits of similar data reuse those programs; more draws for a few more individuals only
    improves their terms."""
    num = max(num, min(_MIN_BUCKET, -(-total // 16)))  # 8 at least, but never more than N/16 for that
    step = 2 ** max(int(np.floor(np.log2(num))) - 2, 0)
    return min(-(-num // step) * step, total)


def with_extra_draws(posterior, draws: SurrogateDraws, data: Dataset, rows, key, *, max_draws: int) -> SurrogateDraws:
    """`draws` (not yet expanded) with `max_draws - M` extra draws from `posterior` for the
    individuals at `rows` (see [`SurrogateDraws.with_extra`][nlme_ppl.SurrogateDraws.with_extra])."""
    values = posterior.sample(data.subset(rows), key, num_draws=max_draws - draws.num_draws)
    return draws.with_extra(values, rows, posterior.model)
