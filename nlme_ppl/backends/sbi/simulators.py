"""Torch simulators of built-in models: the same parameters, priors, designs and observations
as the JAX programs, vectorised over a batch, with independent noise per simulation.

A torch simulator is `(params, design, generator) -> obs`: `params` `(n, k)` float64 in the
model's `param_names` order (log scale), `design` a dict of `(n, ...)` tensors with the keys of
the model's design (as `model.sample_designs` gives them), `generator` a `torch.Generator`;
it returns the `(n, T)` observations. [`TORCH_SIMULATORS`][nlme_ppl.backends.sbi.TORCH_SIMULATORS]
lists them by model name; `nlp.train(model, key, backend="sbi")` uses the one of its model.
[`torch_simulator`][nlme_ppl.backends.sbi.torch_simulator] makes one a `simulator` of
`nlp.simulate` (which runs it locally or, with `client=`, on a dask cluster).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ...data import CENTRAL
from ...models.pk import _SD_FLOOR
from ._torch import torch

__all__ = ["TORCH_SIMULATORS", "frohlich_sde_torch", "pk_oral_1cmt_torch", "torch_prior", "torch_simulator"]


def torch_prior(model):
    """The training prior of `model` as a torch distribution (independent Normals), for sbi."""
    spec = model.prior_spec()
    if any(s["dist"] != "Normal" for s in spec.values()):
        raise ValueError(f"the sbi backend needs independent Normal training priors; model {model.name!r} has {spec}.")
    loc = torch.tensor([spec[n]["loc"] for n in model.param_names], dtype=torch.float32)
    scale = torch.tensor([spec[n]["scale"] for n in model.param_names], dtype=torch.float32)
    return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)


def torch_simulator(fn: Callable) -> Callable:
    """A torch simulator `fn(params, design, generator) -> obs` as a `simulator` of
    [`nlp.simulate`][nlme_ppl.simulate]: `(params, design, rng) -> obs` on NumPy arrays.

    Each call converts `params` (float64) and the design entries to tensors, seeds a
    `torch.Generator` from the `numpy.random.Generator` that `simulate` gives the block, runs
    `fn` without gradients, and returns the observations as a NumPy array. So

        nlp.simulate(model, key, num_simulations=100_000,
                     simulator=torch_simulator(TORCH_SIMULATORS[model.name]), client=client)

    gives the same simulations on a dask cluster as here (the workers need `nlme_ppl[sbi]`).
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be a torch simulator `(params, design, generator) -> obs`; got {type(fn).__name__}.")
    return functools.update_wrapper(functools.partial(_call_torch, fn), fn)


def _call_torch(fn: Callable, params: np.ndarray, design: dict, rng: np.random.Generator) -> np.ndarray:
    generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    with torch.no_grad():
        out = fn(torch.as_tensor(params, dtype=torch.float64), {k: torch.as_tensor(v) for k, v in design.items()}, generator)
    return out.detach().cpu().numpy()


# ---------------------------------------------------------------- frohlich_sde


def frohlich_sde_torch(params, design: dict, generator, *, dt: float = 0.01):
    """`frohlich_sde` in torch: the chemical Langevin equation of (m, p) by Euler–Maruyama with
    step `dt` from m(t0) = m0, p(t0) = 0, the state truncated at 0 in the drift and diffusion,
    values at the observation times interpolated linearly between steps (as diffrax's `Euler`
    does), and y = log(scale·p + offset) + sigma·ε."""
    p = torch.exp(params)
    delta, gamma, k, m0, scale, t0, offset, sigma = (p[:, i : i + 1] for i in range(8))
    times = design["times"].to(params.dtype)
    tau = torch.cummax(torch.clamp(times - t0, min=0.0), dim=1).values  # time since transfection
    steps = int(np.ceil(float(tau.max()) / dt)) + 1
    j = torch.clamp(torch.floor(tau / dt).long(), max=steps - 1)  # the step whose interval holds tau
    w = tau / dt - j
    n = params.shape[0]
    m, prot = m0[:, 0].clone(), torch.zeros(n, dtype=params.dtype)
    path = torch.empty((n, steps + 1), dtype=params.dtype)  # p at every step, for the interpolation
    path[:, 0] = 0.0
    sq = float(np.sqrt(dt))
    d, g, kk = delta[:, 0], gamma[:, 0], k[:, 0]
    for step in range(steps):
        mp, pp = torch.clamp(m, min=0.0), torch.clamp(prot, min=0.0)
        dw = torch.randn((2, n), generator=generator, dtype=params.dtype) * sq
        m = m - d * mp * dt + torch.sqrt(d * mp) * dw[0]
        prot = prot + (kk * mp - g * pp) * dt + torch.sqrt(kk * mp + g * pp) * dw[1]
        path[:, step + 1] = prot
    out = (1 - w) * path.gather(1, j) + w * path.gather(1, j + 1)
    protein = torch.where(times > t0, torch.clamp(out, min=0.0), torch.zeros_like(out))
    mu = torch.log(scale * protein + offset)
    return mu + sigma * torch.randn(mu.shape, generator=generator, dtype=params.dtype)


