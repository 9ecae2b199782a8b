"""Training: against the closed-form posterior of a linear-Gaussian model, and the checks."""

import dataclasses

import jax
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.estimators import TrainConfig, train

from ._helpers import SMALL, exact_posterior, linear_model

# Tolerances, on 50 held-out data sets, in units of the exact posterior SD (about 0.28 for a and
# 0.46 for b). Measured on this CPU: median 0.07, max 0.53, SD ratios 0.91-1.07, KL gap 0.015.
MEDIAN_MEAN_TOL = 0.15  # median over data sets and parameters of |E_q[φ] - E_p[φ | y]| / SD_p
MAX_MEAN_TOL = 0.8  # the worst data set (the tails of the prior predictive are seen least in training)
SD_RATIO = (0.8, 1.25)  # SD_q / SD_p
KL_TOL = 0.05  # best validation loss (an estimate of E[-log q]) minus the exact posterior entropy
NUM_SIMULATIONS = 16_000

FAST = TrainConfig(
    summary="deepset", summary_dim=8, hidden_size=32, summary_depth=1, patch_size=2,
    flow_layers=2, knots=6, interval=5.0, nn_width=32, batch_size=128, learning_rate=3e-3,
    max_epochs=30, patience=30,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model = linear_model()
    plot = tmp_path_factory.mktemp("plots") / "loss.png"
    post = train(model, jax.random.key(0), num_simulations=NUM_SIMULATIONS, config=FAST, progress=False, loss_plot=plot)
    return post, plot


def test_matches_the_closed_form_posterior(trained):
    post, _ = trained
    model = post.model
    sims = nlp.simulate(model, jax.random.key(123), num_simulations=50, progress=False)
    mean, cov = exact_posterior(sims.data.times, sims.data.values, sims.data.mask)
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    draws = np.asarray(post.sample(sims.data, jax.random.key(1), num_draws=4000))
    err = np.abs(draws.mean(1) - mean) / sd
    ratio = draws.std(1) / sd
    assert np.median(err) < MEDIAN_MEAN_TOL, np.median(err)
    assert err.max() < MAX_MEAN_TOL, err.max()
    assert SD_RATIO[0] < ratio.min() and ratio.max() < SD_RATIO[1], (ratio.min(), ratio.max())


def test_history_and_loss_plot(trained):
    post, plot = trained
    h = post.history
    assert h.epochs == FAST.max_epochs == len(h.val_loss)
    assert h.val_loss[-1] < h.val_loss[0]
    assert h.best_val_loss == min(h.val_loss)
    assert h.num_train + h.num_val == NUM_SIMULATIONS
    assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the loss is -log q on the original scale: near the exact posterior's entropy (a Gaussian)
    model = post.model
    sims = nlp.simulate(model, jax.random.key(5), num_simulations=2000, progress=False)
    _, cov = exact_posterior(sims.data.times, sims.data.values, sims.data.mask)
    entropy = np.mean(0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov)[1])
    assert -0.02 < h.best_val_loss - entropy < KL_TOL, (h.best_val_loss, entropy)


def test_early_stopping_restores_the_best_weights():
    """A run that must stop early (learning rate 0.3, patience 2: measured, it stops after 9 of
    20 epochs with the best at epoch 7), and the weights it keeps are the best epoch's: their
    validation loss, recomputed from the returned posterior, is that epoch's recorded one."""
    model = linear_model()
    n, key = 600, jax.random.key(3)
    sims = nlp.simulate(model, jax.random.key(2), num_simulations=n, progress=False)
    config = dataclasses.replace(SMALL, learning_rate=0.3, max_epochs=20, patience=2, batch_size=64)
    post = train(model, key, simulations=sims, config=config, progress=False)
    h = post.history
    best = int(np.argmin(h.val_loss))
    assert h.epochs < config.max_epochs  # stopped early ...
    assert h.epochs - 1 - best == config.patience  # ... `patience` epochs after the best, which is not the last
    assert h.best_epoch == best
    # the validation split as `train` draws it (its second key), and -log q of the kept weights there
    _, k_split, _, _ = jax.random.split(key, 4)
    va = np.asarray(jax.random.permutation(k_split, n))[h.num_train:]
    recomputed = -float(np.mean(post.log_prob(sims.data.subset(va), np.asarray(sims.params)[va][:, None, :])))
    assert abs(recomputed - h.val_loss[best]) < 1e-3, (recomputed, h.val_loss)  # float32 networks
    assert abs(recomputed - h.val_loss[-1]) > 1e-2  # measured 0.08: the last weights would fail the check above


