"""The torch simulators against the JAX programs: the same closed form (PK) and the same
distribution of observations (SDE), within Monte Carlo error."""

import jax
import numpy as np
import pytest

import nlme_ppl as nlp

torch = pytest.importorskip("torch")
from nlme_ppl.backends.sbi import TORCH_SIMULATORS, simulate_torch  # noqa: E402
from nlme_ppl.backends.sbi.simulators import one_compartment_concentration_torch  # noqa: E402
from nlme_ppl.models.pk import one_compartment_concentration  # noqa: E402


def _torch_design(designs):
    return {k: torch.tensor(np.asarray(v)) for k, v in designs.items()}


def test_pk_closed_form_matches_jax_and_noise_is_independent():
    m = nlp.models.pk_oral_1cmt()
    n = 2000
    designs = m.sample_designs(jax.random.key(0), n)
    phi = np.asarray(m.prior_sample(jax.random.key(1), (n,)))
    jax_c = np.asarray(jax.vmap(one_compartment_concentration)(
        designs["times"], designs["dose_times"], designs["dose_amounts"], designs["dose_rates"], designs["dose_cmt"],
        designs["dose_mask"], *np.exp(phi[:, :3]).T))
    p = torch.tensor(np.exp(phi))
    torch_c = one_compartment_concentration_torch(_torch_design(designs), p[:, 0:1], p[:, 1:2], p[:, 2:3]).numpy()
    mask = np.asarray(designs["mask"])
    np.testing.assert_allclose(torch_c[mask], jax_c[mask], rtol=1e-10, atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    y = TORCH_SIMULATORS["pk_oral_1cmt"](torch.tensor(phi), _torch_design(designs), gen).numpy()
    z = ((y - jax_c) / np.exp(phi[:, 3:4]))[mask]  # standardised residuals: N(0, 1), independent
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.std() - 1) < 4 / np.sqrt(2 * z.size)
    y2 = TORCH_SIMULATORS["pk_oral_1cmt"](torch.tensor(phi), _torch_design(designs), gen).numpy()
    z2 = ((y2 - jax_c) / np.exp(phi[:, 3:4]))[mask]
    assert abs(np.corrcoef(z, z2)[0, 1]) < 4 / np.sqrt(z.size)  # a second call draws new noise


def test_sde_matches_jax_in_distribution():
    """Mean and the 10/50/90 % quantiles of y at six times, 2,000 paths from each simulator, one
    parameter vector: the torch values' ECDF at the JAX quantiles is p within 4 Monte Carlo SEs,
    and the means differ by less than 4 SEs."""
    m = nlp.models.frohlich_sde()
    n = 2000
    phi = np.array([-1.0, -3.0, 0.5, 3.0, 0.0, -0.5, 1.0, -3.0])  # delta, gamma, k, m0 (20 copies), scale, t0, offset, sigma
    params = np.tile(phi, (n, 1))
    designs = m.sample_designs(jax.random.key(0), n)
    y_jax = np.asarray(nlp.simulate_data(m, params, jax.random.key(1), designs=designs).values)
    y_torch = TORCH_SIMULATORS["frohlich_sde"](torch.tensor(params), _torch_design(designs), torch.Generator().manual_seed(2)).numpy()
    cols = [6, 18, 36, 72, 120, 179]
    for c in cols:
        a, b = y_jax[:, c], y_torch[:, c]
        se = np.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 4 * se, (c, a.mean(), b.mean(), se)
        for q in (0.1, 0.5, 0.9):
            frac = np.mean(b <= np.quantile(a, q))
            assert abs(frac - q) < 4 * np.sqrt(2 * q * (1 - q) / n), (c, q, frac)
    assert np.std(y_torch[:, 120]) > 0.05  # paths differ: each simulation has its own noise


def test_simulate_torch_gives_a_dataset_like_nlp_simulate():
    m = nlp.models.pk_oral_1cmt()
    sims = simulate_torch(m, jax.random.key(0), num_simulations=500)
    ref = nlp.simulate(m, jax.random.key(0), num_simulations=500, progress=False)
    assert sims.params.shape == ref.params.shape and sims.data.doses is not None and sims.num_dropped == 0
    assert sims.data.times.shape[1] == ref.data.times.shape[1] and sims.data.doses.mask.shape == ref.data.doses.mask.shape
    with pytest.raises(ValueError, match="no torch simulator for model 'frohlich_simple'"):
        simulate_torch(nlp.models.frohlich_simple(), jax.random.key(0), num_simulations=10)
