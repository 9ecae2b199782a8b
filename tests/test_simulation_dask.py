"""`nlp.simulate(..., client=)`: simulation on a dask cluster gives the simulations of a local run.

The cluster is a `LocalCluster` of in-process workers (two threads, started once per module);
one slow test starts worker processes, so that the tasks really travel through cloudpickle.
"""

import os

import jax
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.simulation import _NOISE

distributed = pytest.importorskip("distributed", reason="the dask tests need `pip install -e '.[dev]'` (dask[distributed])")

KEY = jax.random.key(7)


@pytest.fixture(scope="module")
def model():
    return nlp.models.pk_oral_1cmt()


def _cluster(n_workers, *, processes=False):
    return distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=processes, dashboard_address=":0", silence_logs=40
    )


@pytest.fixture(scope="module")
def client():
    with _cluster(2) as cluster, distributed.Client(cluster) as c:
        yield c


def decay(params, design, rng):
    """A NumPy simulator: exponential decay from V, rate CL/V, additive noise."""
    p = np.exp(params)
    t = design["times"]
    return 100 / p[:, 2:3] * np.exp(-p[:, 1:2] / p[:, 2:3] * t) + p[:, 3:4] * rng.standard_normal(t.shape)


def _same(a, b):
    """Bit-identical simulations: parameters, observations, times, mask and doses."""
    assert len(a) == len(b) and a.num_dropped == b.num_dropped
    for x, y in [(a.params, b.params), (a.data.values, b.data.values), (a.data.times, b.data.times),
                 (a.data.mask, b.data.mask), (a.data.doses.amounts, b.data.doses.amounts)]:
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_the_program_on_a_cluster_gives_the_local_simulations(model, client):
    local = nlp.simulate(model, KEY, num_simulations=256, chunk_size=128, progress=False)
    remote = nlp.simulate(model, KEY, num_simulations=256, chunk_size=128, progress=False, client=client)
    _same(local, remote)
    assert np.std(np.asarray(local.data.values)[np.asarray(local.data.mask)]) > 0.1


def test_workers_simulate_in_the_precision_of_the_caller(model, client):
    """JAX's precision is per thread: a caller in the other precision than the workers' gets
    its own simulations from them, not the workers' precision."""
    other = not jax.config.read("jax_enable_x64")
    with jax.enable_x64(other):
        local = nlp.simulate(model, KEY, num_simulations=128, chunk_size=128, progress=False)
        remote = nlp.simulate(model, KEY, num_simulations=128, chunk_size=128, progress=False, client=client)
    assert set(client.run(lambda: jax.config.read("jax_enable_x64")).values()) == {not other}
    assert local.params.dtype == (np.float64 if other else np.float32)
    _same(local, remote)


def test_a_callable_on_a_cluster_gives_the_local_simulations_for_any_chunks_and_workers(model, client):
    local = nlp.simulate(model, KEY, num_simulations=430, simulator=decay, block_size=50, progress=False)
    for chunk in (50, 120, 1000):  # one block a task, rounded up to whole blocks, everything in one task
        _same(local, nlp.simulate(model, KEY, num_simulations=430, simulator=decay, block_size=50,
                                  chunk_size=chunk, progress=False, client=client))
    with _cluster(1) as cluster, distributed.Client(cluster) as one:
        _same(local, nlp.simulate(model, KEY, num_simulations=430, simulator=decay, block_size=50,
                                  chunk_size=100, progress=False, client=one))
    # a longer run starts with the simulations of a shorter one
    longer = nlp.simulate(model, KEY, num_simulations=600, simulator=decay, block_size=50, progress=False, client=client)
    _same(local, longer[:430])


