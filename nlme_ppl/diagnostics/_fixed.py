"""Parameters without random effect whose individual posteriors barely narrow the training prior.

A parameter without random effect (a `Delta` population site, e.g. a residual error SD) is
estimated from the ratios q(φ | y_i) / p_train(φ) of all individuals together. When each
individual's posterior is nearly the training prior, each ratio is nearly flat, and a small
error of the estimator, the same in every individual, adds up over them. In a Gaussian sketch,
a posterior of SD s under a prior of SD s₀ implies a likelihood whose centre moves by
1 / (1 - s²/s₀²) times any shift of the posterior mean: 2.8 at s/s₀ = 0.8, 8.6 at 0.94.

The posterior may be wide because the data say little, or because the estimator has lost what
they say; [`compare_with_exact`][nlme_ppl.diagnostics.compare_with_exact] tells which, for
tractable models.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np

from ._importance import SurrogateWarning
from ._sbc import _prior_sd

__all__ = ["fixed_parameter_widths", "warn_weak_fixed"]

#: Median posterior SD / training-prior SD above which a fixed parameter is flagged.
WEAK_RATIO = 0.8


def fixed_parameter_widths(population, draws, params: dict, data, model) -> dict[str, float]:
    """Median over individuals of q's posterior SD / the training prior's SD, for each parameter
    that `population` gives no random effect at population parameters `params`."""
    from ..likelihood import fixed_parameters

    names = fixed_parameters(population, draws, params, data)
    if not names:
        return {}
    values = np.asarray(draws.values, np.float64)
    # the prior's own spread serves where its variance is not known in closed form
    prior_sd = _prior_sd(model, np.asarray(model.prior_sample(jax.random.key(0), (4000,)), np.float64))
    sd = values.std(axis=1, ddof=1)
    return {n: float(np.median(sd[:, draws.param_names.index(n)]) / prior_sd[draws.param_names.index(n)]) for n in names}


def warn_weak_fixed(widths: dict[str, float], *, threshold: float = WEAK_RATIO, stacklevel: int = 2) -> None:
    """One [`SurrogateWarning`][nlme_ppl.diagnostics.SurrogateWarning] naming the fixed parameters
    whose median posterior/prior SD ratio exceeds `threshold` (nothing if none does)."""
    weak = {n: r for n, r in widths.items() if r > threshold}
    if not weak:
        return
    shown = ", ".join(f"{n!r} (posterior SD {r:.2f} of the prior's, errors ×{1 / (1 - min(r, 0.999) ** 2):.1f})" for n, r in weak.items())
    warnings.warn(
        f"parameter(s) without random effect whose individual posteriors barely narrow the training prior: "
        f"{shown}. Their population estimate sums many nearly flat likelihood ratios, so a small error of the "
        "estimator, the same in every individual, is multiplied by the factor shown. Check the estimator "
        "against the exact posteriors (nlp.diagnostics.compare_with_exact, tractable models), train it on more "
        "simulations, or give the parameter a random effect or a fixed value.",
        SurrogateWarning,
        stacklevel=stacklevel,
    )
