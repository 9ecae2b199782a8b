"""Single-cell mRNA transfection models (Fröhlich et al. 2018; Arruda et al. 2024, Suppl. A.1)."""

from __future__ import annotations

import diffrax
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import lineax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optimistix
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from ._individual import IndividualModel
from ._prior import with_prior

__all__ = [
    "FROHLICH_DETAILED_PRIOR",
    "FROHLICH_SIMPLE_PRIOR",
    "frohlich_detailed",
    "frohlich_detailed_solution",
    "frohlich_simple",
    "frohlich_simple_solution",
]

#: Training prior of `frohlich_simple`: name -> (mean, variance), all on log scale.
FROHLICH_SIMPLE_PRIOR = {
    "delta": (-3.0, 5.0),
    "gamma": (-3.0, 5.0),
    "k_m0_scale": (5.0, 11.0),
    "t0": (0.0, 2.0),
    "offset": (0.0, 6.0),
    "sigma": (-1.0, 2.0),
}

#: Observation times of the experiment: every 10 minutes from 10 min to 30 h (180 points).
FROHLICH_TIMES = np.arange(1, 181) / 6.0


def _one_minus_exp_over_x(x):
    """(1 - e^{-x}) / x for x >= 0, accurate at x -> 0 (value 1) and safe under autodiff."""
    small = x < 1e-4
    x_safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 - x / 2.0 + x * x / 6.0, -jnp.expm1(-x_safe) / x_safe)


def bateman(tau, a, b):
    """(e^{-b τ} - e^{-a τ}) / (a - b) for τ >= 0, written as τ e^{-min(a,b) τ} (1 - e^{-|a-b| τ}) / (|a-b| τ):
    symmetric in (a, b), finite at a = b (τ e^{-a τ}), free of overflow. The two-state transfection
    model and first-order absorption (`models.pk`) share it."""
    return tau * jnp.exp(-jnp.minimum(a, b) * tau) * _one_minus_exp_over_x(jnp.abs(a - b) * tau)


def frohlich_simple_solution(
    times: Float[Array, " T"], delta, gamma, k_m0_scale, t0
) -> Float[Array, " T"]:
    """Protein level p(t) of the two-state model, on the natural scale.

    dm/dt = -δ m, dp/dt = k m - γ p, with m(t0) = 1, p(t0) = 0, k = `k_m0_scale`; p = 0 before t0.
    For τ = t - t0 > 0, p = k/(δ-γ) (e^{-γτ} - e^{-δτ}) = k τ e^{-min(δ,γ)τ} (1-e^{-|δ-γ|τ})/(|δ-γ|τ),
    which is the form used here: symmetric in (δ, γ), finite at δ = γ, and free of overflow.
    """
    return k_m0_scale * bateman(jnp.maximum(times - t0, 0.0), delta, gamma)


def sample_prior(prior: dict[str, tuple[float, float]]) -> dict:
    """One `Normal(mean, √variance)` sample site per entry of `prior` (name -> (mean, variance))."""
    return {name: numpyro.sample(name, dist.Normal(mean, float(np.sqrt(var)))) for name, (mean, var) in prior.items()}


def _frohlich_simple_program(design, obs=None):
    p = sample_prior(FROHLICH_SIMPLE_PRIOR)
    protein = frohlich_simple_solution(
        design["times"], jnp.exp(p["delta"]), jnp.exp(p["gamma"]), jnp.exp(p["k_m0_scale"]), jnp.exp(p["t0"])
    )
    mu = jnp.log(protein + jnp.exp(p["offset"]))
    numpyro.sample("obs", dist.Normal(mu, jnp.exp(p["sigma"])).mask(design["mask"]).to_event(1), obs=obs)


