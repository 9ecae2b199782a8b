"""The responses exp(Kτ) of the sunitinib / SU12662 system to a unit bolus, without cancellation:
a sum of five exponentials in the eigenvalues of K (`_eigen_responses`) and, at short times, a
uniformisation series of non-negative terms (`_series_responses`). Used by
[`sunitinib_concentrations`][nlme_ppl.models.sunitinib.sunitinib_concentrations]; the rate
matrix K and the NONMEM compartment numbering are in `nlme_ppl.models.sunitinib`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_GAP = 1e-7  # eigenvalues of different blocks closer than this (relative) are moved apart
_SERIES_RANGE = 2.0  # the series serves while s·τ ≤ this (s the uniformisation rate)
_SERIES_TERMS = 24  # its truncation error is then below 2^25/25! ≈ 2e-18 of the dose



def _block_roots(b11, b12, b21, b22):
    """Eigenvalues z1, z2 of a 2×2 block [[b11, b12], [b21, b22]] with b12·b21 ≥ 0, and
    `big` = z1 - b22, `small` = z2 - b22, `gap` = z1 - z2, each without cancellation.

    z1 is the root nearer b11: with d = b11 - b22 and S = √(d² + 4·b12·b21), big = (d + sign(d)·S)/2,
    small = -b12·b21 / big, z1 = b11 - small, z2 = b22 + small and gap = sign(d)·S. Real
    roots, distinct unless b12·b21 = 0 and d = 0."""
    d = b11 - b22
    sign = jnp.where(d >= 0, 1.0, -1.0)
    root = jnp.sqrt(d**2 + 4 * b12 * b21)
    big = (d + sign * root) / 2
    small = -b12 * b21 / jnp.where(big == 0, 1.0, big)
    return b11 - small, b22 + small, big, small, sign * root


def _first_free(candidates, others):
    """The first of `candidates` (a list) that is not within a relative `_GAP` of any of `others`.

    Each of `others` excludes at most one candidate (they are a relative 3·_GAP apart), so one
    of five is free against four others."""
    chosen = candidates[-1]
    for c in reversed(candidates):
        free = jnp.ones(jnp.shape(c), bool)
        for o in others:
            free &= jnp.abs(c - o) >= _GAP * jnp.abs(o)
        chosen = jnp.where(free, c, chosen)
    return chosen


def _eigen_responses(K):
    """The five eigenvalues `z` of K and coefficients `c` `(2, 2, 5)` such that, τ after a unit
    bolus into route r (0: depot, 1: sunitinib central), the amount in observed compartment
    a (0: sunitinib central, 1: SU12662 central) is Σ_i c[a, r, i]·exp(z_i·τ).

    The eigenvalues are q = -ka and the roots p1, p2 of the sunitinib block P (compartments
    2, 5) and m1, m2 of the SU12662 block M (3, 4). The Laplace transforms of the responses are

    - sunitinib, IV: G_P(s) = (s - P₂₂) / ((s - p1)(s - p2)) (P₂₂ = -Q25/V5);
    - sunitinib, oral: K₂₁·G_P(s) / (s - q);
    - SU12662, IV: K₃₂·G_P(s)·G_M(s), G_M(s) = (s - M₂₂) / ((s - m1)(s - m2));
    - SU12662, oral: (K₂₁·K₃₂·G_P(s) + K₃₁)·G_M(s) / (s - q),

    (K in 1-based NONMEM indices), and c_i is the residue at z_i: a product of the numerator's
    factors at z_i over Π_{j ≠ i} (z_i - z_j), with no sums but the one of the oral SU12662 input.
    Within a block the roots always differ (the off-diagonal rates are positive) and their
    differences and numerators come without cancellation (`_block_roots`). Across blocks
    eigenvalues may coincide (the response is then ∝ τ·e^{zτ}): where they come within a relative
    `_GAP`, the SU12662 block is scaled, then ka moved, by a relative 3·_GAP·k for the first
    k ∈ {1, ..., 4} that separates them (as if CLM and Q34, or ka, were that much larger), which
    keeps the residues finite and changes the result by a relative amount of that order.
    """
    q = K[..., 0, 0]
    p1, p2, p_big, p_small, p_gap = _block_roots(K[..., 1, 1], K[..., 1, 4], K[..., 4, 1], K[..., 4, 4])
    m1, m2, m_big, m_small, m_gap = _block_roots(K[..., 2, 2], K[..., 2, 3], K[..., 3, 2], K[..., 3, 3])
    # the SU12662 block scaled as a whole (roots, numerators and gap together), so that it stays a 2×2 block
    factors = [1 + 3 * _GAP * k for k in range(5)]
    scale = factors[-1]
    for f in reversed(factors):
        free = jnp.ones(jnp.shape(q), bool)
        for m in (m1, m2):
            for p in (p1, p2):
                free &= jnp.abs(f * m - p) >= _GAP * jnp.abs(p)
        scale = jnp.where(free, f, scale)
    m1, m2, m_big, m_small, m_gap, m22 = (x * scale for x in (m1, m2, m_big, m_small, m_gap, K[..., 3, 3]))
    q = _first_free([q * f for f in factors], (p1, p2, m1, m2))
    # Residues of nearby eigenvalues nearly cancel, so their differences must be those of the very
    # numbers exponentiated: the barrier keeps XLA from recomputing (and fusing) them differently.
    z = list(jax.lax.optimization_barrier((q, p1, p2, m1, m2)))
    diff = [[None] * 5 for _ in range(5)]
    for i in range(5):
        for j in range(i + 1, 5):
            diff[i][j] = {(1, 2): p_gap, (3, 4): m_gap}.get((i, j), z[i] - z[j])
            diff[j][i] = -diff[i][j]
    # numerators at each eigenvalue: z - P₂₂, z - M₂₂ (exact at the block's own roots), (z - p1)(z - p2)
    num_p = [z[0] - K[..., 4, 4], p_big, p_small, z[3] - K[..., 4, 4], z[4] - K[..., 4, 4]]
    num_m = [z[0] - m22, z[1] - m22, z[2] - m22, m_big, m_small]
    quad_p = [diff[i][1] * diff[i][2] if i not in (1, 2) else 0.0 for i in range(5)]
    k21, k31, k32 = K[..., 1, 0], K[..., 2, 0], K[..., 2, 1]

    def residues(numerator, poles):
        """numerator(z_i) / Π_{j ∈ poles, j ≠ i} (z_i - z_j) for i in `poles`, else 0: `(..., 5)`."""
        out = []
        for i in range(5):
            den = 1.0
            for j in poles:
                if j != i:
                    den = den * diff[i][j]
            out.append(jnp.broadcast_to(numerator(i) / den if i in poles else 0.0, jnp.shape(q)))
        return jnp.stack(out, axis=-1)

    parent_iv = residues(lambda i: num_p[i], (1, 2))
    parent_oral = residues(lambda i: k21 * num_p[i], (0, 1, 2))
    metab_iv = residues(lambda i: k32 * num_p[i] * num_m[i], (1, 2, 3, 4))
    metab_oral = residues(lambda i: (k21 * k32 * num_p[i] + k31 * quad_p[i]) * num_m[i], (0, 1, 2, 3, 4))
    c = jnp.stack([jnp.stack([parent_oral, parent_iv], -2), jnp.stack([metab_oral, metab_iv], -2)], -3)
    return jnp.stack(z, axis=-1), c


def _series_responses(K):
    """The uniformisation rate s = max_i |K_ii| and coefficients `b` `(2, 2, N + 1)` such that
    the responses of `_eigen_responses` are e^{-sτ}·Σ_k b[a, r, k]·τ^k, truncated at
    N = `_SERIES_TERMS` (b_k = [(K + sI)^k]_{a,r} / k!).

    K + sI is non-negative (K is a Metzler matrix), so every term is non-negative and the sum
    has no cancellation: it is accurate to a few ulp entrywise, even where a response is tiny,
    and it does not involve the eigenvalues. Its columns sum to at most s (mass is only lost),
    so the truncation error is below (sτ)^{N+1}/(N+1)! of the dose (2e-18 for sτ ≤
    `_SERIES_RANGE` = 2, where it serves)."""
    s = jnp.max(-jnp.diagonal(K, axis1=-2, axis2=-1), axis=-1)
    M = K + s[..., None, None] * jnp.eye(5)
    v = jnp.broadcast_to(jnp.eye(5)[:, :2], M.shape[:-1] + (2,))  # columns e_1, e_2: depot, sunitinib central

    def step(v, k):
        v = M @ v / k
        return v, v[..., 1:3, :]  # rows: sunitinib central, SU12662 central

    _, b = jax.lax.scan(step, v, jnp.arange(1.0, _SERIES_TERMS + 1))
    b = jnp.concatenate([v[None, ..., 1:3, :], b], axis=0)
    return s, jnp.moveaxis(b, 0, -1)
