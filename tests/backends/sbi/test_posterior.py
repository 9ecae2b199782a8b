"""An sbi-trained estimator has the flowjax estimator's interface: shapes, seeds, save/load
without pickle, refusals, and fit_map / diagnostics taking it unchanged."""

import json
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

import nlme_ppl as nlp

torch = pytest.importorskip("torch")
from nlme_ppl.backends.sbi import SbiConfig, SbiPosterior, simulate_torch  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    m = nlp.models.pk_oral_1cmt()
    sims = simulate_torch(m, jax.random.key(0), num_simulations=1000)
    post = nlp.train(m, jax.random.key(1), simulations=sims, backend="sbi", config=SbiConfig(max_epochs=3, embedding="gru", batch_size=128),
                     progress=False)
    return m, sims, post


def test_training_history_and_schedule(trained):
    from nlme_ppl.backends.sbi._train import _lr_factor

    _, sims, post = trained
    h = post.history
    assert isinstance(h, nlp.estimators.TrainingHistory)  # the one type of both backends
    assert h.epochs == 3 and len(h.train_loss) == len(h.val_loss) == 3
    assert h.best_val_loss == min(h.val_loss) < h.val_loss[0] and h.best_epoch == int(np.argmin(h.val_loss))
    assert h.num_simulations == h.num_train + h.num_val == len(sims) and h.num_val == max(1, round(0.1 * len(sims)))
    with pytest.warns(DeprecationWarning, match=r"use history\.epochs"):
        assert h["epochs"] == 3  # the former dict keys, deprecated
    f = _lr_factor(SbiConfig(max_epochs=10, final_lr_fraction=0.05), steps_per_epoch=20)  # as optax's warm-up cosine
    assert f(0) == pytest.approx(0.1) and f(20) == pytest.approx(1.0) and f(200) == pytest.approx(0.05)
    assert f(110) == pytest.approx(0.05 + 0.95 * 0.5)  # half-way through the decay
    assert _lr_factor(SbiConfig(lr_schedule="constant"), steps_per_epoch=20)(150) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        SbiConfig(lr_schedule="exponential")
    with pytest.raises(ValueError, match="final_lr_fraction"):
        SbiConfig(final_lr_fraction=0.0)


def test_interface_shapes_and_seeds(trained):
    m, sims, post = trained
    assert isinstance(post, SbiPosterior) and post.param_names == m.param_names and post.history.epochs == 3
    d = sims.data.subset(np.arange(7))
    a = np.asarray(post.sample(d, jax.random.key(2), num_draws=40))
    assert a.shape == (7, 40, 4) and a.dtype == np.float64 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, np.asarray(post.sample(d, jax.random.key(2), num_draws=40)))
    assert not np.array_equal(a, np.asarray(post.sample(d, jax.random.key(3), num_draws=40)))
    lq = np.asarray(post.log_prob(d, a))
    assert lq.shape == (7, 40) and np.isfinite(lq).all()
    assert np.asarray(post.summaries(d)).shape == (7, 32)


def test_save_load_round_trip_and_refusals(trained, tmp_path):
    m, sims, post = trained
    path = tmp_path / "pk.nlp"
    post.save(path)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["metadata.json", "weights.pt"]
    back = nlp.load_posterior(path)
    # the designs block, as the flowjax estimators write it: the training simulations' envelope
    rec = json.loads(back.design_record)
    assert back.design_record == post.design_record and rec["kind"] == "simulations"
    assert rec["envelope"]["max_observations"] == int(np.asarray(sims.data.mask).sum(1).max())
    d = sims.data.subset(np.arange(5))
    np.testing.assert_array_equal(np.asarray(back.sample(d, jax.random.key(4), num_draws=20)),
                                  np.asarray(post.sample(d, jax.random.key(4), num_draws=20)))
    with pytest.raises(ValueError, match="fingerprint"):
        nlp.load_posterior(path, model=nlp.models.pk_oral_1cmt(censoring=True))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("weights.pt")
    raw[info.header_offset + 100] ^= 0xFF  # corrupt the weights
    bad = tmp_path / "bad.nlp"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="cannot load estimator"):
        nlp.load_posterior(bad)


def test_longer_data_than_trained_is_refused(trained):
    m, sims, post = trained
    t = np.linspace(0.5, 48.0, post.rows + 5)
    data = nlp.Dataset.from_arrays(t, np.ones((1, t.size)), doses=nlp.Doses.from_individuals([[0.0]], [[100.0]]))
    with pytest.raises(ValueError, match=rf"has {post.rows + 6} rows .* more than the {post.rows} this sbi estimator"):
        post.sample(data, jax.random.key(0), num_draws=5)


def test_fit_map_and_diagnostics_take_it(trained):
    m, sims, post = trained
    d = sims.data.subset(np.arange(40))
    fit = nlp.fit_map(nlp.populations.gaussian(m, fixed=("sigma_add",)), post, d, jax.random.key(5), num_draws=50, num_starts=2)
    assert all(np.isfinite(v) for v in fit.params.values())
    res = nlp.diagnostics.sbc(post, m, jax.random.key(6), num_simulations=30, num_draws=20)
    assert set(res.passed) == set(m.param_names)


def test_it_is_a_posterior(trained):
    from tests.estimators.test_protocol import MEMBERS

    m, sims, post = trained
    assert isinstance(post, nlp.estimators.Posterior) and post.backend == "sbi"
    assert [name for name in sorted(MEMBERS) if not hasattr(post, name)] == []
    assert post.summaries(sims.data.subset(np.arange(3))) is not None
    meta, payload = post.to_archive()
    back = SbiPosterior.from_archive(meta, payload, m)
    d = sims.data.subset(np.arange(4))
    np.testing.assert_array_equal(np.asarray(back.log_prob(d, post.sample(d, jax.random.key(0), num_draws=3))),
                                  np.asarray(post.log_prob(d, post.sample(d, jax.random.key(0), num_draws=3))))


def test_a_file_with_the_former_history_dict_loads():
    """The kept estimator was written when the sbi history was a dict (100,000 simulations, 45 epochs)."""
    post = nlp.load_posterior(Path(__file__).parent / "data" / "pk_oral_1cmt_sbi_100k.nlp")
    h = post.history
    assert isinstance(h, nlp.estimators.TrainingHistory) and h.epochs == 45 and (h.num_train, h.num_val) == (90_000, 10_000)
    assert h.best_val_loss == min(h.val_loss) and h.train_seconds > 0
