"""Summary networks: padding anywhere in the sequence must not change the output at all."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlme_ppl  # noqa: F401  (enables x64, as in real use)
from nlme_ppl.estimators import AttentionSummary, DeepSetSummary, GRUSummary, InputScaling

SCALING = InputScaling(time_scale=10.0, gap_scale=0.7, value_loc=1.5, value_scale=2.0)
NETWORKS = {
    "deepset-patch1": lambda k: DeepSetSummary(k, summary_dim=5, hidden_size=16, depth=2, patch_size=1, scaling=SCALING),
    "deepset-patch4": lambda k: DeepSetSummary(k, summary_dim=5, hidden_size=16, depth=1, patch_size=4, scaling=SCALING),
    "gru-patch1": lambda k: GRUSummary(k, summary_dim=5, hidden_size=8, patch_size=1, scaling=SCALING),
    "gru-patch3": lambda k: GRUSummary(k, summary_dim=5, hidden_size=8, patch_size=3, scaling=SCALING),
    "attention-patch1": lambda k: AttentionSummary(k, summary_dim=5, hidden_size=8, depth=2, num_heads=2, patch_size=1, max_rows=16, scaling=SCALING),
    "attention-patch3": lambda k: AttentionSummary(k, summary_dim=5, hidden_size=8, depth=1, num_heads=4, patch_size=3, max_rows=16, scaling=SCALING),
}


@pytest.fixture(params=sorted(NETWORKS))
def net(request):
    return NETWORKS[request.param](jax.random.key(0))


def _sequence(rng, n):
    t = np.sort(rng.uniform(0, 12, n)).astype(np.float32)
    y = rng.normal(1.0, 2.0, n).astype(np.float32)
    return t, y


def _insert_padding(rng, t, y, positions, garbage):
    """Insert padded entries before `positions` (indices into the observed sequence)."""
    tt, yy, mm = list(t), list(y), [True] * len(t)
    for p in sorted(positions, reverse=True):
        tt.insert(p, garbage)
        yy.insert(p, -garbage)
        mm.insert(p, False)
    return np.array(tt, np.float32), np.array(yy, np.float32), np.array(mm)


def _run(net, t, y, m):
    with jax.enable_x64(False):
        return np.asarray(eqx.filter_jit(net)(jnp.asarray(t), jnp.asarray(y), jnp.asarray(m)))


def test_output_shape_and_dtype(net):
    t, y = _sequence(np.random.default_rng(0), 11)
    out = _run(net, t, y, np.ones(11, bool))
    assert out.shape == (5,) and out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("where", ["end", "middle", "start", "everywhere"])
@pytest.mark.parametrize("garbage", [0.0, 1e4, np.nan])
def test_padding_changes_nothing(net, where, garbage):
    rng = np.random.default_rng(1)
    n = 13
    t, y = _sequence(rng, n)
    ref = _run(net, t, y, np.ones(n, bool))
    positions = {
        "end": [n] * 7,
        "middle": [5, 5, 9],
        "start": [0, 0],
        "everywhere": [0, 3, 3, 8, n, n],
    }[where]
    tp, yp, mp = _insert_padding(rng, t, y, positions, garbage)
    out = _run(net, tp, yp, mp)
    np.testing.assert_array_equal(out, ref)


def test_attention_refuses_more_rows_than_it_was_built_for():
    """The attention network computes on `max_rows` rows: more padding is cut, more observations refused."""
    net = NETWORKS["attention-patch3"](jax.random.key(0))
    t, y = _sequence(np.random.default_rng(2), 17)
    with pytest.raises(Exception, match="more observed rows than the 16"):
        _run(net, t, y, np.ones(17, bool))
    m = np.ones(17, bool)
    m[[2, 9]] = False  # 15 observed rows in 17: accepted, and equal to the 15 rows alone
    np.testing.assert_array_equal(_run(net, t, y, m), _run(net, t[m], y[m], m[m]))
    with pytest.raises(ValueError, match="max_rows"):
        AttentionSummary(jax.random.key(0), max_rows=0)


def test_observations_do_change_the_output(net):
    rng = np.random.default_rng(2)
    t, y = _sequence(rng, 12)
    m = np.ones(12, bool)
    y2 = y.copy()
    y2[6] += 1.0
    assert not np.allclose(_run(net, t, y, m), _run(net, t, y2, m))


def test_vmap_matches_single(net):
    rng = np.random.default_rng(3)
    seqs = [_sequence(rng, 10) for _ in range(3)]
    t = np.stack([s[0] for s in seqs])
    y = np.stack([s[1] for s in seqs])
    m = np.ones_like(t, bool)
    m[1, 7:] = False
    with jax.enable_x64(False):
        batched = np.asarray(eqx.filter_jit(lambda n, a, b, c: jax.vmap(n)(a, b, c))(net, t, y, m))
    for i in range(3):
        np.testing.assert_allclose(batched[i], _run(net, t[i][m[i]], y[i][m[i]], m[i][m[i]]), rtol=1e-5, atol=1e-6)


def test_wrong_shapes_are_refused(net):
    with pytest.raises(ValueError, match="ONE individual"):
        net(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones((2, 3), bool))


def test_scaling_fit_uses_observed_entries_only():
    t = np.array([[1.0, 2.0, 99.0], [1.0, 3.0, 0.0]])
    y = np.array([[1.0, 3.0, 1e6], [2.0, 2.0, 0.0]])
    m = np.array([[True, True, False], [True, True, False]])
    s = InputScaling.fit(t, y, m)
    assert float(s.time_scale) == 3.0
    assert float(s.value_loc) == 2.0
    np.testing.assert_allclose(float(s.value_scale), np.std([1.0, 3.0, 2.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(float(s.gap_scale), 1.5)
    with pytest.raises(ValueError, match="no observed"):
        InputScaling.fit(t, y, np.zeros_like(m))
    with pytest.raises(ValueError, match="positive"):
        InputScaling(time_scale=0.0)


def test_gru_step_matches_equinox_gru_cell():
    """The GRU summary's hand-written recurrence (`gru_states`: the input projection of every step
    at once, then a scan) equals `eqx.nn.GRUCell` applied step by step with the same weights, to
    float32 rounding (rtol 1e-5, atol 1e-6; `n + z (h - n)` and equinox's `(1 - z) n + z h`
    round differently), masked steps carrying the state unchanged."""
    from nlme_ppl.estimators._summary import gru_states

    with jax.enable_x64(False):
        cell = GRUSummary(jax.random.key(3), summary_dim=5, hidden_size=8, patch_size=2, scaling=SCALING).cell
        assert float(jnp.abs(cell.bias_n).max()) > 0  # every weight is in play
        x = 2.0 * jax.random.normal(jax.random.key(4), (9, cell.input_size), jnp.float32)
        mask = np.array([True, True, False, True, True, True, False, False, True])
        h_last, hs = eqx.filter_jit(gru_states)(cell, x, jnp.asarray(mask))
        h, ref = jnp.zeros(cell.hidden_size, jnp.float32), []
        for t in range(len(mask)):
            if mask[t]:
                h = cell(x[t], h)
            ref.append(h)
    np.testing.assert_allclose(np.asarray(hs), np.stack(ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(h_last), np.asarray(hs[-1]))
    assert np.asarray(hs).dtype == np.float32 and not np.allclose(ref[0], ref[-1])
