"""A torch simulator through `nlp.simulate(..., simulator=torch_simulator(...), client=)`: the
same simulations on a dask cluster (two in-process workers) as here, for any chunking, and
observations that follow the JAX program's closed form."""

import jax
import numpy as np
import pytest

import nlme_ppl as nlp

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("distributed", reason="the dask tests need `pip install -e '.[dev]'` (dask[distributed])")
from nlme_ppl.backends.sbi import TORCH_SIMULATORS, torch_simulator  # noqa: E402
from nlme_ppl.models.pk import one_compartment_concentration  # noqa: E402

KEY = jax.random.key(11)


def test_a_torch_simulator_on_a_cluster_gives_the_local_simulations():
    model = nlp.models.pk_oral_1cmt()
    sim = torch_simulator(TORCH_SIMULATORS["pk_oral_1cmt"])
    assert sim.__name__ == TORCH_SIMULATORS["pk_oral_1cmt"].__name__
    local = nlp.simulate(model, KEY, num_simulations=300, simulator=sim, block_size=100, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        for chunk in (100, 250):
            remote = nlp.simulate(model, KEY, num_simulations=300, simulator=sim, block_size=100, chunk_size=chunk,
                                  progress=False, client=client)
            for x, y in [(local.params, remote.params), (local.data.values, remote.data.values),
                         (local.data.times, remote.data.times), (local.data.doses.amounts, remote.data.doses.amounts)]:
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the observations are the closed form plus N(0, sigma_add^2) noise, independent between blocks
    d = local.data
    phi = np.asarray(local.params, np.float64)
    conc = np.asarray(jax.vmap(one_compartment_concentration)(
        d.times, d.doses.times, d.doses.amounts, d.doses.rates, d.doses.cmt, d.doses.mask, *np.exp(phi[:, :3]).T))
    z = (np.asarray(d.values) - conc) / np.exp(phi[:, 3:4])
    z = z[np.asarray(d.mask)]
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 0.05
    first, second = z[: z.size // 3], z[z.size // 3 : 2 * (z.size // 3)]
    assert abs(np.corrcoef(first, second)[0, 1]) < 5 / np.sqrt(first.size)


def test_torch_simulator_refuses_what_is_not_callable():
    with pytest.raises(TypeError, match="must be a torch simulator"):
        torch_simulator("pk_oral_1cmt")
