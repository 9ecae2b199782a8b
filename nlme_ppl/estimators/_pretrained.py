"""The recipes of the shipped pretrained estimators (`nlme_ppl/pretrained/<name>.nlp`).

Each entry is `(num_simulations, TrainConfig, seed)`; the estimator is reproduced by

    nlp.train(nlp.models.get(name), jax.random.key(seed), num_simulations=num_simulations, config=config)

(see `scripts/train_pretrained.sh`).
"""

from __future__ import annotations

from ._config import TrainConfig

__all__ = ["PRETRAINED_CONFIGS"]

PRETRAINED_CONFIGS: dict[str, tuple[int, TrainConfig, int]] = {
    "frohlich_simple": (
        130_000,
        TrainConfig(
            summary="deepset",
            summary_dim=32,
            hidden_size=128,
            summary_depth=2,
            patch_size=4,
            flow="coupling",
            flow_layers=6,
            knots=10,
            interval=6.0,
            nn_width=96,
            nn_depth=1,
            batch_size=256,
            learning_rate=1e-3,
            lr_schedule="cosine",
            final_lr_fraction=0.02,
            clip_norm=5.0,
            max_epochs=40,
            patience=8,
            validation_fraction=0.1,
        ),
        20240,
    ),
}