def test_a_callable_gets_the_documented_designs_and_streams(model):
    """The designs are those of the program's simulations; block b's noise comes from
    default_rng(key_data(fold_in(fold_in(key, b * block_size), _NOISE))), so the blocks differ."""
    sims = nlp.simulate(model, KEY, num_simulations=128, simulator=decay, block_size=32, progress=False)
    program = nlp.simulate(model, KEY, num_simulations=128, chunk_size=128, progress=False)
    np.testing.assert_array_equal(np.asarray(sims.data.times), np.asarray(program.data.times))
    np.testing.assert_array_equal(np.asarray(sims.data.doses.times), np.asarray(program.data.doses.times))
    designs = {"times": np.asarray(sims.data.times)}
    params = np.asarray(sims.params, np.float64)
    for b in range(4):
        rows = slice(32 * b, 32 * (b + 1))
        seed = np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.fold_in(KEY, 32 * b), _NOISE)))
        expected = decay(params[rows], {k: v[rows] for k, v in designs.items()}, np.random.default_rng([int(w) for w in seed]))
        mask = np.asarray(sims.data.mask)[rows]
        np.testing.assert_array_equal(np.asarray(sims.data.values)[rows][mask], expected[mask])
    # φ from the training prior: the draws' means match it (128 draws, 5 standard errors)
    spec = model.prior_spec()
    for j, name in enumerate(model.param_names):
        assert abs(params[:, j].mean() - spec[name]["loc"]) < 5 * spec[name]["scale"] / np.sqrt(128)


def test_a_simulator_error_on_a_worker_reaches_the_caller(model, client):
    def wrong_shape(params, design, rng):
        return np.zeros((params.shape[0], 3))

    with pytest.raises(ValueError, match=r"returned shape \(10, 3\)"):
        nlp.simulate(model, KEY, num_simulations=20, simulator=wrong_shape, block_size=10, progress=False, client=client)

    def some_nan(params, design, rng):
        out = decay(params, design, rng)
        out[::5] = np.nan
        return out

    sims = nlp.simulate(model, KEY, num_simulations=50, simulator=some_nan, block_size=25,
                        max_dropped_fraction=0.5, progress=False, client=client)
    assert sims.num_dropped == 10 and len(sims) == 40


def test_a_bad_client_is_refused_with_what_to_pass(model):
    with pytest.raises(TypeError, match=r"Client\(cluster\)"):
        with _cluster(1) as cluster:
            nlp.simulate(model, KEY, num_simulations=10, progress=False, client=cluster)
    with pytest.raises(TypeError, match="must be a dask.distributed.Client; got str"):
        nlp.simulate(model, KEY, num_simulations=10, progress=False, client="tcp://127.0.0.1:8786")
    with _cluster(1) as cluster:
        closed = distributed.Client(cluster)
        closed.close()
    with pytest.raises(ValueError, match="`client` is closed"):
        nlp.simulate(model, KEY, num_simulations=10, progress=False, client=closed)
    with pytest.raises(TypeError, match="`simulator` must be a callable"):
        nlp.simulate(model, KEY, num_simulations=10, progress=False, simulator="torch")
    with pytest.raises(ValueError, match="`block_size` applies to a `simulator`"):
        nlp.simulate(model, KEY, num_simulations=10, progress=False, block_size=10)


@pytest.mark.slow
def test_worker_processes_run_a_callable_defined_here_and_the_program(model):
    """Worker processes get the simulator and its arguments through dask's cloudpickle (a
    function defined in a function is pickled by value, as one in a user's script), and the
    model for its program; they compile the program themselves, in the caller's precision."""
    scale = 100.0

    def closure(params, design, rng):
        p = np.exp(params)
        t = design["times"]
        return scale / p[:, 2:3] * np.exp(-p[:, 1:2] / p[:, 2:3] * t) + p[:, 3:4] * rng.standard_normal(t.shape)

    local = nlp.simulate(model, KEY, num_simulations=200, simulator=closure, block_size=50, progress=False)
    program = nlp.simulate(model, KEY, num_simulations=256, chunk_size=128, progress=False)
    with _cluster(2, processes=True) as cluster, distributed.Client(cluster) as c:
        remote = nlp.simulate(model, KEY, num_simulations=200, simulator=closure, block_size=50, chunk_size=50,
                              progress=False, client=c)
        remote_program = nlp.simulate(model, KEY, num_simulations=256, chunk_size=128, progress=False, client=c)
        workers = set(c.run(os.getpid).values())
    _same(local, remote)
    _same(program, remote_program)
    assert len(workers) == 2 and os.getpid() not in workers