def test_argument_checks():
    model = linear_model()
    key = jax.random.key(0)
    sims = nlp.simulate(model, key, num_simulations=100, progress=False)
    with pytest.raises(ValueError, match="either `simulations`"):
        train(model, key, progress=False)
    with pytest.raises(ValueError, match="not both"):
        train(model, key, simulations=sims, num_simulations=10, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train(model, key, simulations=sims, config=TrainConfig(batch_size=512), progress=False)
    with pytest.raises(ValueError, match="parameters"):
        train(nlp.models.frohlich_simple(), key, simulations=sims, progress=False)
    with pytest.raises(TypeError, match="TrainConfig"):
        train(model, key, simulations=sims, config={"max_epochs": 1}, progress=False)
    with pytest.raises(TypeError, match="IndividualModel"):
        train("linear", key, simulations=sims, progress=False)
    with pytest.raises(TypeError, match="random key"):
        train(model, 0, simulations=sims, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"summary": "lstm"}, "summary must be one of"),
        ({"flow": "nsf"}, "flow must be one of"),
        ({"flow_layers": 0}, "flow_layers` must be a positive integer"),
        ({"batch_size": 2.5}, "batch_size` must be a positive integer"),
        ({"learning_rate": -1.0}, "learning_rate must be a positive number"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \(0, 1\)"),
        ({"interval": 1.0}, "interval is 1.0"),
        ({"lr_schedule": "step"}, "lr_schedule must be one of"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_config_dict_round_trip():
    c = TrainConfig(summary="gru", flow_layers=3)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown TrainConfig setting"):
        TrainConfig.from_dict({**c.to_dict(), "seed": 1})


@pytest.mark.parametrize("summary", ["gru", "attention"])
def test_gru_attention_and_maf_train(tmp_path, summary):
    """Every summary network and flow kind trains end to end, and its file reloads to the same draws (a smoke test)."""
    model = linear_model()
    sims = nlp.simulate(model, jax.random.key(4), num_simulations=200, progress=False)
    config = dataclasses.replace(SMALL, summary=summary, flow="maf", flow_layers=1, batch_size=64, max_epochs=1)
    post = train(model, jax.random.key(5), simulations=sims, config=config, progress=False)
    assert post.sample(sims.data.subset(slice(0, 3)), jax.random.key(0), num_draws=4).shape == (3, 4, 2)
    post.save(tmp_path / "gru_maf.nlp")
    loaded = nlp.load_posterior(tmp_path / "gru_maf.nlp", model=model)
    np.testing.assert_array_equal(
        loaded.sample(sims.data.subset(slice(0, 3)), jax.random.key(0), num_draws=4),
        post.sample(sims.data.subset(slice(0, 3)), jax.random.key(0), num_draws=4),
    )


def test_online_training_uses_fresh_simulations_and_is_reproducible():
    """`online=True`: each epoch after the first trains on new simulations (so the weights
    differ from a fixed set's), the validation split stays fixed, and the same key gives the
    same estimator."""
    model = linear_model()
    config = dataclasses.replace(SMALL, batch_size=64, max_epochs=3, patience=3)
    fixed = train(model, jax.random.key(5), num_simulations=300, config=config, progress=False)
    online = [train(model, jax.random.key(5), num_simulations=300, config=dataclasses.replace(config, online=True),
                    progress=False) for _ in range(2)]  # fmt: skip
    data = nlp.simulate(model, jax.random.key(6), num_simulations=3, progress=False).data
    draws = [p.sample(data, jax.random.key(0), num_draws=5) for p in (fixed, *online)]
    np.testing.assert_array_equal(draws[1], draws[2])
    assert not np.allclose(draws[0], draws[1])
    assert online[0].history.num_val == fixed.history.num_val and online[0].config.online
    assert np.isfinite(online[0].history.best_val_loss)
    with pytest.raises(ValueError, match="online"):
        TrainConfig(online=1)


def test_sized_config_follows_the_problem():
    small = TrainConfig.sized(num_params=5, num_rows=11, num_simulations=100_000)
    # 90,000 training rows in batches of 256: 351 steps per epoch, so 57 epochs make the ~20,000 steps
    assert (small.max_epochs, small.patience, small.batch_size, small.learning_rate) == (57, 10, 256, 2e-3)
    assert (small.summary_dim, small.hidden_size, small.nn_width, small.flow_layers, small.patch_size) == (16, 64, 112, 6, 3)
    large = TrainConfig.sized(num_params=11, num_rows=30, num_simulations=100_000, num_channels=8)
    assert large.summary_dim >= 11 and large.nn_width > small.nn_width and large.hidden_size > small.hidden_size
    assert large.flow_layers > small.flow_layers
    assert TrainConfig.sized(num_params=5, num_rows=11, num_simulations=20_000).max_epochs == 100  # few steps per epoch
    assert TrainConfig.sized(num_params=5, num_rows=11, num_simulations=1_000_000).max_epochs == 20
    tiny = TrainConfig.sized(num_params=2, num_rows=5, num_simulations=300)
    assert tiny.batch_size == 32 and tiny.summary_dim >= 2  # 270 training rows: batches that fit them
    assert TrainConfig.sized(num_params=5, num_rows=11, num_simulations=100_000, summary="gru").summary == "gru"
    with pytest.raises(ValueError, match="num_params"):
        TrainConfig.sized(num_params=0, num_rows=11, num_simulations=1000)


def test_train_without_config_sizes_it_to_the_model():
    model = linear_model()
    sims = nlp.simulate(model, jax.random.key(3), num_simulations=600, progress=False)
    post = train(model, jax.random.key(4), simulations=sims, progress=False)
    rows = int(np.max(np.sum(np.asarray(sims.data.mask), axis=1)))
    assert post.config == TrainConfig.sized(num_params=model.num_params, num_rows=rows, num_simulations=600)
    assert len(post.history.val_loss) <= post.config.max_epochs