def frohlich_simple(times=None, *, prior=None) -> IndividualModel:
    """The simple mRNA-transfection model (Fröhlich et al. 2018; Arruda et al. 2024, A.1).

    Individual parameters, all on the log scale: `delta` (mRNA degradation, 1/h), `gamma`
    (protein degradation, 1/h), `k_m0_scale` (translation rate × initial mRNA), `t0`
    (transfection time, h), `offset` (background fluorescence), `sigma` (noise SD).

    Observations: y(t) = log(p(t) + offset) + sigma·ε at t = 1/6, 2/6, …, 30 h.

    δ and γ enter the solution symmetrically, so individual posteriors are bimodal; the model
    declares them `exchangeable`, so estimators learn the sorted pair and sample both modes
    exactly by symmetry. Population
    inference tells the two apart only through prior knowledge (mRNA usually decays faster
    than protein), e.g. priors on `mean[delta]` and `mean[gamma]` in
    [`populations.gaussian`][nlme_ppl.populations.gaussian].

    Training prior: `prior={name: (mean, sd)}` (log scale) replaces those parameters' training priors by
    `Normal(mean, sd)` ([`with_prior`][nlme_ppl.models.with_prior]); the fingerprint changes with it.
    """
    t = FROHLICH_TIMES if times is None else np.asarray(times, float)
    return with_prior(IndividualModel(
        _frohlich_simple_program,
        {"times": t},
        name="frohlich_simple",
        description="Fröhlich et al. (2018) two-state mRNA transfection model, closed form.",
        exchangeable=(("delta", "gamma"),),
    ), prior)


# ----------------------------------------------------------------------------- detailed model
#: Training prior of `frohlich_detailed`: name -> (mean, variance), all on log scale
#: (Arruda et al. 2024, Suppl. A.1; the variance of `k2_m0_scale` is 1, as there).
FROHLICH_DETAILED_PRIOR = {
    "delta1_m0": (-1.0, 5.0),
    "delta2": (-1.0, 5.0),
    "e0_m0": (-1.0, 2.0),
    "k2_m0_scale": (12.0, 1.0),
    "k2": (-1.0, 2.0),
    "k1_m0": (1.0, 2.0),
    "r0_m0": (-1.0, 2.0),
    "gamma": (-6.0, 5.0),
    "t0": (0.0, 2.0),
    "offset": (0.0, 5.0),
    "sigma": (-1.0, 2.0),
}


def _detailed_rhs(t, x, a):
    d1, d2, e0, k2s, k2, k1, r0, g = a
    m, e, r, p = x[0], x[1], x[2], x[3]
    bound = r0 - r  # ribosomes bound to mRNA
    degrade = d1 * m * e  # enzymatic mRNA degradation
    return jnp.stack([
        -degrade - k1 * m * r + k2 * bound,
        -degrade + d2 * (e0 - e),
        k2 * bound - k1 * m * r,
        k2s * bound - g * p,
    ])


def _lu_factor_unrolled(a):
    """LU factors (unit-lower L below the diagonal, U on and above) and row order of a small
    square matrix by Gaussian elimination with partial pivoting, unrolled over its static size."""
    n = a.shape[0]
    perm = jnp.arange(n)
    for k in range(n - 1):
        i = k + jnp.argmax(jnp.abs(a[k:, k]))
        row_k, row_i = a[k], a[i]
        a = a.at[k].set(row_i).at[i].set(row_k)
        perm_k, perm_i = perm[k], perm[i]
        perm = perm.at[k].set(perm_i).at[i].set(perm_k)
        col = a[k + 1:, k] / a[k, k]
        a = a.at[k + 1:, k].set(col).at[k + 1:, k + 1:].add(-col[:, None] * a[k, k + 1:][None, :])
    return a, perm


def _lu_solve_unrolled(lu, perm, b, transpose: bool):
    """Solve A x = b (or Aᵀ x = b) from the factors of `_lu_factor_unrolled` (P A = L U)."""
    n = lu.shape[0]
    if not transpose:  # L U x = P b
        y = b[perm]
        for i in range(1, n):
            y = y.at[i].add(-jnp.dot(lu[i, :i], y[:i]))
        for i in reversed(range(n)):
            y = y.at[i].set((y[i] - jnp.dot(lu[i, i + 1:], y[i + 1:])) / lu[i, i])
        return y
    z = b  # Uᵀ Lᵀ (P x) = b
    for i in range(n):
        z = z.at[i].set((z[i] - jnp.dot(lu[:i, i], z[:i])) / lu[i, i])
    for i in reversed(range(n - 1)):
        z = z.at[i].add(-jnp.dot(lu[i + 1:, i], z[i + 1:]))
    return jnp.zeros_like(z).at[perm].set(z)


