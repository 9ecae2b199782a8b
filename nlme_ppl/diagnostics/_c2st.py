"""Classifier two-sample test (C2ST; Lopez-Paz & Oquab 2017), as sbi uses to compare posteriors.

A classifier is trained to tell samples of P from samples of Q; its cross-validated accuracy
is 0.5 when P = Q (nothing to learn) and 1 when the two do not overlap. The classifier and its
settings follow `sbi.utils.metrics.c2st`: both samples are z-scored by the first one's mean and
standard deviation, and scikit-learn's `MLPClassifier` has two hidden layers of `10 · dim`
units. Folds are stratified, and the score is the balanced accuracy, which equals the plain
accuracy for equal sample sizes and stays 0.5 at chance when the sizes differ.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from jaxtyping import Float

from .._validate import check_keys, positive_int

__all__ = ["c2st", "c2st_individuals"]

#: Fewest rows accepted in each sample (the test has little power, and folds get tiny, below it).
MIN_SAMPLES = 20

_CLASSIFIERS = ("mlp", "rf")


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as e:
        e.add_note("C2ST needs scikit-learn: pip install scikit-learn.")
        raise


def _check_sample(x, *, name: str) -> np.ndarray:
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be a numeric array of shape (samples, dim); got {type(x).__name__}.") from e
    if x.ndim == 1:
        raise ValueError(
            f"`{name}` must have shape (samples, dim); got a 1-D array of shape {x.shape}. For a "
            f"one-dimensional sample pass {name}[:, None]."
        )
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape (samples, dim); got shape {x.shape}.")
    if x.shape[0] < MIN_SAMPLES:
        raise ValueError(
            f"`{name}` has {x.shape[0]} rows; C2ST needs at least {MIN_SAMPLES} per sample (a few hundred "
            "or more to detect moderate differences). Draw more samples."
        )
    if not np.all(np.isfinite(x)):
        row, col = map(int, np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"`{name}` has a non-finite value ({x[row, col]}) at row {row}, column {col}; remove that row.")
    return x


def c2st(
    samples_p: Float[np.ndarray, "n dim"],
    samples_q: Float[np.ndarray, "m dim"],
    *,
    seed: int = 0,
    num_folds: int = 5,
    classifier: str = "mlp",
    z_score: bool = True,
) -> float:
    """Classifier two-sample test: how well a classifier tells `samples_p` from `samples_q`.

    Use it to compare an amortized posterior's draws with reference draws (e.g. exact NUTS
    on one individual): about 0.5 means indistinguishable, 1.0 fully separable. With a few
    thousand draws per sample, values up to about 0.55 are what sampling noise alone gives.

    **Arguments:**

    - `samples_p`: `(n, dim)` samples of the first distribution (e.g. the reference).
    - `samples_q`: `(m, dim)` samples of the second, with the same `dim` columns in the same order.
    - `seed`: seed of the fold split and of the classifier's initialisation (the result is
      deterministic given it).
    - `num_folds`: stratified cross-validation folds.
    - `classifier`: `"mlp"` (scikit-learn `MLPClassifier`, two hidden layers of `10 · dim`
      ReLU units, Adam, up to 1000 iterations with early stopping, as sbi) or `"rf"`
      (`RandomForestClassifier` with default settings).
    - `z_score`: standardise both samples by `samples_p`'s column means and standard
      deviations first (a column constant in `samples_p` is only centred).

    **Returns:** the mean over folds of the held-out balanced accuracy, a float in `[0, 1]`
    (the plain accuracy when `n == m`).
    """
    _sklearn()
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    p = _check_sample(samples_p, name="samples_p")
    q = _check_sample(samples_q, name="samples_q")
    if p.shape[1] != q.shape[1]:
        raise ValueError(
            f"`samples_p` has {p.shape[1]} columns but `samples_q` has {q.shape[1]}; both must hold the same "
            "parameters in the same order."
        )
    num_folds = positive_int(num_folds, name="num_folds")
    if num_folds < 2 or num_folds > min(len(p), len(q)):
        raise ValueError(f"`num_folds` must be between 2 and the smaller sample size {min(len(p), len(q))}; got {num_folds}.")
    if classifier not in _CLASSIFIERS:
        raise ValueError(f"`classifier` must be one of {_CLASSIFIERS}; got {classifier!r}.")
    seed = int(seed)
    if z_score:
        mean, std = p.mean(axis=0), p.std(axis=0, ddof=1)
        std = np.where(std > 0, std, 1.0)
        p, q = (p - mean) / std, (q - mean) / std
    dim = p.shape[1]
    if classifier == "mlp":
        clf = MLPClassifier(
            hidden_layer_sizes=(10 * dim, 10 * dim),
            activation="relu",
            solver="adam",
            max_iter=1000,
            early_stopping=True,
            n_iter_no_change=50,
            random_state=seed,
        )
    else:
        clf = RandomForestClassifier(random_state=seed)
    x = np.concatenate([p, q])
    y = np.concatenate([np.zeros(len(p), np.int64), np.ones(len(q), np.int64)])
    folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    scores = cross_val_score(clf, x, y, cv=folds, scoring="balanced_accuracy")
    return float(np.mean(scores))


def c2st_individuals(
    posterior,
    data,
    reference: Mapping[str, Float[np.ndarray, "n k"]],
    key,
    *,
    num_draws: int | None = None,
    seed: int = 0,
    classifier: str = "mlp",
) -> dict[str, float]:
    """C2ST of `posterior`'s draws against reference posterior draws, one individual at a time.

    **Arguments:**

    - `posterior`: an `AmortizedPosterior` (anything with `sample(data, key, *, num_draws)`).
    - `data`: the [`Dataset`][nlme_ppl.Dataset] the reference draws condition on.
    - `reference`: individual id (as in `data.ids`) -> `(n, k)` reference draws of that
      individual's parameters (e.g. from exact NUTS), columns in `posterior.param_names` order.
    - `key`: a JAX random key for the posterior's draws.
    - `num_draws`: posterior draws per individual (default: as many as the largest reference).
    - `seed`, `classifier`: passed to [`c2st`][nlme_ppl.diagnostics.c2st].

    **Returns:** individual id -> C2ST accuracy (reference as `samples_p`).
    """
    check_keys(key)
    reference = {str(k): v for k, v in reference.items()}
    unknown = [i for i in reference if i not in data.ids]
    if unknown:
        raise ValueError(
            f"`reference` names individual(s) {unknown[:10]} that are not in the data; its keys must be "
            f"ids from data.ids (e.g. {list(data.ids[:3])})."
        )
    if not reference:
        raise ValueError("`reference` is empty; give at least one individual's reference draws.")
    if num_draws is None:
        num_draws = max(np.shape(v)[0] for v in reference.values())
    num_draws = positive_int(num_draws, name="num_draws")
    rows = [data.ids.index(i) for i in reference]
    draws = np.asarray(posterior.sample(data.subset(np.asarray(rows)), key, num_draws=num_draws), np.float64)
    out = {}
    for j, (ident, ref) in enumerate(reference.items()):
        try:
            out[ident] = c2st(ref, draws[j], seed=seed, classifier=classifier)
        except ValueError as e:
            raise ValueError(f"individual {ident!r}: {e}") from e
    return out