# ---------------------------------------------------------------- pk_oral_1cmt


def _bateman(tau, a, b):
    """(e^{-b τ} - e^{-a τ}) / (a - b), finite at a = b (as `nlme_ppl.models.frohlich.bateman`)."""
    x = torch.abs(a - b) * tau
    small = x < 1e-4
    x_safe = torch.where(small, torch.ones_like(x), x)
    ratio = torch.where(small, 1.0 - x / 2.0 + x * x / 6.0, -torch.expm1(-x_safe) / x_safe)
    return tau * torch.exp(-torch.minimum(a, b) * tau) * ratio


def one_compartment_concentration_torch(design: dict, ka, CL, V):
    """`nlme_ppl.models.pk.one_compartment_concentration` in torch, batched: `(n, T)` concentrations
    of oral boluses, IV boluses and central infusions by superposition (parameters `(n, 1)`)."""
    times, dt_ = design["times"], design["dose_times"]
    amount, rate, cmt, dmask = design["dose_amounts"], design["dose_rates"], design["dose_cmt"], design["dose_mask"]
    ke = (CL / V)[:, :, None]
    ka, V3, CL3 = ka[:, :, None], V[:, :, None], CL[:, :, None]
    tau = times[:, :, None] - dt_[:, None, :]
    pos = tau > 0
    tau = torch.where(pos, tau, torch.zeros_like(tau))
    amount, rate = amount[:, None, :], rate[:, None, :]
    duration = amount / torch.where(rate > 0, rate, torch.ones_like(rate))
    oral = amount * ka / V3 * _bateman(tau, ka, ke)
    iv = amount / V3 * torch.exp(-ke * tau)
    infusion = rate / CL3 * -torch.expm1(-ke * torch.minimum(tau, duration)) * torch.exp(-ke * torch.clamp(tau - duration, min=0.0))
    central = torch.where(rate > 0, infusion, iv)
    depot = torch.where(rate > 0, torch.full_like(oral, float("nan")), oral)
    term = torch.where(cmt[:, None, :] == CENTRAL, central, depot)
    return torch.sum(torch.where(pos & dmask[:, None, :], term, torch.zeros_like(term)), dim=2)


def _pk_1cmt(error: str):
    def simulate(params, design: dict, generator):
        p = torch.exp(params)
        conc = one_compartment_concentration_torch(design, p[:, 0:1], p[:, 1:2], p[:, 2:3])
        var = torch.zeros_like(conc)
        if error in ("additive", "combined"):
            var = var + p[:, 3:4] ** 2
        if error in ("proportional", "combined"):
            b = p[:, 4:5] if error == "combined" else p[:, 3:4]
            var = var + (b * conc) ** 2
        sd = torch.sqrt(var + _SD_FLOOR**2) if error == "proportional" else torch.sqrt(var)  # the JAX model's floor
        return conc + sd * torch.randn(conc.shape, generator=generator, dtype=params.dtype)

    simulate.__name__ = simulate.__qualname__ = f"pk_oral_1cmt_torch_{error}"
    simulate.__doc__ = f"`pk_oral_1cmt(error={error!r})` in torch: the closed form with superposition over doses, plus the error."
    return simulate


pk_oral_1cmt_torch = _pk_1cmt("additive")

#: Torch simulators by built-in model name.
TORCH_SIMULATORS: dict[str, Callable] = {
    "frohlich_sde": frohlich_sde_torch,
    "pk_oral_1cmt": pk_oral_1cmt_torch,
    "pk_oral_1cmt_proportional": _pk_1cmt("proportional"),
    "pk_oral_1cmt_combined": _pk_1cmt("combined"),
}