class _SmallLU(lineax.AbstractLinearSolver):
    """Dense LU with partial pivoting for the 4×4 Newton systems of the implicit stages.

    The same factorisation as `lineax.LU`, written as unrolled element-wise arithmetic: under
    `vmap` it runs as a few vector operations over the batch, where the LAPACK-backed
    `lineax.LU` factors and solves one small matrix at a time (on CPU, 2,000 simulations per
    chunk: the Newton solves were about a third of the whole solve)."""

    def init(self, operator, options):
        del options
        if operator.in_structure() != operator.out_structure():
            raise ValueError("`_SmallLU` solves square systems whose input and output share one structure.")
        lu, perm = _lu_factor_unrolled(operator.as_matrix())
        return lu, perm, eqxi.Static(False)

    def compute(self, state, vector, options):
        del options
        lu, perm, transpose = state
        flat, unravel = ravel_pytree(vector)
        return unravel(_lu_solve_unrolled(lu, perm, flat, transpose.value)), lineax.RESULTS.successful, {}

    def transpose(self, state, options):
        lu, perm, transpose = state
        return (lu, perm, eqxi.Static(not transpose.value)), {}

    def conj(self, state, options):
        lu, perm, transpose = state
        return (lu.conj(), perm, transpose), {}

    def assume_full_rank(self):
        return True


class _FlooredVeryChord(diffrax.VeryChord):
    """`diffrax.VeryChord` that also accepts a stage once its scaled Newton update is below
    `floor` (in units of the tolerance; diffrax's own cut-off is 1e-13).

    Near a steady state the updates after the first are round-off (the protein rate
    k2·scale·(r0 - r) carries ~1e-16·k2·scale·r0 of it, with k2·scale ~ 1e5), their ratio is
    noise, and VeryChord reads a ratio > 2 as divergence: the step is rejected and, on a capped step, again and again (one draw of
    20,000 took 1,097 steps, 470 rejected, and held its whole batch in lockstep). An update
    `floor` = 1e-4 of the tolerance, 1000× below `kappa`, changes nothing the error control
    resolves; 1e-6 to 1e-3 gave identical step counts on 20,000 prior draws."""

    floor: float = 1e-4

    def terminate(self, fn, y, args, options, state, tags):
        terminate, result = super().terminate(fn, y, args, options, state, tags)
        settled = (state.step >= 2) & (state.diffsize < self.floor) & (state.result == optimistix.RESULTS.successful)
        return terminate | settled, optimistix.RESULTS.where(settled, optimistix.RESULTS.successful, result)


def frohlich_detailed_solution(
    times: Float[Array, " T"], delta1_m0, delta2, e0_m0, k2_m0_scale, k2, k1_m0, r0_m0, gamma, t0,
    *, rtol: float = 1e-4, atol: float = 1e-6, max_steps: int = 4096, dtmax: float | None = 0.25,
) -> Float[Array, " T"]:
    """Protein level p(t) of the four-state model (natural scale; 0 before t0, NaN if the solve fails).

    With m the mRNA (scaled by the initial amount m0), e the free degradation enzyme, r the
    free ribosomes and p the protein, from t0 with m = 1, e = e0, r = r0, p = 0:

        dm/dt = -δ1 m e - k1 m r + k2 (r0 - r)
        de/dt = -δ1 m e + δ2 (e0 - e)
        dr/dt =  k2 (r0 - r) - k1 m r
        dp/dt =  k2·scale (r0 - r) - γ p

    Solved by diffrax's L-stable ESDIRK `Kvaerno3` (the system is stiff over the prior: rates
    reach hundreds per hour over a 30 h horizon) with an adaptive step (`rtol`, `atol`) of at
    most `dtmax` hours (default 15 minutes; on a horizon longer than `max_steps` / 4 such
    steps, horizon / (`max_steps` / 4)); `dtmax=None` lifts the cap.
    `times` need not be sorted where padded: the solve saves at their running maximum.

    Tuned for simulating in batches (`vmap`, `nlp.simulate`), where the adaptive steps of a
    batch run in lockstep, so the cost is the batch's slowest member times the cost of a step:
    the step cap keeps each step's save loop to one or two save times, and the cubic dense
    output off long steps (which also lowers the worst error); the Newton iterations of the
    implicit stages stop at `kappa = 0.1` (diffrax: 0.01) and accept a round-off-sized update
    (`_FlooredVeryChord`), so the stiffest draws reject fewer steps; their 4×4 linear systems
    are solved by an unrolled LU (`_SmallLU`); and only p is saved. On CPU that is about 2.5×
    the simulations per second of the plain `Kvaerno3` solve at the same `rtol` and `atol`.
    """
    dtype = jnp.result_type(float)
    times = jnp.asarray(times, dtype)
    args = tuple(jnp.asarray(a, dtype) for a in (delta1_m0, delta2, e0_m0, k2_m0_scale, k2, k1_m0, r0_m0, gamma))
    t0 = jnp.asarray(t0, dtype)
    ts = jax.lax.cummax(jnp.maximum(times, t0))  # non-decreasing save times in [t0, t1]
    t1 = ts[-1] + 1e-3
    x0 = jnp.stack([jnp.ones((), dtype), args[2], args[6], jnp.zeros((), dtype)])
    if dtmax is not None:  # on long horizons the cap may take at most a quarter of `max_steps`
        dtmax = jnp.maximum(dtmax, 4.0 * (t1 - t0) / max_steps)
    newton = diffrax.with_stepsize_controller_tols(_FlooredVeryChord)(kappa=0.1, linear_solver=_SmallLU())
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_detailed_rhs), diffrax.Kvaerno3(root_finder=newton), t0, t1, None, x0, args,
        saveat=diffrax.SaveAt(ts=ts, fn=lambda t, x, a: x[3]),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, dtmax=dtmax),
        max_steps=max_steps, throw=False,
    )
    ok = sol.result == diffrax.RESULTS.successful
    p = jnp.where(times > t0, sol.ys, 0.0)
    return jnp.where(ok, p, jnp.nan)


