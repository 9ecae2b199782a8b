"""The NUTS runner shared by `fit_nuts` (surrogate) and `fit_exact_nuts` (exact model)."""

from __future__ import annotations

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS, init_to_median, init_to_value

__all__ = ["run_nuts"]

_EXTRA = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy", "adapt_state.step_size")


# ----------------------------------------------------------------------------- shared NUTS runner
def run_nuts(fn, key, *args, init, num_chains, num_warmup, num_samples, target_accept_prob, chain_method, progress, **kwargs):
    """Run NumPyro NUTS on the program `fn(*args, **kwargs)`.

    Chains start at `init` (site values by name; sites it lacks start from NumPyro's
    `init_to_uniform`), or at `init_to_median` when `init` is empty. `chain_method=None` means
    `"parallel"` when JAX has at least `num_chains` devices, else `"sequential"`.

    **Returns:** `(samples, sample_stats, chain_method)`: NumPy arrays shaped `(chain, draw, ...)`
    by site name, the ArviZ sample statistics (`diverging`, `n_steps`, `acceptance_rate`,
    `energy`, `lp`, `step_size`), and the chain method used.
    """
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    strategy = init_to_value(values=dict(init)) if init else init_to_median
    kernel = NUTS(fn, init_strategy=strategy, target_accept_prob=target_accept_prob)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains, chain_method=chain_method, progress_bar=progress)
    mcmc.run(key, *args, extra_fields=_EXTRA, **kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {
        "diverging": extra["diverging"],
        "n_steps": extra["num_steps"],
        "acceptance_rate": extra["accept_prob"],
        "energy": extra["energy"],
        "lp": -np.asarray(extra["potential_energy"]),
        "step_size": extra["adapt_state.step_size"],
    }
    return {k: np.asarray(v) for k, v in samples.items()}, {k: np.asarray(v) for k, v in stats.items()}, chain_method