def _frohlich_detailed_program(design, obs=None):
    p = sample_prior(FROHLICH_DETAILED_PRIOR)
    kinetic = [jnp.exp(p[n]) for n in list(FROHLICH_DETAILED_PRIOR)[:9]]
    protein = frohlich_detailed_solution(design["times"], *kinetic)
    # a stiff solve can undershoot zero by a rounding error; the observable needs p + offset > 0
    mu = jnp.log(jnp.maximum(protein, 0.0) + jnp.exp(p["offset"]))
    numpyro.sample("obs", dist.Normal(mu, jnp.exp(p["sigma"])).mask(design["mask"]).to_event(1), obs=obs)


def frohlich_detailed(times=None, *, prior=None) -> IndividualModel:
    """The detailed mRNA-transfection model (Fröhlich et al. 2018; Arruda et al. 2024, A.1):
    four states (mRNA m, degradation enzyme e, ribosomes r, protein p), ten kinetic
    parameters and the noise SD, all on the log scale.

    Parameters: `delta1_m0` (enzymatic mRNA degradation × m0), `delta2` (enzyme recovery),
    `e0_m0` and `r0_m0` (initial enzyme and ribosomes relative to m0), `k2_m0_scale`
    (translation × m0 × measurement scale), `k2` (ribosome release), `k1_m0` (ribosome
    binding × m0), `gamma` (protein degradation), `t0` (transfection time, h), `offset`
    (background), `sigma` (noise SD). Observations: y(t) = log(p(t) + offset) + sigma·ε at
    t = 1/6, 2/6, …, 30 h. See [`frohlich_detailed_solution`][nlme_ppl.models.frohlich.frohlich_detailed_solution] for the equations.

    The enzyme equation follows mass action: degrading mRNA occupies enzyme (de/dt = -δ1 m e
    + δ2 (e0 - e)). The published reference simulator has the opposite sign on both terms,
    under which e grows without bound from e0; that is not a model of an enzyme pool, so it
    is not reproduced here.

    Training prior: `prior={name: (mean, sd)}` (log scale) replaces those parameters' training priors by
    `Normal(mean, sd)` ([`with_prior`][nlme_ppl.models.with_prior]); the fingerprint changes with it.
    """
    t = FROHLICH_TIMES if times is None else np.asarray(times, float)
    return with_prior(IndividualModel(
        _frohlich_detailed_program,
        {"times": t},
        name="frohlich_detailed",
        description="Fröhlich et al. (2018) four-state mRNA transfection model, stiff ODE (diffrax Kvaerno3).",
        simulation_chunk=2_000,  # lockstep adaptive steps under vmap: 1.2-1.6x faster than 10,000 here
    ), prior)
